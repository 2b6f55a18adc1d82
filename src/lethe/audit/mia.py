"""Membership-inference attacks (MIA) on a causal LM, computed from the one shared scoring pass.

Sign convention: every attack score is oriented so that **higher = more likely a member** (a training
sample). Statistics that are lower for members (losses, gradient norms) are negated.

For a sample x with n supervised target tokens and per-token log p_t = log p(x_t | x_<t), next-token
distribution statistics μ_t = Σ_v p_v log p_v and σ_t² = Σ_v p_v (log p_v)² − μ_t² (see
:mod:`lethe.audit.scoring`):

- ``loss``       (Yeom et al. 2018; as in MIMIR, Duan et al. 2024):   score = (1/n) Σ_t log p_t = −L(x).
- ``zlib``       (Carlini et al. 2021, "Extracting Training Data from LLMs"):
                  score = −L(x) / |zlib(x)|, with |zlib(x)| = len(zlib.compress(text.encode("utf-8"))) bytes.
- ``min_k_{k}``  (Min-K%, Shi et al. 2024): score = mean of the m = max(1, ⌊k·n⌋) smallest log p_t.
- ``min_k_pp_{k}`` (Min-K%++, Zhang et al. 2024): z_t = (log p_t − μ_t) / sqrt(max(σ_t², 1e-6)),
                  score = mean of the m = max(1, ⌊k·n⌋) smallest z_t.
- ``reference``  (Carlini et al. 2021; MIMIR "ref"): score = −(L_target(x) − L_ref(x)); each model's loss is
                  the mean NLL per token of its *own* tokenization of the same text.
- ``gradnorm``   (optional, off by default; MIMIR's ``GradNormAttack``): score = −(1/P) Σ_p ‖∇_p L(x)‖₂, the
                  negated *mean over parameter tensors* p of each tensor's gradient L2 norm (not the global
                  norm over all parameters), over the P trainable tensors that receive a gradient; L(x) is the
                  mean NLL per supervised token. One backward pass per sample (batch size 1), so it is slow.

⌊k·n⌋ is computed as ⌊k·n + 1e-9⌋ so that floating-point products such as 0.29·100 = 28.999… count 29.

Metrics per attack (members = positives):
- ROC-AUC (``sklearn.metrics.roc_auc_score``; ties count 1/2) and the ROC curve (``roc_curve``).
- TPR at FPR ∈ {0.1%, 1%, 5%}: the largest TPR among the ROC points (one per distinct score threshold,
  ``drop_intermediate=False``) whose FPR ≤ the target. Ties are never broken in the attacker's favour; with
  fewer than 1/target non-members this is the TPR at FPR = 0 (the resolution is 1/n_nonmembers).
- 95% bootstrap percentile intervals for the AUC and the TPRs: members and non-members are resampled
  separately with replacement, ``n_bootstrap`` times, from a seeded ``numpy.random.Generator``.
- The stored curve (``roc``: ``fpr``, ``tpr``; ``roc_curve`` with its default ``drop_intermediate``) is thinned
  on a log-spaced FPR grid so a log-FPR plot stays faithful: FPR is cut into FPR = 0 plus ``ROC_LOG_BINS``
  bins between the smallest positive FPR (1/n_nonmembers) and 1, equal in log FPR, and the first and last
  ROC point of every bin are kept (so each bin's lowest and highest TPR survive). A curve with at most
  ``2·(ROC_LOG_BINS + 2)`` points is stored whole. Evenly spaced thinning along the curve would keep almost
  no points at FPR < 1%, the regime that matters.

Samples whose scores cannot be defined (a text with no tokens, no supervised tokens, a non-finite score for
any attack) are skipped explicitly: their indices and reasons are reported in ``skipped`` and their
per-sample score is ``None``; every attack is evaluated on the same remaining samples.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from lethe.audit.scoring import TokenScores, score_sequences
from lethe.data.formatting import encode_document
from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.models import check_vocab

SIGN_CONVENTION = (
    "higher score = more likely member for every attack; loss, zlib, reference and gradnorm scores are "
    "negated statistics (-mean NLL, -mean NLL/zlib bytes, -(loss_target - loss_ref), "
    "-mean over parameter tensors of ||grad||_2)"
)
TPR_CONVENTION = (
    "tpr_at_X_fpr = largest TPR among ROC points (one per distinct threshold) with FPR <= X; "
    "members are positives; ties are not broken in the attacker's favour"
)
FPR_TARGETS: tuple[tuple[str, float], ...] = (("0.1%", 0.001), ("1%", 0.01), ("5%", 0.05))
VAR_FLOOR = 1e-6
ROC_LOG_BINS = 100
_FLOOR_EPS = 1e-9


def _k_name(k: float) -> str:
    return f"{k:g}"


def _check_ks(ks: Sequence[float]) -> list[float]:
    ks = list(dict.fromkeys(float(k) for k in ks))
    if not ks:
        raise LetheError("min-k attacks need at least one k (fraction of tokens), got none")
    for k in ks:
        if not 0.0 < k <= 1.0:
            raise LetheError(f"min-k fraction k must be in (0, 1], got {k}")
    return ks


def _lowest_mean(values: np.ndarray, k: float) -> float:
    """Mean of the max(1, ⌊k·n⌋) smallest values (NaN when empty)."""
    n = values.size
    if n == 0:
        return float("nan")
    m = max(1, math.floor(k * n + _FLOOR_EPS))
    return float(np.sort(values)[:m].mean())


def zlib_bytes(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (default compression level)."""
    return len(zlib.compress(text.encode("utf-8")))


def mia_scores(scores: Sequence[TokenScores], texts: Sequence[str],
               ks: Sequence[float] = (0.2, 0.4)) -> dict[str, np.ndarray]:
    """Per-sample ``loss``, ``zlib``, ``min_k_{k}`` and ``min_k_pp_{k}`` scores (higher = member).

    A sample without supervised tokens gets NaN in every attack.
    """
    if len(scores) != len(texts):
        raise LetheError(f"mia_scores: {len(scores)} token scores but {len(texts)} texts")
    ks = _check_ks(ks)
    names = ["loss", "zlib"] + [f"min_k_{_k_name(k)}" for k in ks] + [f"min_k_pp_{_k_name(k)}" for k in ks]
    out = {name: np.full(len(scores), np.nan) for name in names}
    for i, (ts, text) in enumerate(zip(scores, texts, strict=True)):
        if ts.n == 0:
            continue
        logp = ts.logp.double().numpy()
        z = ((ts.logp.double() - ts.mu.double()) / ts.var.double().clamp(min=VAR_FLOOR).sqrt()).numpy()
        loss = -float(logp.mean())
        out["loss"][i] = -loss
        out["zlib"][i] = -loss / zlib_bytes(text)
        for k in ks:
            out[f"min_k_{_k_name(k)}"][i] = _lowest_mean(logp, k)
            out[f"min_k_pp_{_k_name(k)}"][i] = _lowest_mean(z, k)
    return out


# ------------------------------------------------------------------------------------------------ metrics


def _tpr_at_fpr_from_curve(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def _fast_auc_tpr(members: np.ndarray, nonmembers: np.ndarray) -> tuple[float, list[float]]:
    """AUC (ties 1/2) and TPR at each FPR target, equal to the sklearn-based point estimates."""
    n1, n0 = members.size, nonmembers.size
    u = np.sort(nonmembers)
    less = np.searchsorted(u, members, side="left")
    leq = np.searchsorted(u, members, side="right")
    auc = float((less + 0.5 * (leq - less)).sum() / (n1 * n0))
    tprs = []
    for _, target in FPR_TARGETS:
        allowed = math.floor(target * n0 + _FLOOR_EPS)  # false positives allowed
        if allowed >= n0:
            tprs.append(1.0)
        else:
            cut = u[n0 - 1 - allowed]  # the (allowed+1)-th largest non-member score
            tprs.append(float((members > cut).sum() / n1))
    return auc, tprs


def thin_roc(fpr: np.ndarray, tpr: np.ndarray, bins: int = ROC_LOG_BINS) -> tuple[list[float], list[float]]:
    """The first and last ROC point of FPR = 0 and of each of ``bins`` log-spaced FPR bins (see the module doc)."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    if fpr.size > 2 * (bins + 2):
        positive = fpr[fpr > 0]
        edges = np.geomspace(positive.min(), 1.0, bins + 1)[1:-1]
        bin_of = np.where(fpr > 0, 1 + np.searchsorted(edges, fpr, side="right"), 0)  # non-decreasing
        change = np.flatnonzero(np.diff(bin_of))  # last point of a bin; change + 1 is the next bin's first
        keep = np.unique(np.concatenate([[0, fpr.size - 1], change, change + 1]))
        fpr, tpr = fpr[keep], tpr[keep]
    return [float(x) for x in fpr], [float(x) for x in tpr]


def roc_metrics(member_scores: Sequence[float] | np.ndarray, nonmember_scores: Sequence[float] | np.ndarray,
                *, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """ROC-AUC, TPR at 0.1%/1%/5% FPR, their bootstrap 95% CIs and the (log-FPR thinned) ROC curve.

    Members are the positive class; scores must be finite and oriented higher = member.
    CIs are ``None`` when ``n_bootstrap`` is 0.
    """
    members = np.asarray(member_scores, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    if members.size == 0 or nonmembers.size == 0:
        raise LetheError(f"ROC metrics need members and non-members, got {members.size} members and "
                         f"{nonmembers.size} non-members")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise LetheError("ROC metrics: scores contain NaN or inf (skip such samples first)")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0:
        raise LetheError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    pooled = np.concatenate([members, nonmembers])
    auc = float(roc_auc_score(labels, pooled))
    fpr_all, tpr_all, _ = roc_curve(labels, pooled, drop_intermediate=False)
    result: dict[str, Any] = {"auc": auc, "auc_ci": None}
    for label, target in FPR_TARGETS:
        result[f"tpr_at_{label}_fpr"] = _tpr_at_fpr_from_curve(fpr_all, tpr_all, target)
        result[f"tpr_at_{label}_fpr_ci"] = None
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        reps = np.empty((int(n_bootstrap), 1 + len(FPR_TARGETS)))
        for b in range(int(n_bootstrap)):
            m = members[rng.integers(0, members.size, members.size)]
            u = nonmembers[rng.integers(0, nonmembers.size, nonmembers.size)]
            rep_auc, rep_tprs = _fast_auc_tpr(m, u)
            reps[b] = [rep_auc, *rep_tprs]
        lo, hi = np.percentile(reps, [2.5, 97.5], axis=0)
        result["auc_ci"] = [float(lo[0]), float(hi[0])]
        for j, (label, _) in enumerate(FPR_TARGETS, start=1):
            result[f"tpr_at_{label}_fpr_ci"] = [float(lo[j]), float(hi[j])]
    fpr, tpr, _ = roc_curve(labels, pooled)
    result["roc"] = dict(zip(("fpr", "tpr"), thin_roc(fpr, tpr), strict=True))
    return result


# ------------------------------------------------------------------------------------------- model passes


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _losses(scores: Sequence[TokenScores]) -> np.ndarray:
    return np.array([ts.mean_nll for ts in scores], dtype=np.float64)


def gradnorm_scores(model: Any, features: Sequence[dict[str, Sequence[int]]]) -> np.ndarray:
    """MIMIR's GradNorm: −mean over parameter tensors of ‖∇_p mean-NLL(x)‖₂ per sample.

    Over the trainable tensors that receive a gradient (batch 1; slow); NaN for a sample without supervised
    tokens.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LetheError("gradnorm attack: the model has no trainable parameters")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.full(len(features), np.nan)
    try:
        with torch.enable_grad():
            for i, feature in enumerate(features):
                labels = torch.as_tensor([feature["labels"]], dtype=torch.long, device=device)
                if not labels[:, 1:].ne(IGNORE_INDEX).any():
                    continue
                input_ids = torch.as_tensor([feature["input_ids"]], dtype=torch.long, device=device)
                logits = model(input_ids=input_ids).logits[:, :-1].float()
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
                )
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                norms = [g.double().norm() for g in grads if g is not None]
                out[i] = -float(torch.stack(norms).mean())
    finally:
        model.train(was_training)
    return out


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[dict[str, list[int]]]:
    return [encode_document(tokenizer, text, max_length) for text in texts]


def run_mia(model: Any, tokenizer: Any, members: Sequence[str], nonmembers: Sequence[str], *,
            reference: tuple[Any, Any] | None = None, ks: Sequence[float] = (0.2, 0.4),
            gradnorm: bool = False, max_length: int = 512, batch_size: int = 16, n_bootstrap: int = 1000,
            seed: int = 0) -> dict[str, Any]:
    """Score members and non-members with every attack; return the ``mia.json`` content.

    Texts are encoded with :func:`encode_document` (BOS + text + EOS, every token after BOS supervised).
    ``reference`` is an optional ``(model, tokenizer)`` pair for the reference-model attack.
    ``n_members`` / ``n_nonmembers`` count the samples that were scored (inputs minus skipped); per-sample
    scores are listed in input order with ``None`` for skipped samples.
    """
    members, nonmembers = list(members), list(nonmembers)
    _check_texts(members, nonmembers)
    if max_length < 2:
        raise LetheError(f"MIA max_length must be at least 2 tokens, got {max_length}")
    ks = _check_ks(ks)
    check_vocab(model, tokenizer, where="MIA target model")
    if reference is not None:
        check_vocab(*reference, where="MIA reference model")
    texts = members + nonmembers
    features = _encode(tokenizer, texts, max_length)
    token_scores = score_sequences(model, features, batch_size=batch_size, pad_id=_pad_id(tokenizer))
    attack_scores = mia_scores(token_scores, texts, ks)
    if reference is not None:
        attack_scores["reference"] = reference_scores(token_scores, *reference, texts, max_length=max_length,
                                                      batch_size=batch_size)
    if gradnorm:
        attack_scores["gradnorm"] = gradnorm_scores(model, features)
    config = {"ks": ks, "max_length": max_length, "n_bootstrap": int(n_bootstrap), "seed": seed,
              "reference": reference is not None, "gradnorm": bool(gradnorm)}
    return mia_result(attack_scores, len(members), _unscorable(tokenizer, texts, token_scores), config=config,
                      n_bootstrap=n_bootstrap, seed=seed)


def _check_texts(members: list[Any], nonmembers: list[Any]) -> None:
    if not members or not nonmembers:
        raise LetheError(f"MIA needs members and non-members, got {len(members)} members and "
                         f"{len(nonmembers)} non-members")
    for name, texts in (("members", members), ("nonmembers", nonmembers)):
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise LetheError(f"MIA {name}: item {bad[0]} is {type(texts[bad[0]]).__name__}, not a string")


def reference_scores(target_scores: Sequence[TokenScores], ref_model: Any, ref_tokenizer: Any,
                     texts: Sequence[str], *, max_length: int, batch_size: int) -> np.ndarray:
    """−(L_target − L_ref) per sample, each loss over that model's own tokenization of the text."""
    features = _encode(ref_tokenizer, texts, max_length)
    ref = score_sequences(ref_model, features, batch_size=batch_size, pad_id=_pad_id(ref_tokenizer))
    return -(_losses(target_scores) - _losses(ref))


def _unscorable(tokenizer: Any, texts: Sequence[str], token_scores: Sequence[TokenScores]) -> dict[int, str]:
    """Samples that cannot be scored whatever the attack: empty texts and texts without supervised tokens."""
    reasons = {i: "empty text (no tokens)" for i, text in enumerate(texts)
               if not tokenizer(text, add_special_tokens=False)["input_ids"]}
    for i, ts in enumerate(token_scores):
        if ts.n == 0 and i not in reasons:
            reasons[i] = "no supervised tokens"
    return reasons


def _nonfinite_reasons(attack_scores: Mapping[str, np.ndarray], n: int, known: Mapping[int, str]) -> dict[int, str]:
    reasons = dict(known)
    for i in range(n):
        bad = [name for name, values in attack_scores.items() if not math.isfinite(values[i])]
        if bad and i not in reasons:
            reasons[i] = f"non-finite score ({', '.join(bad)})"
    return reasons


def _skipped(reasons: Mapping[int, str], n_members: int) -> dict[str, Any]:
    order = sorted(reasons)
    return {
        "members": [i for i in order if i < n_members],
        "nonmembers": [i - n_members for i in order if i >= n_members],
        "reasons": {
            "members": {str(i): reasons[i] for i in order if i < n_members},
            "nonmembers": {str(i - n_members): reasons[i] for i in order if i >= n_members},
        },
    }


def mia_result(attack_scores: Mapping[str, Sequence[float] | np.ndarray], n_members: int,
               reasons: Mapping[int, str] | None = None, *, config: Mapping[str, Any] | None = None,
               n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The ``mia.json`` content from per-sample scores (members first, then non-members, higher = member).

    ``reasons`` maps sample indices (in the pooled order) that must be skipped to why; any sample with a
    non-finite score in any attack is skipped too, with its reason. Every attack is evaluated on the same
    remaining samples; skipped samples are listed in ``skipped`` and have score ``None``.
    """
    scores = {name: np.asarray(values, dtype=np.float64) for name, values in attack_scores.items()}
    sizes = {values.size for values in scores.values()}
    if len(sizes) != 1:
        raise LetheError(f"MIA: attacks scored different numbers of samples ({sorted(sizes)})")
    n = sizes.pop()
    if not 0 < n_members < n:
        raise LetheError(f"MIA: {n_members} members out of {n} samples (need members and non-members)")
    reasons = _nonfinite_reasons(scores, n, reasons or {})
    keep = np.array([i not in reasons for i in range(n)])
    is_member = np.arange(n) < n_members
    n_kept_mem, n_kept_non = int((keep & is_member).sum()), int((keep & ~is_member).sum())
    if n_kept_mem == 0 or n_kept_non == 0:
        raise LetheError(f"MIA: after skipping unscorable samples {n_kept_mem} members and {n_kept_non} "
                         "non-members remain (need at least one of each)")
    attacks: dict[str, Any] = {}
    for name, values in scores.items():
        metrics = roc_metrics(values[keep & is_member], values[keep & ~is_member],
                              n_bootstrap=n_bootstrap, seed=seed)
        listed = [float(v) if ok else None for v, ok in zip(values, keep, strict=True)]
        metrics["scores"] = {"members": listed[:n_members], "nonmembers": listed[n_members:]}
        attacks[name] = metrics
    return {
        "sign_convention": SIGN_CONVENTION,
        "tpr_convention": TPR_CONVENTION,
        "n_members": n_kept_mem,
        "n_nonmembers": n_kept_non,
        "skipped": _skipped(reasons, n_members),
        "config": dict(config or {}),
        "attacks": attacks,
    }
