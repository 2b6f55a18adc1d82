"""MIA attacks: ``lethe audit mia``'s code path vs MIMIR's own code path (github.com/iamgroot42/mimir).

- ``mimir`` (baseline) reimplements the computation of MIMIR's ``run.py::get_mia_scores`` and
  ``compute_metrics_from_scores`` the way MIMIR does it: for each sample, batch 1,
  ``LanguageModel.get_probabilities(text, return_all_probs=True)``: ``tokenizer(text, return_tensors="pt")``,
  the sliding window (window = the model's maximum positions, stride = window // 2), per window one
  ``model(input_ids, labels=target_ids)`` call (so the model also computes its own cross-entropy), the logits
  moved to the CPU, a full-vocabulary ``log_softmax`` of the shifted logits, and a Python loop over the
  targets that reads each target log-prob with ``.item()`` and keeps each position's full distribution
  (``log_prob`` and ``prob``) for Min-K%++. Then, from those shared probabilities, the attacks' own code:
  LOSS (``get_ll``: −mean), zlib (loss / zlib bytes), Min-K% (window-1 n-gram loop, ``sorted(...)[:int(k·n)]``)
  and Min-K%++ (μ, σ² over the vocabulary, z-scores), for k ∈ {0.2, 0.4}; and per attack MIMIR's metrics:
  ``roc_curve`` + ``auc`` with ``scipy.stats.bootstrap`` (1,000 paired resamples, each a ``roc_curve``) and
  the precision-recall AUC. MIMIR shares one forward pass per sample between its attacks (``s_tk_probs`` and
  ``s_all_probs`` computed once in ``get_mia_scores``); it does not batch samples.
- ``lethe`` (optimized): :func:`lethe.audit.mia.run_mia` under the ``mimir`` input protocol (the same tokens,
  windows and score rules): one batched, length-bucketed scoring pass that keeps only per-token statistics,
  then the six attacks, ROC / TPR metrics and a 1,000-resample bootstrap of AUC and TPRs.

Data: ``--data`` (a TOFU folder, default ``/work/shared/data/tofu`` when present): members = the first N
answers of forget10, non-members = the first N of holdout10 (short texts); without TOFU, the embedded
world's first N biographies and N held-out biographies. Timed: from the texts to every attack's scores and
metrics (model load excluded: it is the same for both). ``identical``: every attack's per-sample score
agrees with MIMIR's (which are the negations of Lethe's) within rtol 1e-4 (Min-K%++: 1e-3, see
``MIN_K_PP_RTOL``).

    python -m benchmarks.bench_mia_mimir [--quick] [--n 30] [--model smollm2-135m]
"""

from __future__ import annotations

import math
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import Prepare, Setup, Spec, Variant, benchmark_main, run_benchmark

NAME = "mia_mimir"
FULL_N = 30
QUICK_N = 6
BATCH_SIZE = 16
KS = (0.2, 0.4)
RTOL = 1e-4
# Min-K%++ divides by σ = sqrt(Σ p (log p)² − μ²), which both codes compute in float32 as a difference of two
# sums of ~(log p)²: on a random-init model the next-token distribution is nearly uniform (σ² ~ 1e-2 against
# (log p)² ~ 40), the subtraction cancels ~3 digits and the two reduction orders then differ by up to 1.7e-4
# relative (the tiny model on an Intel Xeon; SmolLM2: 2.7e-6). Same formula, float32 rounding.
MIN_K_PP_RTOL = 1e-3
ATOL = 1e-6
TARGET = 5.0
BOOTSTRAP = 1000  # MIMIR get_roc_metrics: scipy.stats.bootstrap(n_resamples=1000, paired=True)
TOFU_DIR = Path("/work/shared/data/tofu")

Outputs = dict[str, list[float]]


def texts_of(setup: Setup, n: int) -> tuple[list[str], list[str]]:
    """(members, non-members): TOFU forget10 / holdout10 answers when the folder exists, else biographies."""
    if (TOFU_DIR / "forget10.json").is_file():
        from lethe.data.tofu import load_split

        members = [r["answer"] for r in load_split(TOFU_DIR, "forget10")[:n]]
        return members, [r["answer"] for r in load_split(TOFU_DIR, "holdout10")[:n]]
    half = len(setup.texts) // 2
    return setup.texts[:n], setup.texts[half:half + n]


# ------------------------------------------------------------------------------------------------ MIMIR


def mimir_probabilities(model: Any, tokenizer: Any, text: str, max_length: int,
                        stride: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    """MIMIR's ``get_probabilities(text, return_all_probs=True)``: batch 1, sliding window, one forward
    (with labels) per window, full log-softmax on the CPU, one ``.item()`` per target token."""
    device = next(model.parameters()).device
    labels = tokenizer(text, return_tensors="pt").input_ids
    target_probs: list[float] = []
    rows: list[torch.Tensor] = []
    for i in range(0, labels.size(1), stride):
        begin = max(i + stride - max_length, 0)
        end = min(i + stride, labels.size(1))
        keep = end - i
        input_ids = labels[:, begin:end].to(device)
        target_ids = input_ids.clone()
        target_ids[:, :-keep] = -100
        logits = model(input_ids, labels=target_ids).logits.cpu()
        log_probs = torch.nn.functional.log_softmax(logits[..., :-1, :].contiguous(), dim=-1)
        shifted = target_ids[..., 1:].cpu().contiguous()[0]
        for j, token_id in enumerate(shifted):
            if token_id != -100:
                target_probs.append(log_probs[0, j, token_id].item())
                rows.append(log_probs[0, j])
    log_prob = torch.stack(rows) if rows else torch.zeros(0, 1)
    return target_probs, {"log_prob": log_prob, "prob": log_prob.exp()}


def mimir_sample_scores(text: str, probs: list[float], all_probs: dict[str, torch.Tensor]) -> dict[str, float]:
    """The attacks of MIMIR on one sample (raw scores: lower = member), from the shared probabilities."""
    loss = -np.mean(probs)
    scores = {"loss": float(loss), "zlib": float(loss / len(zlib.compress(bytes(text, "utf-8"))))}
    for k in KS:
        ngram = [np.mean(probs[i:i + 1]) for i in range(0, len(probs))]  # window 1, stride 1
        scores[f"min_k_{k:g}"] = float(-np.mean(sorted(ngram)[: int(len(ngram) * k)]))
        mu = (all_probs["prob"] * all_probs["log_prob"]).sum(-1)
        sigma = (all_probs["prob"] * torch.square(all_probs["log_prob"])).sum(-1) - torch.square(mu)
        z = (np.array(probs) - mu.numpy()) / sigma.sqrt().numpy()
        scores[f"min_k_pp_{k:g}"] = float(-np.mean(sorted(z)[: int(len(z) * k)]))
    return scores


def _mimir_metrics(members: list[float], nonmembers: list[float]) -> dict[str, float]:
    """MIMIR's ``get_roc_metrics(perform_bootstrap=True)`` and ``get_precision_recall_metrics``."""
    from scipy.stats import bootstrap
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    def roc(member: list[float], nonmember: list[float]) -> float:
        member = [x for x in member if not math.isnan(x)]
        nonmember = [x for x in nonmember if not math.isnan(x)]
        preds = -1 * np.array(member + nonmember)
        fpr, tpr, _ = roc_curve([1] * len(member) + [0] * len(nonmember), preds)
        return float(auc(fpr, tpr))

    def statistic(preds: np.ndarray, labels: np.ndarray) -> float:
        return roc([-p for p, lab in zip(preds, labels, strict=True) if lab == 1],
                   [-p for p, lab in zip(preds, labels, strict=True) if lab == 0])

    preds = -1 * np.array(members + nonmembers)
    labels = [1] * len(members) + [0] * len(nonmembers)
    result = bootstrap((preds, labels), statistic, n_resamples=BOOTSTRAP, paired=True, vectorized=False,
                       random_state=0)
    precision, recall, _ = precision_recall_curve([0] * len(members) + [1] * len(nonmembers), members + nonmembers)
    return {"auc": roc(members, nonmembers), "bootstrap_se": float(result.standard_error),
            "pr_auc": float(auc(recall, precision))}


def mimir_run(model: Any, tokenizer: Any, members: list[str], nonmembers: list[str]) -> Outputs:
    from lethe.audit.mia_protocol import model_positions

    max_length = model_positions(model)
    stride = max_length // 2
    out: Outputs = {}
    with torch.no_grad():
        for group, texts in (("members", members), ("nonmembers", nonmembers)):
            for text in texts:
                probs, all_probs = mimir_probabilities(model, tokenizer, text, max_length, stride)
                for attack, value in mimir_sample_scores(text, probs, all_probs).items():
                    out.setdefault(f"{attack}.{group}", []).append(value)
    for attack in sorted({key.rsplit(".", 1)[0] for key in out}):
        _mimir_metrics(out[f"{attack}.members"], out[f"{attack}.nonmembers"])
    return out


# ------------------------------------------------------------------------------------------------ Lethe


def lethe_run(model: Any, tokenizer: Any, members: list[str], nonmembers: list[str], batch_size: int) -> Outputs:
    """:func:`run_mia` (mimir protocol), its per-sample scores negated to MIMIR's reading (lower = member)."""
    from lethe.audit.mia import run_mia

    result = run_mia(model, tokenizer, members, nonmembers, ks=KS, batch_size=batch_size, protocol="mimir")
    out: Outputs = {}
    for attack, metrics in result["attacks"].items():
        for group in ("members", "nonmembers"):
            out[f"{attack}.{group}"] = [float("nan") if v is None else -v for v in metrics["scores"][group]]
    return out


def _prepare(kind: str) -> Prepare:
    def prepare(setup: Setup, spec: Spec) -> Variant:
        members, nonmembers = texts_of(setup, spec.n)
        n_tokens = sum(len(setup.tokenizer(t)["input_ids"]) for t in members + nonmembers)

        def run(m: list[str] = members, nm: list[str] = nonmembers) -> Outputs:
            model, tok = setup.model, setup.tokenizer
            return mimir_run(model, tok, m, nm) if kind == "mimir" else lethe_run(model, tok, m, nm, spec.batch_size)

        return Variant(warmup=lambda: run(members[:2], nonmembers[:2]), run=run, n_items=2 * spec.n,
                       n_tokens=n_tokens)

    return prepare


VARIANTS: dict[str, Prepare] = {"mimir": _prepare("mimir"), "lethe": _prepare("lethe")}


def compare_outputs(expected: Outputs, actual: Outputs) -> dict[str, Any]:
    ok = set(expected) == set(actual) and bool(expected)
    max_rel: dict[str, float] = {}
    for key in sorted(set(expected) & set(actual)):
        x, y = np.asarray(expected[key], dtype=float), np.asarray(actual[key], dtype=float)
        if x.shape != y.shape:
            ok = False
            continue
        rtol = MIN_K_PP_RTOL if key.startswith("min_k_pp") else RTOL
        ok = ok and bool(np.allclose(x, y, rtol=rtol, atol=ATOL, equal_nan=True))
        finite = np.isfinite(x) & np.isfinite(y)
        rel = np.abs(x[finite] - y[finite]) / np.maximum(np.abs(x[finite]), 1e-30)
        max_rel[key] = float(rel.max()) if rel.size else 0.0
    return {"identical": ok, "rtol": RTOL, "rtol_min_k_pp": MIN_K_PP_RTOL,
            "n_values": sum(len(v) for v in expected.values()),
            "keys_only_in_baseline": sorted(set(expected) - set(actual)),
            "keys_only_in_variant": sorted(set(actual) - set(expected)),
            "max_rel_diff": max_rel, "max_rel_diff_overall": max(max_rel.values(), default=None)}


def run(spec: Spec | None = None, *, isolate: bool = True, out_path: str | None = None) -> dict[str, Any]:
    spec = spec or Spec(n=FULL_N, batch_size=BATCH_SIZE)
    return run_benchmark(
        name=NAME if not spec.model else f"{NAME}_{Path(spec.model).name}", module="benchmarks.bench_mia_mimir",
        description=f"{spec.n} + {spec.n} texts, loss / zlib / min-k / min-k++ (k = 0.2, 0.4) with their metrics: "
                    "run_mia (mimir protocol) vs MIMIR's per-sample get_probabilities + attacks + get_roc_metrics",
        variants=VARIANTS, baseline="mimir", optimized="lethe", spec=spec, compare=compare_outputs,
        target=TARGET, isolate=isolate, out_path=out_path,
        notes=["timed: texts -> every attack's per-sample scores and metrics; model load and imports excluded",
               "MIMIR computes one forward per sample and window shared by its attacks (get_mia_scores), batch 1"])


def main(argv: Sequence[str] | None = None) -> int:
    return benchmark_main(argv, doc=__doc__, batch_size=BATCH_SIZE, variants=VARIANTS, run=run, full_n=FULL_N,
                          quick_n=QUICK_N)


if __name__ == "__main__":
    sys.exit(main())
