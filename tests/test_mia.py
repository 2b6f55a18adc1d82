"""Tests of the membership-inference audit: per-sample attack scores, ROC metrics and run_mia end to end."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from transformers import LlamaForCausalLM

from conftest import PLAIN_SENTENCES
from lethe.audit.mia import (
    ROC_LOG_BINS,
    _fast_auc_tpr,
    gradnorm_scores,
    mia_result,
    mia_scores,
    roc_metrics,
    run_mia,
    thin_roc,
)
from lethe.audit.scoring import TokenScores, score_sequences
from lethe.data.formatting import encode_document
from lethe.errors import LetheError
from lethe.models import build_tiny, tiny_config

CORPUS = PLAIN_SENTENCES[:8]
MEMBERS = CORPUS[:4]
NONMEMBERS = CORPUS[4:]
SIZES = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for the CPU)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def default_feature(tokenizer, text: str) -> dict:
    """A text as both MIA protocols score it when it fits one window: the tokenizer's defaults (here BOS +
    text, no EOS), every token after the first a target."""
    ids = tokenizer(text)["input_ids"]
    return {"input_ids": ids, "labels": [-100] + ids[1:]}


def token_scores(logp, mu=None, var=None) -> TokenScores:
    logp = torch.tensor(logp, dtype=torch.float32)
    n = logp.numel()
    mu = torch.tensor(mu, dtype=torch.float32) if mu is not None else torch.zeros(n)
    var = torch.tensor(var, dtype=torch.float32) if var is not None else torch.ones(n)
    zeros = torch.zeros(n, dtype=torch.long)
    return TokenScores(targets=zeros, logp=logp, mu=mu, var=var, argmax=zeros, rank=zeros)


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = build_tiny(CORPUS * 2, vocab_size=300, seed=0, **SIZES)
    return model.eval(), tokenizer


# ------------------------------------------------------------------------------------- hand-computed scores


def test_scores_by_hand():
    scores = [token_scores([-1.0, -2.0, -3.0, -4.0, -5.0]), token_scores([-0.5, -3.0, -1.0])]
    texts = ["hello hello hello", "abc"]
    out = mia_scores(scores, texts, ks=(0.2, 0.5))
    assert set(out) == {"loss", "zlib", "min_k_0.2", "min_k_0.5", "min_k_pp_0.2", "min_k_pp_0.5"}
    np.testing.assert_allclose(out["loss"], [-3.0, -1.5])
    np.testing.assert_allclose(out["zlib"], [-3.0 / len(zlib.compress(b"hello hello hello")),
                                             -1.5 / len(zlib.compress(b"abc"))])
    # n=5: floor(0.2*5)=1 -> -5; floor(0.5*5)=2 -> mean(-5,-4)
    # n=3: floor(0.2*3)=0 -> at least 1 -> -3; floor(0.5*3)=1 (not round/ceil=2) -> -3
    np.testing.assert_allclose(out["min_k_0.2"], [-5.0, -3.0])
    np.testing.assert_allclose(out["min_k_0.5"], [-4.5, -3.0])


def test_zlib_uses_compressed_bytes_of_utf8():
    text = "ünïcode ünïcode ünïcode ünïcode"
    out = mia_scores([token_scores([-2.0, -2.0])], [text], ks=(0.2,))
    assert out["zlib"][0] == pytest.approx(-2.0 / len(zlib.compress(text.encode("utf-8"))))


def test_min_k_pp_by_hand_with_variance_clamp():
    ts = token_scores([-1.0, -2.0, -4.0], mu=[-1.5, -1.0, -2.0], var=[0.25, 4.0, 0.0])
    # z = (0.5/0.5, -1/2, -2/sqrt(1e-6)) = (1, -0.5, -2000)
    out = mia_scores([ts], ["x"], ks=(0.2, 0.7, 1.0))
    assert out["min_k_pp_0.2"][0] == pytest.approx(-2000.0)
    assert out["min_k_pp_0.7"][0] == pytest.approx((-2000.0 - 0.5) / 2)  # floor(2.1) = 2
    assert out["min_k_pp_1"][0] == pytest.approx((1.0 - 0.5 - 2000.0) / 3)
    # a slightly negative variance (round-off) is clamped too, not NaN
    neg = mia_scores([token_scores([-1.0], mu=[-0.5], var=[-1e-9])], ["x"], ks=(1.0,))
    assert neg["min_k_pp_1"][0] == pytest.approx(-0.5 / 1e-3)


def test_floor_is_robust_to_float_products():
    ts = token_scores([-float(i) for i in range(1, 101)])  # 0.29 * 100 = 28.999...: 29 values
    out = mia_scores([ts], ["x"], ks=(0.29,))
    assert out["min_k_0.29"][0] == pytest.approx(-np.mean(np.arange(72, 101)))


def test_empty_scores_are_nan_and_bad_input_raises():
    out = mia_scores([token_scores([])], [""], ks=(0.2,))
    assert all(math.isnan(v[0]) for v in out.values())
    with pytest.raises(LetheError):
        mia_scores([token_scores([-1.0])], ["a", "b"])
    with pytest.raises(LetheError):
        mia_scores([token_scores([-1.0])], ["a"], ks=(0.0,))
    with pytest.raises(LetheError):
        mia_scores([token_scores([-1.0])], ["a"], ks=(1.5,))


def test_scores_match_plain_forward(tiny):
    model, tokenizer = tiny
    texts = CORPUS[:3]
    feats = [encode_document(tokenizer, t, 64) for t in texts]
    out = mia_scores(score_sequences(model, feats, batch_size=2, pad_id=tokenizer.pad_token_id), texts,
                     ks=(0.2, 0.4))
    for i, (text, f) in enumerate(zip(texts, feats, strict=True)):
        ids = torch.tensor([f["input_ids"]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
        targets = ids[0, 1:]
        logp = logprobs[torch.arange(targets.numel()), targets].numpy()
        probs = logprobs.exp()
        mu = (probs * logprobs).sum(-1)
        var = (probs * logprobs.square()).sum(-1) - mu.square()
        z = ((torch.from_numpy(logp) - mu) / var.clamp(min=1e-6).sqrt()).numpy()
        n = logp.size
        assert out["loss"][i] == pytest.approx(logp.mean(), abs=1e-5)
        assert out["zlib"][i] == pytest.approx(logp.mean() / len(zlib.compress(text.encode())), abs=1e-6)
        for k in (0.2, 0.4):
            m = max(1, int(k * n))
            assert out[f"min_k_{k}"][i] == pytest.approx(np.sort(logp)[:m].mean(), abs=1e-4)
            assert out[f"min_k_pp_{k}"][i] == pytest.approx(np.sort(z)[:m].mean(), abs=1e-3)


# -------------------------------------------------------------------------------------------- ROC metrics


def test_auc_separable_and_identical():
    sep = roc_metrics([5.0, 6.0, 7.0], [1.0, 2.0, 3.0], n_bootstrap=50)
    assert sep["auc"] == 1.0
    # 3 non-members resolve no FPR below 1/3: every target is null with a note, TPR at FPR 0 is given
    assert sep["tpr_at_0.1%_fpr"] is sep["tpr_at_1%_fpr"] is sep["tpr_at_5%_fpr"] is None
    assert sep["tpr_at_5%_fpr_ci"] is None and "not resolvable with 3 non-members" in sep["tpr_at_5%_fpr_note"]
    assert sep["tpr_at_0_fpr"] == 1.0
    assert sep["auc_ci"] == [1.0, 1.0]
    flipped = roc_metrics([1.0, 2.0, 3.0], [5.0, 6.0, 7.0], n_bootstrap=0)
    assert flipped["auc"] == 0.0 and flipped["tpr_at_0_fpr"] == 0.0
    rng = np.random.default_rng(1)
    same = roc_metrics(rng.normal(size=2000), rng.normal(size=2000), n_bootstrap=0)
    assert 0.46 < same["auc"] < 0.54
    ties = roc_metrics([1.0, 1.0], [1.0, 1.0], n_bootstrap=0)
    assert ties["auc"] == 0.5 and ties["tpr_at_0_fpr"] == 0.0


def test_tpr_at_fpr_convention_on_crafted_example():
    nonmembers = np.arange(100, dtype=float)  # 0..99
    members = np.array([100.0, 99.0, 97.5, 96.0, 50.0, 10.0])
    out = roc_metrics(members, nonmembers, n_bootstrap=0)
    # 0.1% of 100 non-members is below the resolution 1/100: not given (null, with the reason); with no
    # false positive only 100 beats every non-member (the member tied with the top non-member at 99 is not
    # counted); 1% allows one (threshold above 98); 5% allows five.
    assert out["tpr_at_0.1%_fpr"] is None and out["tpr_at_0.1%_fpr_ci"] is None
    assert out["tpr_at_0.1%_fpr_note"].startswith("not resolvable with 100 non-members")
    assert "tpr_at_1%_fpr_note" not in out
    assert out["tpr_at_0_fpr"] == pytest.approx(1 / 6)
    assert out["tpr_at_1%_fpr"] == pytest.approx(2 / 6)
    assert out["tpr_at_5%_fpr"] == pytest.approx(4 / 6)
    labels = np.r_[np.ones(6), np.zeros(100)]
    assert out["auc"] == pytest.approx(roc_auc_score(labels, np.r_[members, nonmembers]))
    assert out["auc_ci"] is None and out["tpr_at_1%_fpr_ci"] is None


def test_fast_bootstrap_statistics_equal_sklearn():
    rng = np.random.default_rng(3)
    for n1, n0 in ((7, 13), (50, 300), (400, 1200)):
        members = np.round(rng.normal(0.5, 1, n1), 1)  # rounding creates ties
        nonmembers = np.round(rng.normal(0, 1, n0), 1)
        labels = np.r_[np.ones(n1), np.zeros(n0)]
        pooled = np.r_[members, nonmembers]
        fpr, tpr, _ = roc_curve(labels, pooled, drop_intermediate=False)
        auc, tprs = _fast_auc_tpr(members, nonmembers)
        assert auc == pytest.approx(roc_auc_score(labels, pooled), abs=1e-12)
        for target, value in zip((0.001, 0.01, 0.05), tprs, strict=True):
            assert value == pytest.approx(tpr[fpr <= target + 1e-12].max(), abs=1e-12)


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(1.0, 1, 300), rng.normal(0, 1, 300)
    a = roc_metrics(members, nonmembers, n_bootstrap=200, seed=7)
    b = roc_metrics(members, nonmembers, n_bootstrap=200, seed=7)
    c = roc_metrics(members, nonmembers, n_bootstrap=200, seed=8)
    assert a == b
    assert a["auc_ci"] != c["auc_ci"]
    assert a["auc_ci"][0] <= a["auc"] <= a["auc_ci"][1]
    assert a["auc_ci"][1] - a["auc_ci"][0] > 0.02
    for label in ("1%", "5%"):
        lo, hi = a[f"tpr_at_{label}_fpr_ci"]
        assert lo <= a[f"tpr_at_{label}_fpr"] <= hi


def test_roc_curve_thinned_and_bad_input():
    rng = np.random.default_rng(0)
    out = roc_metrics(rng.normal(0.3, 1, 1000), rng.normal(0, 1, 1000), n_bootstrap=0)
    fpr, tpr = out["roc"]["fpr"], out["roc"]["tpr"]
    assert 2 <= len(fpr) == len(tpr) <= 2 * (ROC_LOG_BINS + 2)
    assert fpr[0] == 0.0 and fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert all(np.diff(fpr) >= 0) and all(np.diff(tpr) >= 0)
    with pytest.raises(LetheError):
        roc_metrics([], [1.0])
    with pytest.raises(LetheError):
        roc_metrics([1.0, float("nan")], [1.0])
    with pytest.raises(LetheError):
        roc_metrics([1.0], [0.0], n_bootstrap=-1)


def _tpr_at(fpr, tpr, target: float) -> float:
    fpr, tpr = np.asarray(fpr), np.asarray(tpr)
    return float(tpr[fpr <= target].max())


def test_stored_roc_keeps_low_fpr_resolution():
    """The thinned curve must stay faithful on a log-FPR axis: TPR at low FPR as on the full curve."""
    rng = np.random.default_rng(5)
    members, nonmembers = rng.normal(1.5, 1, 20000), rng.normal(0, 1, 20000)
    labels = np.r_[np.ones(members.size), np.zeros(nonmembers.size)]
    full_fpr, full_tpr, _ = roc_curve(labels, np.r_[members, nonmembers])
    assert full_fpr.size > 2000  # thinning has work to do
    stored = roc_metrics(members, nonmembers, n_bootstrap=0)["roc"]
    assert len(stored["fpr"]) <= 2 * (ROC_LOG_BINS + 2)
    assert sum(f <= 0.01 for f in stored["fpr"]) >= 40  # 200 evenly spaced points keep 7 of them here
    for target in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 5e-2, 0.3):  # within one log bin of the exact TPR
        exact = _tpr_at(full_fpr, full_tpr, target)
        assert _tpr_at(stored["fpr"], stored["tpr"], target) == pytest.approx(exact, rel=0.06), target
    # every stored point is a point of the full curve
    full = set(zip(full_fpr.tolist(), full_tpr.tolist(), strict=True))
    assert all(p in full for p in zip(stored["fpr"], stored["tpr"], strict=True))


def test_thin_roc_keeps_short_curves_and_bin_extremes():
    fpr, tpr = [0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 0.9, 1.0]
    assert thin_roc(np.array(fpr), np.array(tpr)) == (fpr, tpr)
    # 1000 points inside one tiny FPR bin plus a tail: the bin keeps its lowest and highest TPR
    fpr = np.r_[0.0, np.full(1000, 1e-3), np.linspace(0.01, 1, 300)]
    tpr = np.r_[0.0, np.linspace(0.1, 0.6, 1000), np.linspace(0.61, 1, 300)]
    thin_f, thin_t = thin_roc(fpr, tpr, bins=20)
    assert len(thin_f) <= 2 * 22
    at = [t for f, t in zip(thin_f, thin_t, strict=True) if f == 1e-3]
    assert min(at) == pytest.approx(0.1) and max(at) == pytest.approx(0.6)
    assert thin_f[-1] == 1.0 and thin_t[-1] == 1.0


# ------------------------------------------------------------------------------------------------ run_mia


def test_run_mia_end_to_end(tiny):
    model, tokenizer = tiny
    out = run_mia(model, tokenizer, MEMBERS, NONMEMBERS, n_bootstrap=20, max_length=64)
    json.dumps(out, allow_nan=False)
    assert "higher" in out["sign_convention"]
    assert out["n_members"] == 4 and out["n_nonmembers"] == 4
    assert out["skipped"]["members"] == [] and out["skipped"]["nonmembers"] == []
    assert set(out["attacks"]) == {"loss", "zlib", "min_k_0.2", "min_k_0.4", "min_k_pp_0.2", "min_k_pp_0.4"}
    for attack in out["attacks"].values():
        for key in ("auc", "auc_ci", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr", "tpr_at_5%_fpr",
                    "tpr_at_0.1%_fpr_ci", "tpr_at_1%_fpr_ci", "tpr_at_5%_fpr_ci", "roc", "scores"):
            assert key in attack
        assert len(attack["scores"]["members"]) == 4 and len(attack["scores"]["nonmembers"]) == 4
    texts = MEMBERS + NONMEMBERS
    feats = [default_feature(tokenizer, t) for t in texts]  # no EOS appended, nothing truncated
    assert feats[0]["input_ids"][0] == tokenizer.bos_token_id
    direct = mia_scores(score_sequences(model, feats, pad_id=tokenizer.pad_token_id), texts)
    np.testing.assert_allclose(out["attacks"]["loss"]["scores"]["members"], direct["loss"][:4], rtol=1e-6)
    np.testing.assert_allclose(out["attacks"]["min_k_pp_0.2"]["scores"]["nonmembers"],
                               direct["min_k_pp_0.2"][4:], rtol=1e-6)


def test_run_mia_scores_follow_input_order(tiny):
    model, tokenizer = tiny
    base = run_mia(model, tokenizer, MEMBERS, NONMEMBERS, n_bootstrap=0)
    perm = [2, 0, 3, 1]
    permuted = run_mia(model, tokenizer, [MEMBERS[i] for i in perm], NONMEMBERS, n_bootstrap=0)
    for name, attack in base["attacks"].items():
        expected = [attack["scores"]["members"][i] for i in perm]
        np.testing.assert_allclose(permuted["attacks"][name]["scores"]["members"], expected, rtol=1e-5)
        assert permuted["attacks"][name]["auc"] == pytest.approx(attack["auc"])


def test_run_mia_skips_empty_text_explicitly(tiny):
    model, tokenizer = tiny
    out = run_mia(model, tokenizer, [MEMBERS[0], "", MEMBERS[1]], NONMEMBERS[:2] + [""], n_bootstrap=0)
    assert out["skipped"]["members"] == [1] and out["skipped"]["nonmembers"] == [2]
    assert "empty" in out["skipped"]["reasons"]["members"]["1"]
    assert "empty" in out["skipped"]["reasons"]["nonmembers"]["2"]
    assert out["n_members"] == 2 and out["n_nonmembers"] == 2
    for attack in out["attacks"].values():
        assert attack["scores"]["members"][1] is None and attack["scores"]["nonmembers"][2] is None
        assert attack["scores"]["members"][0] is not None


def test_run_mia_errors(tiny):
    model, tokenizer = tiny
    with pytest.raises(LetheError, match="members"):
        run_mia(model, tokenizer, [], NONMEMBERS)
    with pytest.raises(LetheError, match="non-members"):
        run_mia(model, tokenizer, MEMBERS, [])
    with pytest.raises(LetheError, match="remain"):
        run_mia(model, tokenizer, ["", ""], NONMEMBERS, n_bootstrap=0)


def test_run_mia_reference_attack(tiny):
    model, tokenizer = tiny
    ref_model, ref_tokenizer = build_tiny(CORPUS, vocab_size=280, seed=1, **SIZES)
    out = run_mia(model, tokenizer, MEMBERS, NONMEMBERS, reference=(ref_model, ref_tokenizer), n_bootstrap=0)
    texts = MEMBERS + NONMEMBERS
    target = score_sequences(model, [default_feature(tokenizer, t) for t in texts])
    ref = score_sequences(ref_model, [default_feature(ref_tokenizer, t) for t in texts])
    expected = [-(t.mean_nll - r.mean_nll) for t, r in zip(target, ref, strict=True)]
    listed = out["attacks"]["reference"]["scores"]
    got = listed["members"] + listed["nonmembers"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    config = tiny_config(ref_tokenizer, **{k: v for k, v in SIZES.items() if k != "num_layers"}, num_layers=1)
    config.vocab_size = len(ref_tokenizer) - 10
    small = LlamaForCausalLM(config)
    with pytest.raises(LetheError, match="mismatch"):
        run_mia(model, tokenizer, MEMBERS, NONMEMBERS, reference=(small, ref_tokenizer), n_bootstrap=0)


def test_gradnorm_matches_manual_backward(tiny):
    """GradNorm (lethe protocol): minus the mean over parameter tensors of each tensor's gradient L2 norm."""
    model, tokenizer = tiny
    out = run_mia(model, tokenizer, MEMBERS[:2], NONMEMBERS[:2], gradnorm=True, n_bootstrap=0)
    assert "gradnorm" in out["attacks"]
    assert all(p.grad is None for p in model.parameters())  # the attack leaves no gradients behind
    ids = torch.tensor([tokenizer(MEMBERS[1])["input_ids"]])  # the tokenizer's defaults: BOS + text
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids).logits[0, :-1].double()
    nll = -torch.log_softmax(logits, dim=-1)[torch.arange(ids.shape[1] - 1), ids[0, 1:]]
    nll.mean().backward()  # mean NLL over every token after BOS
    norms = [math.sqrt(float((p.grad.double() ** 2).sum())) for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    assert len(norms) > 10
    expected = -sum(norms) / len(norms)
    got = out["attacks"]["gradnorm"]["scores"]["members"][1]
    assert got == pytest.approx(expected, rel=1e-4)
    global_norm = math.sqrt(sum(n * n for n in norms))  # the formula it is not
    assert abs(got + global_norm) > 0.1 * global_norm
    assert math.isnan(gradnorm_scores(model, [{"input_ids": [1], "labels": [-100]}])[0])


# -------------------------------------------------------------------------- sign convention and skipping


def test_attacks_score_memorized_members_higher():
    """A model trained to memorize the members: every loss-based attack must rank them above non-members."""
    torch.manual_seed(0)
    model, tokenizer = build_tiny(CORPUS, vocab_size=300, seed=0, **SIZES)
    batch = [encode_document(tokenizer, t, 64) for t in MEMBERS]
    width = max(len(f["input_ids"]) for f in batch)
    ids = torch.full((len(batch), width), tokenizer.pad_token_id)
    labels = torch.full((len(batch), width), -100)
    for row, f in enumerate(batch):
        ids[row, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        labels[row, : len(f["labels"])] = torch.tensor(f["labels"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        model(input_ids=ids, attention_mask=ids.ne(tokenizer.pad_token_id), labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    out = run_mia(model, tokenizer, MEMBERS, NONMEMBERS, n_bootstrap=0, max_length=64)
    members, nonmembers = out["attacks"]["loss"]["scores"]["members"], out["attacks"]["loss"]["scores"]["nonmembers"]
    assert max(members) > -0.5 > max(nonmembers)  # memorized: mean NLL of members well below non-members'
    for attack in ("loss", "zlib", "min_k_0.2", "min_k_0.4"):
        assert out["attacks"][attack]["auc"] == 1.0, attack
        assert out["attacks"][attack]["tpr_at_0_fpr"] == 1.0, attack


def test_run_mia_counts_non_finite_and_unsupervised_samples(tiny, monkeypatch):
    """A NaN / inf score or a sample without supervised tokens is skipped with its reason, never dropped."""
    import lethe.audit.mia as mia

    real_scores, real_encode = mia.mia_scores, mia.text_windows

    def poisoned_scores(scores, texts, ks, protocol):
        out = real_scores(scores, texts, ks, protocol)
        out["min_k_0.2"][1] = float("nan")  # member 1
        out["zlib"][len(MEMBERS) + 2] = float("inf")  # non-member 2
        return out

    def unsupervised_member_3(model, tokenizer, texts, **kwargs):
        windows = real_encode(model, tokenizer, texts, **kwargs)
        for feature in windows[3]:
            feature["labels"] = [-100] * len(feature["labels"])  # member 3: nothing to score
        return windows

    monkeypatch.setattr(mia, "mia_scores", poisoned_scores)
    monkeypatch.setattr(mia, "text_windows", unsupervised_member_3)
    model, tokenizer = tiny
    out = run_mia(model, tokenizer, MEMBERS, NONMEMBERS, n_bootstrap=0, max_length=64)
    json.dumps(out, allow_nan=False)
    assert out["skipped"]["members"] == [1, 3] and out["skipped"]["nonmembers"] == [2]
    reasons = out["skipped"]["reasons"]
    assert reasons["members"]["1"] == "non-finite score (min_k_0.2)"
    assert reasons["members"]["3"] == "no supervised tokens"
    assert reasons["nonmembers"]["2"] == "non-finite score (zlib)"
    assert out["n_members"] == 2 and out["n_nonmembers"] == 3
    for attack in out["attacks"].values():  # every attack is evaluated on the same remaining samples
        assert [v is None for v in attack["scores"]["members"]] == [False, True, False, True]
        assert [v is None for v in attack["scores"]["nonmembers"]] == [False, False, True, False]
    kept = [v for v in out["attacks"]["loss"]["scores"]["members"] if v is not None]
    others = [v for v in out["attacks"]["loss"]["scores"]["nonmembers"] if v is not None]
    assert out["attacks"]["loss"]["auc"] == pytest.approx(roc_metrics(kept, others, n_bootstrap=0)["auc"])


def test_mia_result_validates_and_skips_nan():
    out = mia_result({"a": [2.0, float("nan"), 3.0, 0.0, 1.0], "b": [1.0, 1.0, 1.0, 0.0, float("-inf")]}, 3,
                     {0: "given reason"}, n_bootstrap=0)
    assert out["skipped"]["members"] == [0, 1] and out["skipped"]["nonmembers"] == [1]
    assert out["skipped"]["reasons"]["members"] == {"0": "given reason", "1": "non-finite score (a)"}
    assert out["skipped"]["reasons"]["nonmembers"] == {"1": "non-finite score (b)"}
    with pytest.raises(LetheError, match="remain"):
        mia_result({"a": [float("nan"), 0.0]}, 1, n_bootstrap=0)
    with pytest.raises(LetheError, match="different numbers"):
        mia_result({"a": [1.0, 0.0], "b": [1.0]}, 1, n_bootstrap=0)
    with pytest.raises(LetheError, match="members out of"):
        mia_result({"a": [1.0, 0.0]}, 2, n_bootstrap=0)
