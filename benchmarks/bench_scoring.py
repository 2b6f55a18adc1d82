"""Membership-inference scoring: Lethe's one shared pass vs a MIMIR-like per-attack baseline.

- ``shared`` (optimized): one length-bucketed, batched :func:`lethe.audit.scoring.score_sequences` pass
  (batch 16, right padding) keeping per-token log p / mu / var, then :func:`lethe.audit.mia.mia_scores`
  derives all six attacks: loss, zlib, min_k_0.2, min_k_0.4, min_k_pp_0.2, min_k_pp_0.4.
- ``per_attack`` (baseline, MIMIR-like): for every sample and every attack, one batch-1 forward with full
  logits and a full log-softmax, from which that attack computes its own statistic (6 forwards per sample,
  as with MIMIR's per-attack ``get_probabilities`` calls).
- ``shared_bs1`` (informational): the shared pass with batch size 1, which separates the gain from
  sharing one forward across attacks from the gain from batching.

Both paths score the same features (:func:`lethe.data.formatting.encode_document`: BOS + text + EOS, every
token after BOS a target). Tokenization is outside the timed region. ``identical`` = every attack's
per-sample scores agree within rtol 1e-4.

    python -m benchmarks.bench_scoring [--quick] [--n 200] [--model PATH]
"""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    Prepare,
    Setup,
    Spec,
    Variant,
    benchmark_main,
    run_benchmark,
)

NAME = "scoring"
FULL_N = 200
QUICK_N = 40
BATCH_SIZE = 16
KS = (0.2, 0.4)
RTOL = 1e-4
ATOL = 1e-8
TARGET = 5.0
MAX_LENGTH = 512
ATTACKS = ("loss", "zlib") + tuple(f"min_k_{k:g}" for k in KS) + tuple(f"min_k_pp_{k:g}" for k in KS)


def _features(setup: Setup, n: int) -> tuple[list[str], list[dict[str, list[int]]]]:
    from lethe.data.formatting import encode_document

    texts = setup.texts[:n]
    return texts, [encode_document(setup.tokenizer, text, MAX_LENGTH) for text in texts]


def _n_targets(features: Sequence[dict[str, list[int]]]) -> int:
    return sum(sum(1 for t in f["labels"][1:] if t != -100) for f in features)


# ------------------------------------------------------------------------------------------------ baseline


def _forward_logprobs(model: Any, feature: dict[str, list[int]], device: torch.device) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """One batch-1 forward: full [T, V] log-softmax at the supervised positions and their target ids."""
    input_ids = torch.tensor([feature["input_ids"]], device=device)
    logits = model(input_ids=input_ids).logits[0, :-1].float()
    targets = torch.tensor(feature["labels"][1:], device=device)
    keep = targets != -100
    return torch.log_softmax(logits[keep], dim=-1), targets[keep]


def _lowest(values: torch.Tensor, k: float) -> float:
    """Mean of the max(1, floor(k*n)) smallest values (float64)."""
    m = max(1, math.floor(k * values.numel() + 1e-9))
    return float(torch.sort(values.double()).values[:m].mean())


def _attack_loss(logprobs: torch.Tensor, targets: torch.Tensor, text: str) -> float:
    return float(logprobs.gather(-1, targets[:, None]).double().mean())


def _attack_zlib(logprobs: torch.Tensor, targets: torch.Tensor, text: str) -> float:
    return _attack_loss(logprobs, targets, text) / len(zlib.compress(text.encode("utf-8")))


def _attack_min_k(k: float) -> Any:
    def attack(logprobs: torch.Tensor, targets: torch.Tensor, text: str) -> float:
        return _lowest(logprobs.gather(-1, targets[:, None]).squeeze(-1), k)

    return attack


def _attack_min_k_pp(k: float) -> Any:
    def attack(logprobs: torch.Tensor, targets: torch.Tensor, text: str) -> float:
        probs = logprobs.exp()
        mu = (probs * logprobs).sum(-1)
        var = (probs * logprobs.square()).sum(-1) - mu.square()
        logp = logprobs.gather(-1, targets[:, None]).squeeze(-1)
        z = (logp.double() - mu.double()) / var.double().clamp(min=1e-6).sqrt()
        return _lowest(z, k)

    return attack


_BASELINE_ATTACKS = {"loss": _attack_loss, "zlib": _attack_zlib,
                     **{f"min_k_{k:g}": _attack_min_k(k) for k in KS},
                     **{f"min_k_pp_{k:g}": _attack_min_k_pp(k) for k in KS}}


def per_attack_scores(model: Any, features: Sequence[dict[str, list[int]]], texts: Sequence[str],
                      device: torch.device) -> dict[str, list[float]]:
    """MIMIR-like: every attack runs its own batch-1 forward for every sample."""
    out: dict[str, list[float]] = {name: [] for name in ATTACKS}
    with torch.inference_mode():
        for feature, text in zip(features, texts, strict=True):
            for name in ATTACKS:
                logprobs, targets = _forward_logprobs(model, feature, device)
                out[name].append(_BASELINE_ATTACKS[name](logprobs, targets, text))
    return out


# ------------------------------------------------------------------------------------------------ variants


def _shared(batch_size: int | None) -> Prepare:
    def prepare(setup: Setup, spec: Spec) -> Variant:
        from lethe.audit.mia import mia_scores
        from lethe.audit.scoring import score_sequences

        texts, features = _features(setup, spec.n)
        size = batch_size or spec.batch_size

        def run(sub: int | None = None) -> dict[str, list[float]]:
            feats, txts = (features, texts) if sub is None else (features[:sub], texts[:sub])
            scores = score_sequences(setup.model, feats, batch_size=size, pad_id=setup.pad_id)
            return {name: values.tolist() for name, values in mia_scores(scores, txts, KS).items()}

        return Variant(warmup=lambda: run(min(len(features), size)), run=run, n_items=len(features),
                       n_tokens=_n_targets(features))

    return prepare


def _per_attack(setup: Setup, spec: Spec) -> Variant:
    texts, features = _features(setup, spec.n)
    return Variant(
        warmup=lambda: per_attack_scores(setup.model, features[:2], texts[:2], setup.device),
        run=lambda: per_attack_scores(setup.model, features, texts, setup.device),
        n_items=len(features), n_tokens=_n_targets(features),
    )


VARIANTS: dict[str, Prepare] = {"per_attack": _per_attack, "shared": _shared(None), "shared_bs1": _shared(1)}


def compare_scores(expected: dict[str, list[float]], actual: dict[str, list[float]]) -> dict[str, Any]:
    """Every attack's scores equal within rtol 1e-4 (NaN only where the other is NaN)."""
    per_attack: dict[str, float] = {}
    ok = set(expected) == set(actual)
    for name in ATTACKS:
        a = np.asarray(expected.get(name, []), dtype=float)
        b = np.asarray(actual.get(name, []), dtype=float)
        if a.shape != b.shape or a.size == 0:
            ok = False
            continue
        ok = ok and bool(np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))
        finite = np.isfinite(a) & np.isfinite(b)
        rel = np.abs(a[finite] - b[finite]) / np.maximum(np.abs(a[finite]), 1e-12)
        per_attack[name] = float(rel.max()) if rel.size else 0.0
    return {"identical": ok, "rtol": RTOL, "attacks": list(ATTACKS), "max_rel_diff": per_attack}


def run(spec: Spec | None = None, *, isolate: bool = True, out_path: str | None = None,
        variants: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the scoring benchmark and write its JSON; ``variants`` picks a subset (baseline and shared kept)."""
    spec = spec or Spec(n=FULL_N, batch_size=BATCH_SIZE)
    names = VARIANTS if variants is None else dict.fromkeys(["per_attack", "shared", *variants])
    chosen = {name: VARIANTS[name] for name in names}
    return run_benchmark(
        name=NAME, module="benchmarks.bench_scoring",
        description=f"all 6 MIA attacks on {spec.n} biographies: one shared batched pass vs 6 batch-1 "
                    "forwards per sample",
        variants=chosen, baseline="per_attack", optimized="shared", spec=spec, compare=compare_scores,
        target=TARGET, isolate=isolate, out_path=out_path,
        notes=["items = biographies scored with all 6 attacks; tokens = supervised target tokens (one pass)",
               "timed region: model passes + attack statistics; tokenization excluded for both variants",
               "labels (member / non-member) do not enter the timed code path, so none are assigned"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    return benchmark_main(argv, doc=__doc__, batch_size=BATCH_SIZE, variants=VARIANTS, run=run, full_n=FULL_N,
                          quick_n=QUICK_N)

if __name__ == "__main__":
    sys.exit(main())
