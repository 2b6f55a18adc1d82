"""Tests for lethe.unlearn.objectives on hand-made tensors (values computed by hand / with math)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lethe.errors import LetheError
from lethe.unlearn.objectives import (
    METHODS,
    REFUSALS,
    dpo_terms,
    forget_terms,
    ga_terms,
    get_method,
    kl_retain,
    nll_retain,
    npo_terms,
    refusal_answers,
    resolve_hyper,
    simnpo_terms,
    total_loss,
    weighted_mean,
)

IDK_FILE = Path("/work/shared/data/tofu/idontknow.jsonl")


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_ga_is_minus_mean_nll_and_ascends():
    S, n = t(2.0, 6.0, 1.5), t(1, 3, 3)
    assert ga_terms(S, n).tolist() == [-2.0, -2.0, -0.5]
    S.requires_grad_(True)
    ga_terms(S, n).sum().backward()
    assert (S.grad < 0).all()  # minimising −ℓ raises the forget NLL


def test_npo_values_and_limits():
    # θ = ref: −(2/β) log σ(0) = (2/β) log 2
    for beta in (0.1, 1.0, 4.0):
        assert npo_terms(t(3.0), t(3.0), beta).item() == pytest.approx(2 / beta * math.log(2))
    # S − S_ref = 2, β = 0.5: −4 log σ(1) = 4 log(1 + e^−1)
    assert npo_terms(t(5.0), t(3.0), 0.5).item() == pytest.approx(4 * math.log1p(math.exp(-1)))
    # small β: ∂f/∂S = −2σ(−β(S − S_ref)) → −1, the gradient of GA on the summed NLL (−S)
    S = t(7.0, 2.0).requires_grad_(True)
    npo_terms(S, t(1.0, 4.0), 1e-6).sum().backward()
    torch.testing.assert_close(S.grad, t(-1.0, -1.0), atol=1e-5, rtol=0)
    # larger β saturates: once the forget NLL is far above the reference the push fades
    S = t(50.0).requires_grad_(True)
    npo_terms(S, t(1.0), 0.5).sum().backward()
    assert -1e-9 < S.grad.item() < 0


def test_simnpo_values_and_sign():
    # S/n = 1.5, β = 4.5, δ = 0: (2/4.5) log(1 + e^−6.75)
    assert simnpo_terms(t(3.0), t(2), 4.5).item() == pytest.approx(2 / 4.5 * math.log1p(math.exp(-6.75)))
    # δ = 1: −(2/4.5) log σ(4.5 · 0.5)
    assert simnpo_terms(t(3.0), t(2), 4.5, 1.0).item() == pytest.approx(2 / 4.5 * math.log1p(math.exp(-2.25)))
    # length-normalised: same mean NLL, same term
    assert simnpo_terms(t(3.0, 30.0), t(2, 20), 2.0).unique().numel() == 1
    S = t(0.2, 4.0).requires_grad_(True)
    simnpo_terms(S, t(1, 2), 4.5).sum().backward()
    assert (S.grad < 0).all()


def test_dpo_prefers_refusals():
    # win: log π_θ − log π_ref = 2 − 1 = +1; lose: 1 − 3 = −2; margin 3; β = 0.1 → 20 log(1 + e^−0.3)
    value = dpo_terms(win_nll=t(1.0), win_ref_nll=t(2.0), lose_nll=t(3.0), lose_ref_nll=t(1.0), beta=0.1)
    assert value.item() == pytest.approx(20 * math.log1p(math.exp(-0.3)))
    assert dpo_terms(t(4.0), t(4.0), t(2.0), t(2.0), 0.1).item() == pytest.approx(20 * math.log(2))
    win, lose = t(2.0).requires_grad_(True), t(2.0).requires_grad_(True)
    dpo_terms(win, t(2.0), lose, t(2.0), 0.1).backward()
    assert win.grad.item() > 0 and lose.grad.item() < 0  # lower the refusal's NLL, raise the answer's


def test_forget_terms_dispatches_every_method():
    S, n, ref, idk, idk_ref = t(4.0, 2.0), t(2, 4), t(3.0, 3.0), t(5.0, 1.0), t(6.0, 2.0)
    for name, method in METHODS.items():
        hyper = resolve_hyper(method)
        got = forget_terms(method, hyper, S, n, ref_nll_sum=ref, idk_nll_sum=idk, idk_ref_nll_sum=idk_ref)
        expected = {
            "ga": ga_terms(S, n), "gd": ga_terms(S, n), "kl": ga_terms(S, n),
            "npo": npo_terms(S, ref, 0.1), "simnpo": simnpo_terms(S, n, 4.5, 0.0),
            "idkpo": dpo_terms(idk, idk_ref, S, ref, 0.1),
        }[name]
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="reference"):
        forget_terms(METHODS["npo"], resolve_hyper(METHODS["npo"]), S, n)


def test_weighted_mean_reweights_samples():
    terms = t(1.0, 2.0, 6.0)
    assert weighted_mean(terms).item() == 3.0
    assert weighted_mean(terms, torch.ones(3)).item() == 3.0  # uniform GUARD weights = the plain mean
    w = t(0.5, 0.25, 0.25)  # Σ w = 1, scaled to N_f·w (mean 1)
    assert weighted_mean(terms, 3 * w).item() == pytest.approx(0.5 * 1 + 0.25 * 2 + 0.25 * 6)


def test_retain_terms():
    assert nll_retain(t(2.0, 9.0), t(2, 3)).item() == 2.0
    logits = torch.zeros(1, 3, 2)
    logits[0, 0] = torch.tensor([math.log(3.0), 0.0])  # p_θ = (0.75, 0.25) at the only supervised position
    logits[0, 1] = torch.tensor([9.0, -9.0])  # unsupervised target: must not count
    ref = torch.zeros(1, 3, 2)  # p_ref = (0.5, 0.5)
    labels = torch.tensor([[-100, 1, -100]])
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kl_retain(logits, ref, labels).item() == pytest.approx(expected, rel=1e-6)
    assert kl_retain(ref, ref, labels).item() == 0.0
    # agrees with torch's KL over random logits, averaged over supervised positions
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[-100, -100, 1, 2, 3], [-100, 4, 5, -100, -100]])
    mask = labels[:, 1:].ne(-100)
    per_token = F.kl_div(F.log_softmax(a[:, :-1], -1), F.log_softmax(b[:, :-1], -1), log_target=True,
                         reduction="none").sum(-1)
    assert kl_retain(a, b, labels).item() == pytest.approx(per_token[mask].mean().item(), rel=1e-5)


def test_total_loss_and_defaults():
    assert {k: (m.gamma, m.alpha, m.beta, m.delta) for k, m in METHODS.items()} == {
        "ga": (1.0, 0.0, 0.1, 0.0), "gd": (1.0, 1.0, 0.1, 0.0), "kl": (1.0, 1.0, 0.1, 0.0),
        "npo": (1.0, 1.0, 0.1, 0.0), "simnpo": (0.125, 1.0, 4.5, 0.0), "idkpo": (1.0, 1.0, 0.1, 0.0),
    }
    assert [m.name for m in METHODS.values() if m.reference] == ["kl", "npo", "idkpo"]
    assert [m.retain for m in METHODS.values()] == ["none", "nll", "kl", "nll", "nll", "nll"]
    hyper = resolve_hyper(METHODS["simnpo"], alpha=2.0)
    assert (hyper.gamma, hyper.alpha, hyper.beta) == (0.125, 2.0, 4.5)
    assert total_loss(hyper, torch.tensor(8.0), torch.tensor(1.0)).item() == 0.125 * 8 + 2.0


def test_bad_methods_and_hyperparameters():
    valid = "valid: ga, gd, kl, npo, simnpo, idkpo"
    with pytest.raises(LetheError, match=f"unknown unlearning method 'rmu'; {valid}"):
        get_method("rmu")
    assert get_method("NPO").name == "npo"
    with pytest.raises(LetheError, match="beta must be > 0"):
        resolve_hyper(METHODS["npo"], beta=0.0)
    with pytest.raises(LetheError, match="no retain term"):
        resolve_hyper(METHODS["ga"], alpha=1.0)


def test_refusals(tmp_path):
    assert len(set(REFUSALS)) >= 20 and refusal_answers() == list(REFUSALS)
    plain = tmp_path / "idk.txt"
    plain.write_text("I don't know.\n\nNo idea.\n", encoding="utf-8")
    assert refusal_answers(str(plain)) == ["I don't know.", "No idea."]
    if IDK_FILE.is_file():
        assert len(refusal_answers(str(IDK_FILE))) >= 20
