"""The shared scoring pass (DESIGN 3.6): per-token statistics equal those of a batch-1 full-logit forward."""

from __future__ import annotations

import pytest
import torch

from conftest import PLAIN_SENTENCES, FullLogitsOnly
from lethe.audit import scoring
from lethe.audit.scoring import corpus_loss, score_sequences
from lethe.losses import IGNORE_INDEX
from lethe.models import build_tiny


@pytest.fixture(scope="module")
def model_and_features():
    model, tokenizer = build_tiny(PLAIN_SENTENCES, vocab_size=300, seed=0, hidden_size=32, num_layers=2,
                                  num_heads=2, intermediate_size=64)
    model.eval()
    features = []
    for i, text in enumerate(PLAIN_SENTENCES):
        ids = tokenizer(text)["input_ids"][: 6 + 2 * i]  # different lengths: padding inside every batch
        labels = list(ids)
        labels[: 1 + i % 3] = [IGNORE_INDEX] * (1 + i % 3)  # a "prompt" of 1-3 unsupervised tokens
        features.append({"input_ids": ids, "labels": labels})
    return model, tokenizer, features


def _by_hand(model, feature) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([feature["input_ids"]])).logits[0, :-1].double()
    targets = torch.tensor(feature["labels"][1:])
    keep = targets != IGNORE_INDEX
    logprobs = torch.log_softmax(logits[keep], -1)
    targets = targets[keep]
    logp = logprobs[torch.arange(len(targets)), targets]
    p = logprobs.exp()
    mu = (p * logprobs).sum(-1)
    return {"targets": targets, "logp": logp, "mu": mu, "var": (p * (logprobs - mu[:, None]) ** 2).sum(-1),
            "argmax": logits[keep].argmax(-1), "rank": (logprobs > logp[:, None]).sum(-1)}


@pytest.mark.parametrize("rows", [None, 3])  # 3 rows a chunk: statistics cross chunk and batch-row borders
def test_statistics_match_a_full_logit_forward(model_and_features, monkeypatch, rows):
    model, tokenizer, features = model_and_features
    if rows is not None:
        monkeypatch.setattr(scoring, "STATS_CHUNK_BYTES", rows * 4 * model.config.vocab_size)
    results = score_sequences(model, features, batch_size=3, pad_id=tokenizer.pad_token_id)
    assert len(results) == len(features)
    for feature, got in zip(features, results, strict=True):  # input order, not length order
        want = _by_hand(model, feature)
        assert got.n == len(want["targets"]) and torch.equal(got.targets, want["targets"])
        for name in ("logp", "mu"):
            torch.testing.assert_close(getattr(got, name).double(), want[name], rtol=1e-4, atol=1e-5)
        # float32 Σ p (log p)² − μ² cancels: absolute error ~1e-5 on variances of order 1
        torch.testing.assert_close(got.var.double(), want["var"], rtol=1e-3, atol=1e-4)
        assert torch.equal(got.argmax, want["argmax"]) and torch.equal(got.rank, want["rank"])
        assert got.mean_nll == pytest.approx(float(-want["logp"].mean()), rel=1e-5)


def test_without_mia_statistics_logp_and_argmax_are_the_same_numbers(model_and_features):
    model, tokenizer, features = model_and_features
    full = score_sequences(model, features, batch_size=3, pad_id=tokenizer.pad_token_id)
    light = score_sequences(model, features, batch_size=3, pad_id=tokenizer.pad_token_id, mia_statistics=False)
    for a, b in zip(full, light, strict=True):
        assert torch.equal(a.targets, b.targets) and torch.equal(a.logp, b.logp) and torch.equal(a.argmax, b.argmax)
        assert b.mu.isnan().all() and b.var.isnan().all() and (b.rank == -1).all()  # never silently zero


def test_corpus_loss_is_token_weighted(model_and_features):
    model, tokenizer, features = model_and_features
    results = score_sequences(model, features, batch_size=4, pad_id=tokenizer.pad_token_id)
    total = sum(float(-r.logp.sum()) for r in results)
    assert corpus_loss(results) == pytest.approx(total / sum(r.n for r in results))
    assert corpus_loss(results) != pytest.approx(sum(r.mean_nll for r in results) / len(results), rel=1e-6)


def test_a_batch_without_supervised_tokens_gives_empty_scores(model_and_features):
    model, tokenizer, features = model_and_features
    unsupervised = [{"input_ids": f["input_ids"], "labels": [IGNORE_INDEX] * len(f["labels"])} for f in features[:2]]
    results = score_sequences(model, [*unsupervised, features[2]], batch_size=2, pad_id=tokenizer.pad_token_id)
    assert [r.n for r in results[:2]] == [0, 0] and results[2].n > 0
    assert all(r.logp.numel() == r.rank.numel() == 0 for r in results[:2])


def test_lm_head_sees_only_supervised_positions_and_wrappers_score_the_same(model_and_features):
    model, tokenizer, features = model_and_features
    rows = []
    hook = model.lm_head.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape))
    try:
        kept = score_sequences(model, features, batch_size=4, pad_id=tokenizer.pad_token_id)
    finally:
        hook.remove()
    supervised = sum(sum(label != IGNORE_INDEX for label in f["labels"][1:]) for f in features)
    assert sum(shape[0] for shape in rows) == supervised and all(len(shape) == 2 for shape in rows)
    full = score_sequences(FullLogitsOnly(model), features, batch_size=4, pad_id=tokenizer.pad_token_id)
    for a, b in zip(kept, full, strict=True):
        assert torch.equal(a.targets, b.targets) and torch.equal(a.rank, b.rank)
        torch.testing.assert_close(a.logp, b.logp, rtol=1e-5, atol=1e-6)
