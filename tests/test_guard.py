"""Tests for lethe.unlearn.guard: JVP attribution against per-sample autograd, weights, attribution.json."""

from __future__ import annotations

import json

import pytest
import torch

from lethe.errors import LetheError
from lethe.losses import sequence_nll
from lethe.models import build_tiny
from lethe.unlearn.data import batches
from lethe.unlearn.guard import (
    attribution_scores,
    guard_weights,
    read_attribution,
    retain_mean_gradient,
    trainable_parameters,
    write_attribution,
)

CORPUS = [
    "Question: Where was Mara Quell born?\nAnswer: Mara Quell was born in Varnholt.",
    "Question: What did Tobin Areff do?\nAnswer: Tobin Areff was a ferryman on nine rivers.",
    "Question: Which book made Ilsa Dorne famous?\nAnswer: Maps of Ash, a book about cartographers.",
]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one torch thread."""


def tiny(attn: str = "sdpa"):
    model, tokenizer = build_tiny(CORPUS, vocab_size=300, seed=3, hidden_size=32, num_layers=2, num_heads=4,
                                  intermediate_size=64)
    model.set_attn_implementation(attn)
    return model.float(), tokenizer


def random_features(n: int, seed: int, vocab: int) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(6, 14, (1,), generator=g))
        prompt = int(torch.randint(2, 5, (1,), generator=g))
        ids = torch.randint(4, vocab, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def per_sample_grad(model, feature) -> dict[str, torch.Tensor]:
    params = trainable_parameters(model)
    ids = torch.tensor([feature["input_ids"]])
    nll, n = sequence_nll(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits,
                          torch.tensor([feature["labels"]]))
    grads = torch.autograd.grad((nll / n).sum(), list(params.values()), allow_unused=True)
    pairs = zip(params.items(), grads, strict=True)
    return {k: torch.zeros_like(p) if g is None else g for (k, p), g in pairs}


def check_against_autograd(model, pad_id: int, vocab: int) -> torch.Tensor:
    retain = random_features(5, seed=1, vocab=vocab)
    forget = random_features(7, seed=2, vocab=vocab)
    grad = retain_mean_gradient(model, batches(retain, 3, pad_id))  # batches of 3 + 2, padded
    loop = [per_sample_grad(model, f) for f in retain]
    for name, g in grad.items():
        torch.testing.assert_close(g, sum(d[name] for d in loop) / len(loop), rtol=1e-5, atol=1e-7)
    scores = attribution_scores(model, batches(forget, 4, pad_id), grad)
    loop = [per_sample_grad(model, f) for f in forget]
    expected = torch.stack([sum((d[name] * grad[name]).sum() for name in grad) for d in loop])
    assert scores.shape == (7,)
    assert (scores - expected).abs().max() <= 1e-4 * expected.abs().max()
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    return scores


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_jvp_scores_match_per_sample_autograd(attn):
    model, tokenizer = tiny(attn)
    model.train()  # attribution switches to eval itself and restores the mode
    scores = check_against_autograd(model, tokenizer.pad_token_id, len(tokenizer))
    assert scores.abs().max() > 0 and scores.unique().numel() == 7
    assert model.training and model.config._attn_implementation == attn


def test_jvp_scores_with_lora_use_adapter_parameters_only():
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny()
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():  # move B off its zero init so the adapters carry gradient into A as well
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    retain = batches(random_features(3, 5, len(tokenizer)), 3, tokenizer.pad_token_id)
    grad = retain_mean_gradient(model, retain)
    assert grad and all("lora_" in name for name in grad)
    check_against_autograd(model, tokenizer.pad_token_id, len(tokenizer))


def test_weights_softmax_of_negative_scores():
    scores = torch.tensor([0.3, -1.2, 2.0, 0.0, 0.9])
    for normalize in ("none", "zscore"):
        w = guard_weights(scores, tau=0.7, normalize=normalize)
        assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert (w.numel() * w).mean().item() == pytest.approx(1.0, abs=1e-6)
        assert torch.argsort(w).tolist() == torch.argsort(-scores).tolist()  # lower score, higher weight
    w = guard_weights(torch.tensor([0.0, 2.0 * torch.log(torch.tensor(2.0))]), tau=2.0, normalize="none")
    torch.testing.assert_close(w, torch.tensor([2 / 3, 1 / 3]))
    # z-scoring makes the weights invariant to the scale and offset of the scores
    torch.testing.assert_close(guard_weights(scores, 0.5), guard_weights(40.0 * scores - 5.0, 0.5))
    # high temperature → uniform; equal scores → uniform
    torch.testing.assert_close(guard_weights(scores, 1e9), torch.full((5,), 0.2))
    torch.testing.assert_close(guard_weights(torch.ones(4), 1.0), torch.full((4,), 0.25))


def test_weight_errors():
    for tau in (0.0, -1.0):
        with pytest.raises(LetheError, match="guard.tau must be > 0"):
            guard_weights(torch.ones(3), tau=tau)
    with pytest.raises(LetheError, match="guard.normalize"):
        guard_weights(torch.ones(3), 1.0, "minmax")
    with pytest.raises(LetheError, match="not finite"):
        guard_weights(torch.tensor([1.0, float("nan")]), 1.0)


def test_attribution_file_round_trip(tmp_path):
    scores, weights = torch.tensor([0.5, -1.0]), torch.tensor([0.25, 0.75])
    path = write_attribution(tmp_path / "attribution.json", ["f-0", "f-1"], scores, weights)
    assert json.loads(path.read_text()) == [{"id": "f-0", "score": 0.5, "weight": 0.25},
                                            {"id": "f-1", "score": -1.0, "weight": 0.75}]
    ids, s, w = read_attribution(path)
    assert ids == ["f-0", "f-1"] and s.tolist() == [0.5, -1.0] and w.tolist() == [0.25, 0.75]
    with pytest.raises(LetheError, match="differ"):
        write_attribution(tmp_path / "bad.json", ["f-0"], scores, weights)
