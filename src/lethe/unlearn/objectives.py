"""Unlearning objectives: per-sample forget terms f_i and retain terms, so any of them can be re-weighted.

Notation (DESIGN 3.3). For sample i with answer y_i: S_i = summed NLL over the answer tokens (EOS
included), n_i = |y_i| supervised tokens, ℓ_i = S_i / n_i, log π(y_i) = −S_i. "ref" is the frozen model
θ₀ (a copy, or the same model with its LoRA adapters disabled). σ = logistic sigmoid.

    GA      f_i = −ℓ_i                                        (gradient ascent; TOFU, Maini et al. 2024)
    GD      f_i = −ℓ_i,  retain NLL                           (gradient difference; TOFU)
    KL      f_i = −ℓ_i,  retain KL(π_ref ‖ π_θ) per token     (TOFU)
    NPO     f_i = −(2/β) log σ(−β (log π_θ(y_i) − log π_ref(y_i)))
                = −(2/β) log σ(β (S_i − S_ref,i)),  retain NLL           (Zhang et al. 2024, arXiv 2404.05868)
    SimNPO  f_i = −(2/β) log σ(β (S_i / n_i − δ)),  retain NLL           (Fan et al. 2024, arXiv 2410.07163)
    IdkPO   f_i = −(2/β) log σ(β [(log π_θ − log π_ref)(y_idk) − (log π_θ − log π_ref)(y_i)])
                                                      retain NLL           (DPO, Rafailov et al. 2023; TOFU)

Total loss L = γ · L_forget + α · L_retain, with L_forget = mean_i(f_i), or under GUARD the weighted mean
mean_i(N_f · w_i · f_i) over a batch (Σ_i w_i = 1 over the forget set, so the mean weight is 1 and an
epoch's expectation is Σ_i w_i f_i). L_retain: NLL = mean over retain samples of ℓ_r; KL = mean over
supervised retain tokens of Σ_v π_ref(v) [log π_ref(v) − log π_θ(v)].

Sign notes. SimNPO's paper writes −(2/β) log σ(−(β/|y|) log π_θ(y) − γ_paper); with log π = −S that is
−(2/β) log σ(β S/|y| − γ_paper), i.e. DESIGN's form with δ = γ_paper / β. Here (as in open-unlearning)
δ is the margin and γ (0.125 for SimNPO) the weight of the forget term. IdkPO's DPO term carries the 2/β
factor of open-unlearning (its numbers stay comparable with that leaderboard); the DPO paper's loss is
the same up to that constant factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX


@dataclass(frozen=True)
class Method:
    """An unlearning objective: its retain term, what it needs, and its default hyper-parameters."""

    name: str
    retain: str  # "none" | "nll" | "kl"
    reference: bool  # needs π_ref (a frozen copy, or the LoRA model with adapters disabled)
    refusals: bool  # needs "I don't know" answers for the forget questions
    gamma: float = 1.0  # weight of the forget term
    alpha: float = 1.0  # weight of the retain term
    beta: float = 0.1  # inverse temperature of NPO / SimNPO / DPO
    delta: float = 0.0  # SimNPO margin


METHODS: dict[str, Method] = {
    "ga": Method("ga", retain="none", reference=False, refusals=False, alpha=0.0),
    "gd": Method("gd", retain="nll", reference=False, refusals=False),
    "kl": Method("kl", retain="kl", reference=True, refusals=False),
    "npo": Method("npo", retain="nll", reference=True, refusals=False, beta=0.1),
    "simnpo": Method("simnpo", retain="nll", reference=False, refusals=False, gamma=0.125, beta=4.5,
                     delta=0.0),
    "idkpo": Method("idkpo", retain="nll", reference=True, refusals=True, beta=0.1),
}


@dataclass(frozen=True)
class Hyper:
    gamma: float
    alpha: float
    beta: float
    delta: float


def get_method(name: str) -> Method:
    """The registered method ``name``; LetheError naming the valid ones otherwise."""
    method = METHODS.get(str(name).lower())
    if method is None:
        raise LetheError(f"unknown unlearning method {name!r}; valid: {', '.join(METHODS)}")
    return method


def resolve_hyper(method: Method, gamma: float | None = None, alpha: float | None = None,
                  beta: float | None = None, delta: float | None = None) -> Hyper:
    """User values where given (not None), else the method's defaults."""
    hyper = Hyper(
        gamma=method.gamma if gamma is None else float(gamma),
        alpha=method.alpha if alpha is None else float(alpha),
        beta=method.beta if beta is None else float(beta),
        delta=method.delta if delta is None else float(delta),
    )
    if hyper.beta <= 0:
        raise LetheError(f"config: objective.beta must be > 0, got {hyper.beta}")
    if method.retain == "none" and hyper.alpha != 0:
        raise LetheError(f"config: objective.alpha={hyper.alpha} has no effect for method {method.name} "
                         "(no retain term); use method gd for ascent plus retain NLL")
    return hyper


# --- per-sample forget terms [B] ---------------------------------------------------------------------


def ga_terms(nll_sum: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """GA / GD / KL forget term: f_i = −ℓ_i = −S_i / n_i."""
    return -nll_sum / n_tokens.clamp(min=1)


def npo_terms(nll_sum: torch.Tensor, ref_nll_sum: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: f_i = −(2/β) log σ(β (S_i − S_ref,i)); equals (2/β) log 2 at θ = ref."""
    return -(2.0 / beta) * F.logsigmoid(beta * (nll_sum - ref_nll_sum))


def simnpo_terms(nll_sum: torch.Tensor, n_tokens: torch.Tensor, beta: float,
                 delta: float = 0.0) -> torch.Tensor:
    """SimNPO: f_i = −(2/β) log σ(β (S_i / n_i − δ)) (reference-free, length-normalised)."""
    return -(2.0 / beta) * F.logsigmoid(beta * (nll_sum / n_tokens.clamp(min=1) - delta))


def dpo_terms(win_nll: torch.Tensor, win_ref_nll: torch.Tensor, lose_nll: torch.Tensor,
              lose_ref_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO with the refusal preferred (win) and the original answer rejected (lose), log π = −S:
    f_i = −(2/β) log σ(β [(S_ref,win − S_win) − (S_ref,lose − S_lose)])."""
    margin = (win_ref_nll - win_nll) - (lose_ref_nll - lose_nll)
    return -(2.0 / beta) * F.logsigmoid(beta * margin)


def forget_terms(method: Method, hyper: Hyper, nll_sum: torch.Tensor, n_tokens: torch.Tensor, *,
                 ref_nll_sum: torch.Tensor | None = None, idk_nll_sum: torch.Tensor | None = None,
                 idk_ref_nll_sum: torch.Tensor | None = None) -> torch.Tensor:
    """The per-sample forget term f_i [B] of ``method`` (see the module docstring)."""
    if method.name in ("ga", "gd", "kl"):
        return ga_terms(nll_sum, n_tokens)
    if method.name == "simnpo":
        return simnpo_terms(nll_sum, n_tokens, hyper.beta, hyper.delta)
    if method.name == "npo":
        if ref_nll_sum is None:
            raise ValueError("npo needs the reference model's summed NLL")
        return npo_terms(nll_sum, ref_nll_sum, hyper.beta)
    if method.name == "idkpo":
        if ref_nll_sum is None or idk_nll_sum is None or idk_ref_nll_sum is None:
            raise ValueError("idkpo needs the NLLs of the refusal answers and the reference NLLs")
        return dpo_terms(idk_nll_sum, idk_ref_nll_sum, nll_sum, ref_nll_sum, hyper.beta)
    raise LetheError(f"unknown unlearning method {method.name!r}; valid: {', '.join(METHODS)}")


def weighted_mean(terms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_forget over a batch: mean_i f_i, or mean_i (v_i · f_i) with v_i = N_f · w_i (GUARD weights scaled
    to mean 1), so uniform weights (v_i = 1) give the plain mean."""
    if weights is None:
        return terms.mean()
    return (weights.to(terms.dtype) * terms).mean()


# --- retain terms (scalars) --------------------------------------------------------------------------


def nll_retain(nll_sum: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Retain NLL: mean over retain samples of ℓ_r = S_r / n_r."""
    return (nll_sum / n_tokens.clamp(min=1)).mean()


def kl_retain(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) over the vocabulary at every position whose next token is supervised, averaged over
    those positions (the same shift as :func:`lethe.losses.token_nll`)."""
    mask = labels[:, 1:].ne(IGNORE_INDEX)
    log_p = F.log_softmax(logits[:, :-1].float(), dim=-1)[mask]
    log_ref = F.log_softmax(ref_logits[:, :-1].float(), dim=-1)[mask]
    if log_p.numel() == 0:
        return logits.sum() * 0.0
    per_token = (log_ref.exp() * (log_ref - log_p)).sum(dim=-1)
    return per_token.mean()


def total_loss(hyper: Hyper, forget: torch.Tensor, retain: torch.Tensor | float = 0.0) -> torch.Tensor:
    """L = γ · L_forget + α · L_retain."""
    return hyper.gamma * forget + hyper.alpha * retain


# --- refusal answers (IdkPO) -------------------------------------------------------------------------

REFUSALS: tuple[str, ...] = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information about that.",
    "I can't answer that question.",
    "That is something I don't know.",
    "I'm afraid I don't have an answer to that.",
    "I don't have any details on that.",
    "Sorry, I don't know the answer.",
    "I have no idea.",
    "That's not something I can tell you.",
    "I'm unable to answer that.",
    "I don't have that information.",
    "I couldn't say.",
    "I'm not aware of that.",
    "That is outside what I know.",
    "I cannot recall anything about that.",
    "I don't know anything about this.",
    "Unfortunately, I can't help with that question.",
    "I have no knowledge of that.",
    "I'm not able to provide an answer.",
    "I'd rather not guess; I don't know.",
    "Nothing I know answers that.",
    "I'm uncertain, so I can't say.",
    "That question is beyond what I know.",
)


def refusal_answers(path: str | None = None) -> list[str]:
    """Lethe's built-in refusals, or those of a user file (plain lines, JSON Lines or a JSON array)."""
    if not path:
        return list(REFUSALS)
    from lethe.data.tofu import load_refusals

    return load_refusals(path)
