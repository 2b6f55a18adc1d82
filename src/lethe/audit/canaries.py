"""Canary exposure (Secret Sharer, Carlini et al. 2019, "The Secret Sharer: Evaluating and Testing
Unintended Memorization in Neural Networks").

A canary is a training text ``prefix + " " + secret`` whose secret s is drawn from a candidate space R
(e.g. all 10^6 six-digit strings). The log-perplexity of a candidate r is the summed NLL of its tokens
given the prefix (nats; the prefix tokens are not scored):

    Px(r) = − Σ_{t ∈ tokens(r)} log p(x_t | BOS, prefix, x_<t).

The rank of the secret is its position (1 = lowest Px) among all candidates, and

    exposure(s) = log2 |R| − log2 rank(s)       ∈ [0, log2 |R|].

Enumerating R is too slow on CPU for large spaces, so the rank is estimated from m candidates sampled
uniformly from R (Carlini et al. 2019, §4.2 "approximating exposure"):

- interpolation: rank ≈ 1 + |R| · #{sampled r : Px(r) < Px(s)} / m   (capped at |R|);
- skew-normal extrapolation, when s has a lower Px than every sample: fit a skew-normal distribution to the
  sampled Px (``scipy.stats.skewnorm.fit``) and take rank ≈ 1 + |R| · CDF(Px(s)), capped at |R|/m (where
  interpolation would land with one sample below s) and floored at 1, so exposure ≤ log2 |R|.
- exact, when |R| ≤ m: every candidate is scored and rank = 1 + #{r ≠ s : Px(r) < Px(s)}.

Candidate spaces: ``format: "digits{N}"`` — N decimal digits written like the secret (space-separated
"4 8 1 9 2 7" as the fictional world writes them, or contiguous "481927"), |R| = 10^N; or an explicit
``candidates`` list (deduplicated; it must contain the secret), |R| = its length.
Samples are drawn from a generator seeded by (seed, CRC32 of the canary id), so a canary's estimate does
not depend on the other canaries in the list.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from lethe.audit.scoring import score_sequences
from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.models import check_vocab
from lethe.progress import progress

_DIGITS_FORMAT = re.compile(r"digits([1-9][0-9]*)")
MIN_SAMPLES = 10


def exposure_from_rank(rank: float, space_size: int) -> float:
    """Exposure = log2 |R| − log2 rank, for 1 ≤ rank ≤ |R|."""
    if space_size < 1:
        raise LetheError(f"exposure: candidate space size must be at least 1, got {space_size}")
    if not 1 <= rank <= space_size:
        raise LetheError(f"exposure: rank must be in [1, {space_size}], got {rank}")
    return math.log2(space_size) - math.log2(rank)


def estimate_rank(canary_logppl: float, sample_logppl: np.ndarray, space_size: int) -> tuple[float, str]:
    """Estimated rank (1 = best) of the canary in a space of ``space_size`` from sampled log-perplexities.

    Returns ``(rank, "interpolation")`` when some samples have a lower log-perplexity than the canary, else
    ``(rank, "skewnorm")`` from a skew-normal fit of the samples (see the module docstring).
    """
    samples = np.asarray(sample_logppl, dtype=np.float64).ravel()
    if samples.size == 0:
        raise LetheError("estimate_rank: no sampled candidate log-perplexities")
    if not (np.isfinite(samples).all() and math.isfinite(canary_logppl)):
        raise LetheError("estimate_rank: log-perplexities contain NaN or inf")
    if space_size < 1:
        raise LetheError(f"estimate_rank: candidate space size must be at least 1, got {space_size}")
    below = int((samples < canary_logppl).sum())
    if below:
        return min(1.0 + space_size * below / samples.size, float(space_size)), "interpolation"
    cdf = 0.0
    if samples.std() > 0:
        try:
            shape, loc, scale = stats.skewnorm.fit(samples)
            cdf = float(stats.skewnorm.cdf(canary_logppl, shape, loc, scale))
        except (ValueError, RuntimeError, FloatingPointError):
            cdf = float("nan")
        if not math.isfinite(cdf):  # a failed fit: fall back to a normal fit
            cdf = float(stats.norm.cdf(canary_logppl, samples.mean(), samples.std()))
    cap = space_size / samples.size
    return max(1.0, min(1.0 + space_size * cdf, cap)), "skewnorm"


# ------------------------------------------------------------------------------------- candidate spaces


class _Space:
    """A canary's candidate space: its size, a uniform sampler and (if small) an enumerator."""

    def __init__(self, canary: dict[str, Any], where: str) -> None:
        secret = canary["secret"]
        self.candidates: list[str] | None = None
        if canary.get("candidates") is not None:
            cands = canary["candidates"]
            if not isinstance(cands, list) or not cands or not all(isinstance(c, str) and c for c in cands):
                raise LetheError(f"{where}: 'candidates' must be a non-empty list of non-empty strings")
            self.candidates = list(dict.fromkeys(cands))
            if secret not in self.candidates:
                raise LetheError(f"{where}: secret {secret!r} is not in its 'candidates' list")
            self.size = len(self.candidates)
            self.kind = "candidates"
            return
        fmt = canary.get("format")
        match = _DIGITS_FORMAT.fullmatch(fmt) if isinstance(fmt, str) else None
        if match is None:
            raise LetheError(f"{where}: unknown canary format {fmt!r} (use 'digits<N>' or give 'candidates')")
        self.n_digits = int(match.group(1))
        if re.fullmatch(r"[0-9]( [0-9])*", secret) and len(secret) == 2 * self.n_digits - 1:
            self.sep = " "
        elif re.fullmatch(r"[0-9]+", secret) and len(secret) == self.n_digits:
            self.sep = ""
        else:
            raise LetheError(f"{where}: secret {secret!r} is not in format {fmt!r} ({self.n_digits} digits, "
                             "space-separated or contiguous)")
        self.size = 10**self.n_digits
        self.kind = fmt

    def enumerate(self) -> list[str]:
        if self.candidates is not None:
            return list(self.candidates)
        return [self.sep.join(d) for d in itertools.product("0123456789", repeat=self.n_digits)]

    def sample(self, rng: np.random.Generator, m: int) -> list[str]:
        if self.candidates is not None:
            picks = rng.choice(len(self.candidates), size=m, replace=False)
            return [self.candidates[i] for i in picks]
        digits = rng.integers(0, 10, size=(m, self.n_digits))
        return [self.sep.join(str(d) for d in row) for row in digits]


def _validate(canary: Any, index: int) -> tuple[dict[str, Any], str]:
    if not isinstance(canary, dict):
        raise LetheError(f"canary {index}: expected a JSON object, got {type(canary).__name__}")
    where = f"canary {canary.get('id', index)!r}"
    for field in ("prefix", "secret"):
        if not isinstance(canary.get(field), str) or not canary[field].strip():
            raise LetheError(f"{where}: field '{field}' must be a non-empty string")
    reps = canary.get("repetitions")
    if reps is not None and (isinstance(reps, bool) or not isinstance(reps, int) or reps < 0):
        raise LetheError(f"{where}: 'repetitions' must be a non-negative integer, got {reps!r}")
    return canary, where


def _features(tokenizer: Any, prefix: str, candidates: Sequence[str]) -> list[dict[str, list[int]]]:
    """BOS + tokens(prefix + " " + candidate); only tokens after the prefix's tokens are supervised.

    The full text is tokenized at once (as in training); the supervised part starts after the longest
    common token prefix with the tokenized prefix, so a token straddling the boundary counts as secret.
    """
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    head = bos + tokenizer(prefix, add_special_tokens=False)["input_ids"]
    encoded = tokenizer([f"{prefix} {c}" for c in candidates], add_special_tokens=False)["input_ids"]
    features = []
    for ids in encoded:
        ids = bos + list(ids)
        common = 0
        while common < min(len(ids), len(head)) and ids[common] == head[common]:
            common += 1
        common = max(common, 1)  # the first token is never a target
        if common >= len(ids):
            raise LetheError(f"canary prefix {prefix!r}: a candidate adds no tokens after the prefix")
        features.append({"input_ids": ids, "labels": [IGNORE_INDEX] * common + ids[common:]})
    return features


def _log_perplexities(model: Any, tokenizer: Any, prefix: str, candidates: Sequence[str],
                      batch_size: int) -> np.ndarray:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    scores = score_sequences(model, _features(tokenizer, prefix, candidates), batch_size=batch_size,
                             pad_id=int(pad), pack=True)  # the prefix once for all its candidates
    return np.array([s.sum_nll for s in scores], dtype=np.float64)


def canary_exposure(model: Any, tokenizer: Any, canaries: Sequence[dict[str, Any]], *, n_samples: int = 2000,
                    seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """Exposure of every canary and the mean exposure per repetition count (``exposure.json`` content).

    Each canary needs ``prefix``, ``secret`` and either ``format`` ("digits<N>") or ``candidates``;
    ``id`` and ``repetitions`` are reported back.
    """
    canaries = list(canaries)
    if not canaries:
        raise LetheError("canary exposure: no canaries given")
    if int(n_samples) != n_samples or n_samples < MIN_SAMPLES:
        raise LetheError(f"canary exposure: n_samples must be an integer >= {MIN_SAMPLES}, got {n_samples!r}")
    check_vocab(model, tokenizer, where="canary exposure model")
    checked = []
    for index, raw in enumerate(canaries):  # validate every canary before any scoring
        canary, where = _validate(raw, index)
        checked.append((canary, _Space(canary, where)))

    rows = []
    for index, (canary, space) in enumerate(progress(checked, "canaries", unit="canaries")):
        canary_id = str(canary.get("id", f"canary-{index}"))
        secret_ppl = float(_log_perplexities(model, tokenizer, canary["prefix"], [canary["secret"]],
                                             batch_size)[0])
        if space.size <= n_samples:
            others = [c for c in space.enumerate() if c != canary["secret"]]
            ppl = _log_perplexities(model, tokenizer, canary["prefix"], others, batch_size)
            rank, method, n_scored = 1.0 + float((ppl < secret_ppl).sum()), "exact", len(others)
        else:
            rng = np.random.default_rng([int(seed), zlib.crc32(canary_id.encode("utf-8"))])
            ppl = _log_perplexities(model, tokenizer, canary["prefix"], space.sample(rng, int(n_samples)),
                                    batch_size)
            rank, method = estimate_rank(secret_ppl, ppl, space.size)
            n_scored = int(n_samples)
        rows.append({
            "id": canary_id,
            "repetitions": canary.get("repetitions"),
            "format": space.kind,
            "space_size": space.size,
            "log_perplexity": secret_ppl,
            "rank_estimate": rank,
            "exposure": exposure_from_rank(rank, space.size),
            "max_exposure": math.log2(space.size),
            "method": method,
            "n_candidates_scored": n_scored,
            "fraction_lower": float((ppl < secret_ppl).mean()),
        })

    groups: dict[Any, list[float]] = defaultdict(list)
    for row in rows:
        groups[row["repetitions"]].append(row["exposure"])
    known = sorted(k for k in groups if k is not None)
    by_reps = {str(k): float(np.mean(groups[k])) for k in known}
    if None in groups:
        by_reps["unknown"] = float(np.mean(groups[None]))
    return {
        "units": "log_perplexity: summed NLL (nats) of the secret's tokens given the prefix; exposure: bits",
        "n_samples": int(n_samples),
        "seed": int(seed),
        "canaries": rows,
        "exposure_by_repetitions": by_reps,
    }
