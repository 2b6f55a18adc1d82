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
- ``gradnorm``   (optional, off by default; MIMIR's ``GradNormAttack``): G = (1/P) Σ_p ‖∇_p L(x)‖_q, the *mean
                  over parameter tensors* p of each tensor's gradient q-norm (not the global norm), over the P
                  trainable tensors that receive a gradient; L(x) is the mean NLL per scored token (every
                  sliding window in one backward). q = 2 (lethe) or ∞ (mimir, MIMIR's default), settable.
                  Reading: lethe scores −G (smaller gradient = member); mimir scores +G, MIMIR's own reading
                  (its raw score −G with lower = member). One backward pass per sample, so it is slow.

Input protocol (:mod:`lethe.audit.mia_protocol`): texts are encoded with the tokenizer's defaults, never
truncated: a text longer than the window (default the model's maximum positions) is scored by MIMIR's sliding
window (stride half the window). ``lethe`` (default) drops a leading chat-turn-marker BOS and appends EOS only
with ``add_eos``; ``mimir`` is MIMIR exactly. Rules that differ (``lethe`` / ``mimir``):
- min-k, min-k++: m = max(1, ⌊k·n⌋) / m = int(k·n), a sample with m = 0 scoring NaN;
  min-k++ variance floor 1e-6 / none.
- NaN: a sample non-finite in any attack is skipped from every attack (one sample set) / from that attack
  only (MIMIR's ``filter_out_nan``); each attack reports the counts it used.
- TPR at FPR x: FPR ≤ x / FPR < x (MIMIR's ``tpr[np.where(fpr < x)[0][-1]]``).
MIMIR's own per-sample scores are lower = member: each equals −(Lethe's score) of the same attack.

⌊k·n⌋ is computed as ⌊k·n + 1e-9⌋ (lethe) so that floating-point products such as 0.29·100 = 28.999… count 29.

Metrics per attack (members = positives):
- ROC-AUC (``sklearn.metrics.roc_auc_score``; ties count 1/2) and the ROC curve (``roc_curve``).
- TPR at FPR ∈ {0.1%, 1%, 5%}: the largest TPR among the ROC points (one per distinct score threshold,
  ``drop_intermediate=False``) whose FPR ≤ the target (< under the mimir protocol). Ties are never broken in
  the attacker's favour. The smallest non-zero FPR is 1/n_nonmembers: a target below it (fewer than
  1/target non-members, e.g. 0.1% with 70) cannot be measured, so its TPR and interval are ``None`` and
  ``tpr_at_<x>_fpr_note`` says why (a number there would be the TPR at FPR = 0 passed off as the TPR at the
  target). ``tpr_at_0_fpr``, the TPR with no false positive at all, is always given: it is what MIMIR's rule
  reads for such a target.
- 95% bootstrap percentile intervals for the AUC and the TPRs: members and non-members are resampled
  separately with replacement, ``n_bootstrap`` times, from a seeded ``numpy.random.Generator``.
- The stored curve (``roc``: ``fpr``, ``tpr``; ``roc_curve`` with its default ``drop_intermediate``) is thinned
  on a log-spaced FPR grid so a log-FPR plot stays faithful: FPR is cut into FPR = 0 plus ``ROC_LOG_BINS``
  bins between the smallest positive FPR (1/n_nonmembers) and 1, equal in log FPR, and the first and last
  ROC point of every bin are kept (so each bin's lowest and highest TPR survive). A curve with at most
  ``2·(ROC_LOG_BINS + 2)`` points is stored whole. Evenly spaced thinning along the curve would keep almost
  no points at FPR < 1%, the regime that matters.

Samples whose scores cannot be defined (a text with no tokens, no supervised tokens, a non-finite score for
any attack under lethe) are skipped explicitly: their indices and reasons are reported in ``skipped`` and
their per-sample score is ``None``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from lethe.audit.mia_protocol import DEFAULT_PROTOCOL, check_protocol, encode_text, model_positions, window_features
from lethe.audit.scoring import TokenScores, concat_scores, score_sequences
from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.models import check_vocab
from lethe.progress import progress

SIGN_CONVENTION = (
    "higher score = more likely member for every attack; loss, zlib and reference scores are negated "
    "statistics (-mean NLL, -mean NLL/zlib bytes, -(loss_target - loss_ref)); MIMIR's raw scores are the "
    "negations of these"
)
TPR_CONVENTION = (
    "tpr_at_X_fpr = largest TPR among ROC points (one per distinct threshold) with FPR {rule} X; "
    "members are positives; ties are not broken in the attacker's favour"
)
GRADNORM_READING = {
    "lethe": "gradnorm score = -mean over parameter tensors of ||grad||_{p}: a smaller gradient reads as member",
    "mimir": "gradnorm score = +mean over parameter tensors of ||grad||_{p}: MIMIR's reading (its raw -||grad|| "
             "with lower = member), so a larger gradient reads as member",
}
BATCH_ROW_TOKENS = 512  # a scoring batch holds at most batch_size x 512 padded tokens (its [B, T, V] logits)
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


def _lowest_mean(values: np.ndarray, k: float, protocol: str = DEFAULT_PROTOCOL) -> float:
    """Mean of the m smallest values: m = max(1, ⌊k·n⌋) (lethe) or int(k·n) (mimir); NaN when m = 0."""
    n = values.size
    m = max(1, math.floor(k * n + _FLOOR_EPS)) if protocol != "mimir" else int(n * k)
    if n == 0 or m == 0:
        return float("nan")
    return float(np.sort(values)[:m].mean())


def zlib_bytes(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (default compression level)."""
    return len(zlib.compress(text.encode("utf-8")))


def mia_scores(scores: Sequence[TokenScores], texts: Sequence[str],
               ks: Sequence[float] = (0.2, 0.4), protocol: str = DEFAULT_PROTOCOL) -> dict[str, np.ndarray]:
    """Per-sample ``loss``, ``zlib``, ``min_k_{k}`` and ``min_k_pp_{k}`` scores (higher = member), with the
    min-k rules of ``protocol``. A sample without supervised tokens gets NaN in every attack.
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
        var = ts.var.double() if protocol == "mimir" else ts.var.double().clamp(min=VAR_FLOOR)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (ts.logp.double() - ts.mu.double()).numpy() / np.sqrt(var.numpy())
        loss = -float(logp.mean())
        out["loss"][i] = -loss
        out["zlib"][i] = -loss / zlib_bytes(text)
        for k in ks:
            out[f"min_k_{_k_name(k)}"][i] = _lowest_mean(logp, k, protocol)
            out[f"min_k_pp_{_k_name(k)}"][i] = _lowest_mean(z, k, protocol)
    return out


# ------------------------------------------------------------------------------------------------ metrics


def _tpr_at_fpr_from_curve(fpr: np.ndarray, tpr: np.ndarray, target: float, strict: bool = False) -> float:
    ok = fpr < target - 1e-12 if strict else fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def fpr_resolvable(target: float, n_nonmembers: int) -> bool:
    """Whether ``n_nonmembers`` non-members resolve FPR ``target``: the smallest non-zero FPR, 1/n, is ≤ it."""
    return math.floor(target * n_nonmembers + _FLOOR_EPS) >= 1


def unresolvable_note(target: float, n_nonmembers: int) -> str:
    """Why the TPR at FPR ``target`` is not given: the one-line note of metrics.json and the reports."""
    return (f"not resolvable with {n_nonmembers} non-members: the smallest non-zero FPR is 1/{n_nonmembers} = "
            f"{100 / n_nonmembers:.2g}% > {100 * target:g}% (needs at least {math.ceil(1 / target - _FLOOR_EPS)})")


def _allowed_false_positives(target: float, n0: int, strict: bool) -> int:
    """The most false positives with FPR ≤ target (or < target when ``strict``) among n0 non-members."""
    if strict:
        return max(0, math.ceil(target * n0 - _FLOOR_EPS) - 1)
    return math.floor(target * n0 + _FLOOR_EPS)


def _fast_auc_tpr(members: np.ndarray, nonmembers: np.ndarray, strict: bool = False) -> tuple[float, list[float]]:
    """AUC (ties 1/2) and TPR at each FPR target, equal to the sklearn-based point estimates."""
    n1, n0 = members.size, nonmembers.size
    u = np.sort(nonmembers)
    less = np.searchsorted(u, members, side="left")
    leq = np.searchsorted(u, members, side="right")
    auc = float((less + 0.5 * (leq - less)).sum() / (n1 * n0))
    tprs = []
    for _, target in FPR_TARGETS:
        allowed = _allowed_false_positives(target, n0, strict)
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
                *, n_bootstrap: int = 1000, seed: int = 0, strict_fpr: bool = False) -> dict[str, Any]:
    """ROC-AUC, TPR at 0.1%/1%/5% FPR (FPR ≤ x, or < x with ``strict_fpr`` as MIMIR), their bootstrap 95%
    CIs and the (log-FPR thinned) ROC curve.

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
    result: dict[str, Any] = {"auc": auc, "auc_ci": None,
                              "tpr_at_0_fpr": _tpr_at_fpr_from_curve(fpr_all, tpr_all, 0.0)}
    n0 = nonmembers.size
    for label, target in FPR_TARGETS:
        result[f"tpr_at_{label}_fpr"] = (_tpr_at_fpr_from_curve(fpr_all, tpr_all, target, strict_fpr)
                                         if fpr_resolvable(target, n0) else None)
        result[f"tpr_at_{label}_fpr_ci"] = None
        if not fpr_resolvable(target, n0):
            result[f"tpr_at_{label}_fpr_note"] = unresolvable_note(target, n0)
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        reps = np.empty((int(n_bootstrap), 1 + len(FPR_TARGETS)))
        for b in range(int(n_bootstrap)):
            m = members[rng.integers(0, members.size, members.size)]
            u = nonmembers[rng.integers(0, nonmembers.size, nonmembers.size)]
            rep_auc, rep_tprs = _fast_auc_tpr(m, u, strict_fpr)
            reps[b] = [rep_auc, *rep_tprs]
        lo, hi = np.percentile(reps, [2.5, 97.5], axis=0)
        result["auc_ci"] = [float(lo[0]), float(hi[0])]
        for j, (label, target) in enumerate(FPR_TARGETS, start=1):
            if fpr_resolvable(target, n0):  # resampling keeps n0, hence the resolution
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


Feature = dict[str, Sequence[int]]


def _norm_p(p: float | str) -> float:
    value = float("inf") if str(p).lower() in ("inf", "infinity") else float(p)
    if value not in (1.0, 2.0, float("inf")):
        raise LetheError(f"gradnorm p must be 1, 2 or inf (MIMIR's choices), got {p!r}")
    return value


def gradnorm_scores(model: Any, samples: Sequence[Feature | Sequence[Feature]], p: float | str = 2.0,
                    reading: str = "lethe") -> np.ndarray:
    """GradNorm per sample: G = mean over parameter tensors of ‖∇ mean-NLL(x)‖_p; the score is −G (lethe:
    smaller gradient = member) or +G (mimir: MIMIR's reading).

    A sample is one feature or the list of its sliding-window features (one loss over all their scored
    tokens, one backward). Over the trainable tensors that receive a gradient (batch 1; slow); NaN for a
    sample without supervised tokens.
    """
    p = _norm_p(p)
    sign = 1.0 if reading == "mimir" else -1.0
    params = [w for w in model.parameters() if w.requires_grad]
    if not params:
        raise LetheError("gradnorm attack: the model has no trainable parameters")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.full(len(samples), np.nan)
    try:
        with torch.enable_grad():
            for i, sample in enumerate(progress(samples, "gradient norms", unit="texts")):
                parts = [sample] if isinstance(sample, dict) else list(sample)
                total, count = None, 0
                for feature in parts:
                    labels = torch.as_tensor([feature["labels"]], dtype=torch.long, device=device)[:, 1:]
                    n = int(labels.ne(IGNORE_INDEX).sum())
                    if n == 0:
                        continue
                    input_ids = torch.as_tensor([feature["input_ids"]], dtype=torch.long, device=device)
                    logits = model(input_ids=input_ids).logits[:, :-1].float()
                    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                                            ignore_index=IGNORE_INDEX, reduction="sum")
                    total, count = (nll if total is None else total + nll), count + n
                if total is None:
                    continue
                grads = torch.autograd.grad(total / count, params, allow_unused=True)
                norms = [g.double().norm(p) for g in grads if g is not None]
                out[i] = sign * float(torch.stack(norms).mean())
    finally:
        model.train(was_training)
    return out


def text_windows(model: Any, tokenizer: Any, texts: Sequence[str], *, protocol: str = DEFAULT_PROTOCOL,
                 add_eos: bool = False, window: int = 0) -> list[list[dict[str, list[int]]]]:
    """Each text's sliding-window features under ``protocol`` (window 0 = the model's maximum positions,
    stride window // 2); LetheError for a window beyond the model's positions."""
    positions = model_positions(model)
    window = window or positions
    if window > positions:
        raise LetheError(f"MIA window {window} exceeds the model's {positions} positions (use at most {positions})")
    return [window_features(encode_text(tokenizer, text, protocol, add_eos), window, window // 2) for text in texts]


def score_texts(model: Any, tokenizer: Any, per_text: Sequence[Sequence[dict[str, list[int]]]], *,
                batch_size: int = 16) -> list[TokenScores]:
    """One scoring pass over every window of every text; each text's windows joined in order."""
    flat = [feature for features in per_text for feature in features]
    scores = score_sequences(model, flat, batch_size=batch_size, pad_id=_pad_id(tokenizer),
                             max_tokens=batch_size * BATCH_ROW_TOKENS, pack=True)  # rows without padding
    joined, start = [], 0
    for features in per_text:
        joined.append(concat_scores(scores[start:start + len(features)]))
        start += len(features)
    return joined


def run_mia(model: Any, tokenizer: Any, members: Sequence[str], nonmembers: Sequence[str], *,
            reference: tuple[Any, Any] | None = None, ks: Sequence[float] = (0.2, 0.4),
            gradnorm: bool = False, max_length: int = 0, batch_size: int = 16, n_bootstrap: int = 1000,
            seed: int = 0, protocol: str = DEFAULT_PROTOCOL, add_eos: bool = False,
            gradnorm_p: float | str | None = None) -> dict[str, Any]:
    """Score members and non-members with every attack; return the ``mia.json`` content.

    Texts are encoded under ``protocol`` (:mod:`lethe.audit.mia_protocol`: the tokenizer's defaults, EOS only
    with ``add_eos``, sliding windows of ``max_length`` tokens, 0 = the model's maximum positions).
    ``reference`` is an optional ``(model, tokenizer)`` pair for the reference-model attack (its own
    tokenization and window). ``gradnorm_p`` defaults to 2 (lethe) / inf (mimir). ``n_members`` /
    ``n_nonmembers`` count the samples that were scored; per-sample scores are listed in input order with
    ``None`` for skipped samples.
    """
    check_protocol(protocol)
    members, nonmembers = list(members), list(nonmembers)
    _check_texts(members, nonmembers)
    if max_length < 0 or max_length == 1:
        raise LetheError(f"MIA window (max_length) must be 0 (the model's positions) or >= 2, got {max_length}")
    if add_eos and protocol == "mimir":
        raise LetheError("add_eos: MIMIR never appends EOS (use the lethe protocol to score an EOS)")
    ks = _check_ks(ks)
    p = _norm_p(gradnorm_p if gradnorm_p is not None else (float("inf") if protocol == "mimir" else 2.0))
    check_vocab(model, tokenizer, where="MIA target model")
    if reference is not None:
        check_vocab(*reference, where="MIA reference model")
    texts = members + nonmembers
    per_text = text_windows(model, tokenizer, texts, protocol=protocol, add_eos=add_eos, window=max_length)
    token_scores = score_texts(model, tokenizer, per_text, batch_size=batch_size)
    attack_scores = mia_scores(token_scores, texts, ks, protocol)
    if reference is not None:
        attack_scores["reference"] = reference_scores(token_scores, *reference, texts, batch_size=batch_size,
                                                      protocol=protocol, add_eos=add_eos)
    if gradnorm:
        attack_scores["gradnorm"] = gradnorm_scores(model, per_text, p, reading=protocol)
    window = max_length or model_positions(model)
    config = {"protocol": protocol, "ks": ks, "window": window, "stride": window // 2, "add_eos": bool(add_eos),
              "n_bootstrap": int(n_bootstrap), "seed": seed, "reference": reference is not None,
              "gradnorm": bool(gradnorm), "n_windowed": sum(len(w) > 1 for w in per_text)}
    if gradnorm:
        config["gradnorm_p"] = "inf" if math.isinf(p) else p
    return mia_result(attack_scores, len(members), _unscorable(tokenizer, texts, token_scores), config=config,
                      n_bootstrap=n_bootstrap, seed=seed, protocol=protocol)


def _check_texts(members: list[Any], nonmembers: list[Any]) -> None:
    if not members or not nonmembers:
        raise LetheError(f"MIA needs members and non-members, got {len(members)} members and "
                         f"{len(nonmembers)} non-members")
    for name, texts in (("members", members), ("nonmembers", nonmembers)):
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise LetheError(f"MIA {name}: item {bad[0]} is {type(texts[bad[0]]).__name__}, not a string")


def reference_scores(target_scores: Sequence[TokenScores], ref_model: Any, ref_tokenizer: Any,
                     texts: Sequence[str], *, batch_size: int = 16, protocol: str = DEFAULT_PROTOCOL,
                     add_eos: bool = False) -> np.ndarray:
    """−(L_target − L_ref) per sample, each loss over that model's own tokenization (and window) of the text."""
    per_text = text_windows(ref_model, ref_tokenizer, texts, protocol=protocol, add_eos=add_eos)
    ref = score_texts(ref_model, ref_tokenizer, per_text, batch_size=batch_size)
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
               n_bootstrap: int = 1000, seed: int = 0, protocol: str = DEFAULT_PROTOCOL) -> dict[str, Any]:
    """The ``mia.json`` content from per-sample scores (members first, then non-members, higher = member).

    ``reasons`` maps sample indices (in the pooled order) that must be skipped to why. lethe: any sample with
    a non-finite score in any attack is skipped too, with its reason, and every attack is evaluated on the
    same remaining samples. mimir: a non-finite score drops the sample from that attack only (each attack
    lists its ``n_members`` / ``n_nonmembers``; an attack left without members or non-members is listed in
    ``dropped_attacks``), and TPR is read at FPR < x. Skipped samples have score ``None``.
    """
    check_protocol(protocol)
    scores = {name: np.asarray(values, dtype=np.float64) for name, values in attack_scores.items()}
    sizes = {values.size for values in scores.values()}
    if len(sizes) != 1:
        raise LetheError(f"MIA: attacks scored different numbers of samples ({sorted(sizes)})")
    n = sizes.pop()
    if not 0 < n_members < n:
        raise LetheError(f"MIA: {n_members} members out of {n} samples (need members and non-members)")
    per_attack = protocol == "mimir"
    reasons = dict(reasons or {}) if per_attack else _nonfinite_reasons(scores, n, reasons or {})
    keep = np.array([i not in reasons for i in range(n)])
    is_member = np.arange(n) < n_members
    n_kept_mem, n_kept_non = int((keep & is_member).sum()), int((keep & ~is_member).sum())
    if n_kept_mem == 0 or n_kept_non == 0:
        raise LetheError(f"MIA: after skipping unscorable samples {n_kept_mem} members and {n_kept_non} "
                         "non-members remain (need at least one of each)")
    attacks: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    for name, values in scores.items():
        used = keep & np.isfinite(values)
        n_mem, n_non = int((used & is_member).sum()), int((used & ~is_member).sum())
        if n_mem == 0 or n_non == 0:
            dropped[name] = f"non-finite for every {'member' if n_mem == 0 else 'non-member'}"
            continue
        metrics = roc_metrics(values[used & is_member], values[used & ~is_member],
                              n_bootstrap=n_bootstrap, seed=seed, strict_fpr=per_attack)
        listed = [float(v) if ok else None for v, ok in zip(values, used, strict=True)]
        metrics["scores"] = {"members": listed[:n_members], "nonmembers": listed[n_members:]}
        metrics["n_members"], metrics["n_nonmembers"] = n_mem, n_non
        attacks[name] = metrics
    if not attacks:
        raise LetheError(f"MIA: no attack has finite scores for members and non-members ({dropped})")
    result = {
        "protocol": protocol,
        "sign_convention": SIGN_CONVENTION,
        "tpr_convention": TPR_CONVENTION.format(rule="<" if per_attack else "<="),
        "nan_policy": ("a non-finite score drops the sample from that attack only (MIMIR)" if per_attack else
                       "a sample non-finite in any attack is skipped from every attack"),
        "n_members": n_kept_mem,
        "n_nonmembers": n_kept_non,
        "skipped": _skipped(reasons, n_members),
        "config": dict(config or {}),
        "attacks": attacks,
    }
    if "gradnorm" in scores:
        p = (config or {}).get("gradnorm_p", 2.0)
        result["gradnorm_reading"] = GRADNORM_READING[protocol].format(p=p)
    if dropped:
        result["dropped_attacks"] = dropped
    return result
