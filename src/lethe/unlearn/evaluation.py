"""``lethe unlearn`` end to end: unlearn, then evaluate with the TOFU metrics before and after.

The sacrifice rate (GUARD, DESIGN 3.4) of a metric M is
    SR = (M_retain(before) − M_retain(after)) / (M_forget(before) − M_forget(after)),
the retain performance lost per unit of forget performance removed (lower is better); it is reported for
truth ratio, ROUGE-L and probability (:func:`lethe.audit.tofu_metrics.sacrifice_rate`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lethe.audit.commands import TOFU_HEADLINE, check_retain_eval
from lethe.audit.tofu_metrics import evaluate_tofu, sacrifice_rate, write_tofu_eval
from lethe.data.world import resolve_source
from lethe.models import load_model
from lethe.report import Report, figures
from lethe.runs import atomic_write_json
from lethe.unlearn.config import UnlearnConfig
from lethe.unlearn.trainer import run_unlearning

SACRIFICE_METRICS = ("truth_ratio", "rougeL", "probability")


def _evaluate(model_name: str | Path, config: UnlearnConfig, retain_eval: str | None) -> dict[str, Any]:
    model, tokenizer = load_model(model_name)
    e = config.eval
    folder = resolve_source(config.data.source, n_authors=config.data.world_authors, seed=config.data.world_seed)
    return evaluate_tofu(model, tokenizer, folder, forget_split=config.data.forget_split, retain_eval=retain_eval,
                         batch_size=e.batch_size, max_new_tokens=e.max_new_tokens, limit=e.limit)


def sacrifice_rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float | None]:
    return {metric: sacrifice_rate(before, after, metric) for metric in SACRIFICE_METRICS}


def unlearn_and_evaluate(config: UnlearnConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    """Run :func:`run_unlearning`; with ``eval.enabled``, add TOFU metrics and sacrifice rates."""
    config.validate()
    check_retain_eval(config.eval.retain_eval)  # fail before anything is written
    run_dir, metrics = run_unlearning(config, quiet=quiet)
    if not config.eval.enabled:
        return run_dir, metrics
    retain_eval = config.eval.retain_eval or None
    before_path = Path(config.eval.before) if config.eval.before else run_dir / "tofu_eval_before.json"
    if before_path.is_file():
        before = json.loads(before_path.read_text())
    else:
        before = _evaluate(config.model.name, config, retain_eval)
        write_tofu_eval(before, before_path)
    after = _evaluate(run_dir / "model", config, retain_eval)
    write_tofu_eval(after, run_dir / "tofu_eval.json")
    metrics["tofu_before"] = {k: before["summary"].get(k) for k in TOFU_HEADLINE}
    metrics["tofu"] = {k: after["summary"].get(k) for k in TOFU_HEADLINE}
    metrics["sacrifice_rate"] = sacrifice_rates(before, after)
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_unlearn_report(run_dir, config, metrics)
    return run_dir, metrics


def write_unlearn_report(run_dir: Path, config: UnlearnConfig, metrics: dict[str, Any]) -> None:
    guard = "GUARD-weighted " if config.guard.enabled else ""
    page = Report(f"Unlearning: {guard}{config.method}", subtitle=f"{config.data.forget_split} of "
                                                                  f"{config.data.source}, model {config.model.name}")
    rows = [{"metric": k, "before": metrics["tofu_before"].get(k), "after": metrics["tofu"].get(k)}
            for k in TOFU_HEADLINE]
    page.add_table(rows, caption="TOFU metrics before and after unlearning")
    page.add_keyvalues({f"sacrifice rate ({m})": v for m, v in metrics["sacrifice_rate"].items()},
                       caption="Retain performance lost per unit of forget performance removed (lower is better)")
    bars = {"before": {k: metrics["tofu_before"].get(k) or 0.0 for k in ("model_utility", "forget_Q_A_ROUGE",
                                                                          "forget_Q_A_Prob")},
            "after": {k: metrics["tofu"].get(k) or 0.0 for k in ("model_utility", "forget_Q_A_ROUGE",
                                                                 "forget_Q_A_Prob")}}
    page.add_figure("before_after", figures.bar_comparison(bars, "Before vs after unlearning"),
                    "Model utility and forget-set ROUGE / probability before and after.")
    page.write(run_dir)
