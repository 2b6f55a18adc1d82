"""MIA input protocols (issue 9): tokenization (tokenizer defaults, no chat marker, EOS only when asked),
MIMIR's sliding window, and the mimir rules (min-k int(k·n), NaN per attack, TPR at FPR < x, gradnorm p = ∞
read MIMIR's way), checked against an independent re-implementation of MIMIR's scoring on the same model."""

from __future__ import annotations

import copy
import json
import math
import zlib

import numpy as np
import pytest
import torch
from tokenizers import processors

from conftest import PLAIN_SENTENCES
from lethe.audit.mia import mia_result, roc_metrics, run_mia
from lethe.audit.mia_protocol import encode_text, window_features, windows
from lethe.cli import main
from lethe.errors import LetheError
from lethe.models import save_model, tiny_model, train_bpe_tokenizer

SIZES = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
CHATML = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
LONG = " ".join(PLAIN_SENTENCES * 2)  # ~190 tokens: several windows of a 64-position model


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one torch thread (conftest's ``one_thread``)."""


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(PLAIN_SENTENCES * 3, vocab_size=300)


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok, seed=0, max_position_embeddings=64, **SIZES).eval()


# ------------------------------------------------------------------------------------------- tokenization


def test_plain_text_uses_the_tokenizer_defaults_and_eos_only_when_asked(tok) -> None:
    ids = tok(PLAIN_SENTENCES[0])["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] != tok.eos_token_id
    assert encode_text(tok, PLAIN_SENTENCES[0], "mimir") == ids
    assert encode_text(tok, PLAIN_SENTENCES[0], "lethe") == ids
    assert encode_text(tok, PLAIN_SENTENCES[0], "lethe", add_eos=True) == ids + [tok.eos_token_id]


def test_a_chat_marker_bos_is_never_prepended_under_lethe(tok) -> None:
    """SmolLM2's layout: BOS = <|im_start|>, a chat-turn marker. A tokenizer that adds no BOS by default
    gets none; one whose default adds the marker loses it under lethe (mimir keeps the defaults)."""
    chat = copy.deepcopy(tok)
    chat.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    chat.bos_token, chat.eos_token = "<|im_start|>", "<|im_end|>"
    chat.chat_template = CHATML
    marker = chat.bos_token_id
    chat.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A", special_tokens=[])  # like SmolLM2: no special tokens by default
    plain_ids = chat(PLAIN_SENTENCES[1])["input_ids"]
    assert marker not in encode_text(chat, PLAIN_SENTENCES[1], "lethe") == plain_ids
    chat.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", marker)])
    assert chat(PLAIN_SENTENCES[1])["input_ids"][0] == marker
    assert encode_text(chat, PLAIN_SENTENCES[1], "lethe") == plain_ids
    assert encode_text(chat, PLAIN_SENTENCES[1], "mimir") == [marker] + plain_ids


def test_add_eos_under_mimir_and_a_window_beyond_the_positions_are_refused(model, tok) -> None:
    with pytest.raises(LetheError, match="MIMIR never appends EOS"):
        run_mia(model, tok, PLAIN_SENTENCES[:2], PLAIN_SENTENCES[2:4], protocol="mimir", add_eos=True)
    with pytest.raises(LetheError, match="exceeds the model's 64 positions"):
        run_mia(model, tok, PLAIN_SENTENCES[:2], PLAIN_SENTENCES[2:4], max_length=65, n_bootstrap=0)
    with pytest.raises(LetheError, match="unknown MIA protocol"):
        run_mia(model, tok, PLAIN_SENTENCES[:2], PLAIN_SENTENCES[2:4], protocol="open-unlearning")


# ------------------------------------------------------------------------------------------ sliding window


def test_windows_score_every_token_but_the_first_once() -> None:
    assert windows(10, 8, 4) == [(0, 8, 1), (4, 10, 8)]
    assert windows(20, 8, 4) == [(0, 8, 1), (4, 12, 8), (8, 16, 12), (12, 20, 16)]
    for n, w in ((5, 8), (9, 8), (33, 8), (100, 64)):
        features = window_features(list(range(100, 100 + n)), w, w // 2)
        targets = [t for f in features for t in f["labels"] if t != -100]
        assert targets == list(range(101, 100 + n))
        assert all(len(f["input_ids"]) <= w for f in features)


def _mimir_probabilities(model, ids: list[int]) -> tuple[list[float], list[float], list[float]]:
    """MIMIR's get_probabilities (window = the model's positions, stride half), written out independently;
    also the μ and σ² of each scored position (min-k++)."""
    window = model.config.max_position_embeddings
    stride = window // 2
    labels = torch.tensor([ids])
    logp, mu, var = [], [], []
    with torch.no_grad():
        for i in range(0, labels.size(1), stride):
            begin, end = max(i + stride - window, 0), min(i + stride, labels.size(1))
            target_len = end - i
            window_ids = labels[:, begin:end]
            targets = window_ids.clone()
            targets[:, :-target_len] = -100
            logprobs = torch.log_softmax(model(window_ids).logits[..., :-1, :], dim=-1)
            for j, token in enumerate(targets[0, 1:]):
                if token != -100:
                    row = logprobs[0, j]
                    logp.append(float(row[token]))
                    m = float((row.exp() * row).sum())
                    mu.append(m)
                    var.append(float((row.exp() * row.square()).sum()) - m * m)
    assert len(logp) == labels.size(1) - 1
    return logp, mu, var


def test_mimir_protocol_reproduces_mimirs_per_sample_scores(model, tok) -> None:
    members = [LONG, PLAIN_SENTENCES[0] + " " + PLAIN_SENTENCES[3]]
    nonmembers = [" ".join(PLAIN_SENTENCES[2:7]), PLAIN_SENTENCES[5]]
    out = run_mia(model, tok, members, nonmembers, protocol="mimir", n_bootstrap=0)
    assert out["protocol"] == "mimir" and out["config"]["window"] == 64 and out["config"]["stride"] == 32
    assert out["config"]["n_windowed"] >= 2  # long texts were windowed, not truncated
    for i, text in enumerate(members + nonmembers):
        side, j = ("members", i) if i < 2 else ("nonmembers", i - 2)
        ids = tok(text)["input_ids"]
        logp, mu, var = (np.array(x) for x in _mimir_probabilities(model, ids))
        loss = -np.mean(logp)  # MIMIR's raw scores, lower = member: Lethe's are their negations
        raw = {"loss": loss, "zlib": loss / len(zlib.compress(bytes(text, "utf-8"))),
               "min_k_0.2": -np.mean(sorted(logp)[: int(len(logp) * 0.2)]),
               "min_k_pp_0.2": -np.mean(sorted((logp - mu) / np.sqrt(var))[: int(len(logp) * 0.2)])}
        for attack, value in raw.items():
            # min-k++ divides by the float32 std over the vocabulary: 2.5e-5 relative seen on this CPU
            rel = 1e-4 if attack.startswith("min_k_pp") else 2e-5
            assert out["attacks"][attack]["scores"][side][j] == pytest.approx(-value, rel=rel), (attack, i)


def test_lethe_and_mimir_agree_where_no_rule_differs(model, tok) -> None:
    texts = PLAIN_SENTENCES
    lethe = run_mia(model, tok, texts[:4], texts[4:], n_bootstrap=0)
    mimir = run_mia(model, tok, texts[:4], texts[4:], n_bootstrap=0, protocol="mimir")
    for attack in ("loss", "zlib", "min_k_0.2", "min_k_pp_0.2"):
        assert lethe["attacks"][attack]["scores"] == mimir["attacks"][attack]["scores"]


# -------------------------------------------------------------------------------------- the mimir rules


def test_min_k_with_zero_tokens_is_nan_and_dropped_from_that_attack_only(model, tok) -> None:
    short = "the"  # BOS + 1 token: n = 1 scored, int(0.2 * 1) = 0
    assert len(tok(short)["input_ids"]) - 1 < 5
    members, nonmembers = [short, PLAIN_SENTENCES[0]], PLAIN_SENTENCES[4:6]
    mimir = run_mia(model, tok, members, nonmembers, protocol="mimir", n_bootstrap=0)
    assert mimir["attacks"]["min_k_0.2"]["scores"]["members"][0] is None
    assert mimir["attacks"]["min_k_0.2"]["n_members"] == 1
    assert mimir["attacks"]["loss"]["scores"]["members"][0] is not None  # other attacks keep the sample
    assert mimir["attacks"]["loss"]["n_members"] == 2 and mimir["n_members"] == 2
    lethe = run_mia(model, tok, members, nonmembers, n_bootstrap=0)
    assert math.isfinite(lethe["attacks"]["min_k_0.2"]["scores"]["members"][0])  # max(1, ⌊k·n⌋) = 1 token
    assert lethe["attacks"]["min_k_0.2"]["n_members"] == 2


def test_nan_policy_per_attack_vs_one_sample_set() -> None:
    scores = {"a": [2.0, float("nan"), 3.0, 0.0, 1.0], "b": [1.0, 2.0, 1.5, 0.0, 0.5]}
    lethe = mia_result(scores, 3, n_bootstrap=0)
    mimir = mia_result(scores, 3, n_bootstrap=0, protocol="mimir")
    assert lethe["attacks"]["b"]["scores"]["members"][1] is None  # skipped from every attack
    assert mimir["attacks"]["b"]["scores"]["members"][1] == 2.0  # only from the attack where it is NaN
    assert mimir["attacks"]["a"]["scores"]["members"][1] is None
    assert (mimir["attacks"]["a"]["n_members"], mimir["attacks"]["b"]["n_members"]) == (2, 3)
    assert "FPR < X" in mimir["tpr_convention"] and "FPR <= X" in lethe["tpr_convention"]
    dropped = mia_result({"a": [float("nan"), float("nan"), 1.0], "b": [1.0, 2.0, 0.0]}, 2, n_bootstrap=0,
                         protocol="mimir")
    assert set(dropped["attacks"]) == {"b"} and "a" in dropped["dropped_attacks"]


def test_tpr_at_fpr_strict_as_mimir() -> None:
    members = np.arange(100, 120, dtype=float)  # 20 members
    nonmembers = np.r_[np.arange(100.0), 110.5]  # 101 non-members, one of them above 9 members
    assert roc_metrics(members, nonmembers, n_bootstrap=0, strict_fpr=True)["tpr_at_1%_fpr"] == pytest.approx(1.0)
    tight = np.r_[np.arange(99.0), 110.5]  # 100 non-members: one false positive is FPR = 1% exactly
    assert roc_metrics(members, tight, n_bootstrap=0)["tpr_at_1%_fpr"] == pytest.approx(1.0)
    assert roc_metrics(members, tight, n_bootstrap=0, strict_fpr=True)["tpr_at_1%_fpr"] == pytest.approx(0.45)
    boot = roc_metrics(members, tight, n_bootstrap=200, seed=1, strict_fpr=True)
    assert boot["tpr_at_1%_fpr_ci"][0] <= 0.45 <= boot["tpr_at_1%_fpr_ci"][1]


def _grad_norm(model, ids: list[int], p: float) -> float:
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    nll = -torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    nll.mean().backward()
    norms = [float(w.grad.detach().norm(p)) for w in model.parameters() if w.grad is not None]
    model.zero_grad(set_to_none=True)
    return float(np.mean(norms))


def test_gradnorm_p_and_reading(model, tok) -> None:
    members, nonmembers = PLAIN_SENTENCES[:2], PLAIN_SENTENCES[2:4]
    mimir = run_mia(model, tok, members, nonmembers, gradnorm=True, protocol="mimir", n_bootstrap=0)
    lethe = run_mia(model, tok, members, nonmembers, gradnorm=True, n_bootstrap=0)
    lethe_inf = run_mia(model, tok, members, nonmembers, gradnorm=True, gradnorm_p="inf", n_bootstrap=0)
    ids = tok(members[0])["input_ids"]
    g_inf, g_2 = _grad_norm(model, ids, float("inf")), _grad_norm(model, ids, 2.0)
    assert mimir["attacks"]["gradnorm"]["scores"]["members"][0] == pytest.approx(g_inf, rel=1e-4)  # +G: MIMIR
    assert lethe["attacks"]["gradnorm"]["scores"]["members"][0] == pytest.approx(-g_2, rel=1e-4)  # -G
    assert lethe_inf["attacks"]["gradnorm"]["scores"]["members"][0] == pytest.approx(-g_inf, rel=1e-4)
    assert mimir["attacks"]["gradnorm"]["auc"] == pytest.approx(1 - lethe_inf["attacks"]["gradnorm"]["auc"])
    assert "MIMIR's reading" in mimir["gradnorm_reading"] and "||grad||_inf" in mimir["gradnorm_reading"]
    assert "smaller gradient reads as member" in lethe["gradnorm_reading"]
    with pytest.raises(LetheError, match="gradnorm p must be 1, 2 or inf"):
        run_mia(model, tok, members, nonmembers, gradnorm=True, gradnorm_p=3, n_bootstrap=0)


def test_cli_protocol_mimir_and_the_report_line(model, tok, tmp_path, capsys) -> None:
    folder = save_model(model, tok, tmp_path / "model")
    members, nonmembers = tmp_path / "m.txt", tmp_path / "n.txt"
    members.write_text("\n\n".join(PLAIN_SENTENCES[:4]) + "\n")
    nonmembers.write_text("\n\n".join(PLAIN_SENTENCES[4:]) + "\n")
    out = tmp_path / "run"
    assert main(["audit", "mia", "--model", str(folder), "--members", str(members), "--nonmembers", str(nonmembers),
                 "--protocol", "mimir", "--bootstrap", "0", "--run-dir", str(out), "--quiet"]) == 0, capsys.readouterr()
    result = json.loads((out / "mia.json").read_text())
    assert result["protocol"] == "mimir" and result["config"]["window"] == 64
    assert "Input protocol: mimir" in (out / "report.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["mia"]["protocol"] == "mimir"
