"""open-unlearning's result files: read a retain model's ``TOFU_EVAL.json``, write ``TOFU_EVAL.json`` and
``TOFU_SUMMARY.json`` from a Lethe evaluation.

Format (open-unlearning ``src/evals/base.py``): ``TOFU_EVAL.json`` maps every metric name (pre-computed ones
included) to ``{"agg_value": x, "value_by_index": {"<item index>": {...}}}``; ``mia_min_k`` holds
``{"forget": {...}, "holdout": {...}, "auc": x, "agg_value": x}`` with per-item scores
s = −mean of the lowest ⌊0.4·n⌋ log p (lower = member, so AUC = 1 when forget is far more likely);
``TOFU_SUMMARY.json`` maps metric names to their ``agg_value``.

A retain log gives forget quality its reference truth ratios (``forget_truth_ratio.value_by_index``) and
privleak its reference AUC (``mia_min_k.agg_value``). Two truth-ratio forms exist there:
TR = wrong/correct (aggregators ``closer_to_1_better`` / ``true_better``) and v = correct/(correct + wrong)
(``prob_mean``). A v is turned back into TR = (1 − v)/v; values above 1 can only be TR; values all in (0, 1)
with ``agg_value`` = their mean are read as v (said in the notes), since the two forms cannot be told apart
otherwise. The KS test is invariant under monotone maps, so forget quality is the same in either form once
both sides are in the same one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lethe.errors import LetheError

EVAL_FILE, SUMMARY_FILE = "TOFU_EVAL.json", "TOFU_SUMMARY.json"
PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}


def is_open_unlearning(data: Mapping[str, Any]) -> bool:
    """True for an open-unlearning ``TOFU_EVAL.json`` (metric name → {agg_value, value_by_index}), False for
    Lethe's ``tofu_eval.json`` (summary / per_item)."""
    if "per_item" in data or "summary" in data:
        return False
    return any(isinstance(v, dict) and ("agg_value" in v or "value_by_index" in v) for v in data.values())


def _ordered_scores(block: Any, label: str, key: str = "score") -> list[float]:
    values = block.get("value_by_index") if isinstance(block, dict) else None
    if not isinstance(values, dict) or not values:
        raise LetheError(f"{label}: no per-item values (value_by_index is missing or empty)")
    try:
        order = sorted(values, key=int)
    except ValueError:
        raise LetheError(f"{label}: value_by_index keys must be item indices") from None
    scores = [values[k].get(key) if isinstance(values[k], dict) else None for k in order]
    if any(not isinstance(s, int | float) or not math.isfinite(s) for s in scores):
        raise LetheError(f"{label}: an item has no finite {key!r}")
    return [float(s) for s in scores]


def truth_ratios_from_log(block: Any, label: str) -> tuple[list[float], str]:
    """The raw truth ratios TR = wrong/correct of a ``forget_truth_ratio`` block, and the form it was in."""
    values = np.array(_ordered_scores(block, f"{label} forget_truth_ratio"))
    agg = block.get("agg_value")
    in_unit = bool(np.all((values > 0) & (values < 1)))
    if in_unit and isinstance(agg, int | float) and math.isclose(float(agg), float(values.mean()), rel_tol=1e-9):
        return [float(v) for v in (1.0 - values) / values], "correct/(correct+wrong) (prob_mean), converted"
    return [float(v) for v in values], "wrong/correct"


def read_retain_log(data: Mapping[str, Any], label: str, n_items: int | None = None) -> dict[str, Any]:
    """The reference forget truth ratios and min-k AUC of an open-unlearning retain log."""
    if "forget_truth_ratio" not in data:
        raise LetheError(f"{label}: an open-unlearning log without forget_truth_ratio (evaluate the retain model "
                         "with the forget_truth_ratio / forget_quality metric)")
    ratios, form = truth_ratios_from_log(data["forget_truth_ratio"], label)
    if n_items is not None and len(ratios) != n_items:
        raise LetheError(f"{label}: has {len(ratios)} forget items, this evaluation has {n_items} "
                         "(use the same forget split and no eval limit)")
    mia = data.get("mia_min_k")
    auc = mia.get("agg_value") if isinstance(mia, dict) else None
    return {"truth_ratio": ratios, "mia_min_k": None if auc is None else float(auc), "label": label,
            "protocol": "open-unlearning", "truth_ratio_form": form}


# ------------------------------------------------------------------------------------------------- writing


def _by_index(items: Sequence[Mapping[str, Any]], fields: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    return {str(i): {out: item.get(key) for out, key in fields.items()} for i, item in enumerate(items)}


def _block(agg: Any, values: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"agg_value": agg}
    if values is not None:
        block["value_by_index"] = values
    return block


def _split_blocks(split: str, items: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> dict[str, Any]:
    p = PREFIX[split]
    logs = {
        f"{p}_Q_A_Prob": _block(summary.get(f"{p}_Q_A_Prob"), _by_index(items, {"prob": "prob", "avg_loss": "loss"})),
        f"{p}_Q_A_PERT_Prob": _block(summary.get(f"{p}_Q_A_PERT_Prob"), {
            str(i): {"prob": [math.exp(-x) for x in it.get("pert_loss", [])], "avg_loss": it.get("pert_loss")}
            for i, it in enumerate(items)}),
        f"{p}_Q_A_ROUGE": _block(summary.get(f"{p}_Q_A_ROUGE"), _by_index(items, {
            "rouge1_recall": "rouge1_recall", "rougeL_f1": "rougeL_f1", "rougeL_recall": "rougeL_recall",
            "ground_truth": "reference", "generation": "generated"})),
    }
    if split in ("forget", "retain"):
        logs[f"{p}_Q_A_PARA_Prob"] = _block(summary.get(f"{p}_Q_A_PARA_Prob"),
                                            _by_index(items, {"prob": "para_prob", "avg_loss": "para_loss"}))
    else:
        logs[f"{p}_Q_A_Prob_normalised"] = _block(summary.get(f"{p}_Q_A_Prob_normalised"),
                                                  _by_index(items, {"prob": "prob_normalised"}))
    tr_key = "forget_truth_ratio" if split == "forget" else f"{p}_Truth_Ratio"
    logs[tr_key] = _block(summary.get(tr_key), _by_index(items, {"score": "truth_ratio"}))
    return logs


def to_open_unlearning(result: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``TOFU_EVAL.json``, ``TOFU_SUMMARY.json``) contents of an :func:`evaluate_tofu` result."""
    summary, per_item = result["summary"], result["per_item"]
    logs: dict[str, Any] = {}
    for split in ("forget", "retain", "real_authors", "world_facts"):
        if split in per_item:
            logs.update(_split_blocks(split, per_item[split], summary))
    if "forget" in per_item:
        forget = per_item["forget"]
        logs["forget_truth_ratio_prob_mean"] = _block(summary.get("forget_truth_ratio_prob_mean"),
                                                      _by_index(forget, {"score": "truth_ratio_prob_mean"}))
        logs["extraction_strength"] = _block(summary.get("extraction_strength"),
                                             _by_index(forget, {"score": "extraction_strength"}))
        logs["exact_memorization"] = _block(summary.get("exact_memorization"),
                                            _by_index(forget, {"score": "exact_memorization"}))
        if "holdout" in per_item and summary.get("mia_min_k") is not None:
            sides = {}
            for side, items in (("forget", forget), ("holdout", per_item["holdout"])):
                scores = {str(i): {"score": -float(it["mia_min_k"])} for i, it in enumerate(items)}
                sides[side] = _block(float(np.mean([s["score"] for s in scores.values()])), scores)
            logs["mia_min_k"] = {**sides, "auc": summary["mia_min_k"], "agg_value": summary["mia_min_k"]}
    if "retain" in per_item:
        logs["retain_extraction_strength"] = _block(summary.get("retain_extraction_strength"),
                                                    _by_index(per_item["retain"], {"score": "extraction_strength"}))
    for key in ("forget_quality", "privleak", "model_utility"):
        if summary.get(key) is not None:
            logs[key] = _block(summary[key])
    logs = {k: v for k, v in sorted(logs.items()) if v.get("agg_value") is not None or "value_by_index" in v}
    short = {k: v["agg_value"] for k, v in logs.items() if v.get("agg_value") is not None}
    return logs, short
