"""``lethe unlearn`` end to end: unlearn, then evaluate with the TOFU metrics before and after.

The sacrifice rate (GUARD, DESIGN 3.4) of a metric M is
    SR = (M_retain(before) − M_retain(after)) / (M_forget(before) − M_forget(after)),
the retain performance lost per unit of forget performance removed (lower is better); it is reported for
truth ratio, ROUGE-L and probability (:func:`lethe.audit.tofu_metrics.sacrifice_rate`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lethe.audit.commands import TOFU_HEADLINE, check_retain_eval
from lethe.audit.tofu_metrics import (
    SACRIFICE_KEYS,
    check_forget_items,
    check_same_protocol,
    evaluate_tofu,
    load_eval_records,
    load_retain_eval,
    read_tofu_eval,
    sacrifice_rate,
    write_tofu_eval,
)
from lethe.data.world import resolve_source
from lethe.errors import LetheError
from lethe.models import load_model
from lethe.report import Report, figures
from lethe.runs import atomic_write_json
from lethe.unlearn.config import UnlearnConfig
from lethe.unlearn.trainer import load_unlearn_data, run_unlearning

SACRIFICE_METRICS = ("truth_ratio", "rougeL", "probability")
BEFORE_FILE = "tofu_eval_before.json"  # in the run directory: the evaluation of model.name


@dataclass
class EvalInputs:
    """What the TOFU evaluation of a run needs, checked before training: the forget questions it will
    score and the before-evaluation given by ``eval.before`` (None: computed after training)."""

    forget_questions: list[str]
    before: dict[str, Any] | None = None


def _data_folder(config: UnlearnConfig) -> Path:
    d = config.data
    return resolve_source(d.source, n_authors=d.world_authors, seed=d.world_seed)


def _evaluate(model_name: str | Path, config: UnlearnConfig, retain_eval: str | None) -> dict[str, Any]:
    model, tokenizer = load_model(model_name)
    e = config.eval
    return evaluate_tofu(model, tokenizer, _data_folder(config), forget_split=config.data.forget_split,
                         retain_eval=retain_eval, batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                         limit=e.limit, protocol=e.protocol, system_prompt=e.system_prompt,
                         date_string=e.date_string)


def check_before_eval(source: str | Path | dict[str, Any], forget_split: str,
                      questions: list[str], label: str = "eval.before", protocol: str | None = None) -> dict[str, Any]:
    """A before-unlearning tofu_eval.json, checked: the same forget items and input protocol as this run's
    evaluation and a finite value for every summary key of the sacrifice rates."""
    data, label = read_tofu_eval(source, label)
    check_same_protocol(data, label, protocol)
    check_forget_items(data, label, forget_split, questions)
    summary = data.get("summary")
    if not isinstance(summary, dict):
        raise LetheError(f"{label}: no summary (not a tofu_eval.json?)")
    needed = sorted({key for pair in SACRIFICE_KEYS.values() for key in pair})
    for key in needed:
        value = summary.get(key)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise LetheError(f"{label}: summary.{key} is missing or not finite (needed for the sacrifice rates)")
    return data


def check_eval_inputs(config: UnlearnConfig) -> EvalInputs | None:
    """Everything the evaluation after training reads, checked before training starts, so a bad input
    never leaves a run with model/ but no tofu_eval.json: the TOFU split files, ``eval.retain_eval``
    (parseable, forget truth ratios of the same split and items) and ``eval.before``. None when
    ``eval.enabled`` is false (both files are then unused)."""
    e = config.eval
    if not e.enabled:
        return None
    records = load_eval_records(_data_folder(config), forget_split=config.data.forget_split, limit=e.limit)
    questions = [r["question"] for r in records["forget"]]
    if e.retain_eval:
        check_retain_eval(e.retain_eval)
        load_retain_eval(e.retain_eval, config.data.forget_split, questions, e.protocol)
    before = check_before_eval(e.before, config.data.forget_split, questions, protocol=e.protocol) if e.before else None
    return EvalInputs(questions, before)


def _before_eval(config: UnlearnConfig, inputs: EvalInputs, run_dir: Path) -> dict[str, Any]:
    """The evaluation of model.name: ``eval.before``, or this run's earlier one, or computed now; always
    (re)written inside the run directory only."""
    path = run_dir / BEFORE_FILE
    before = inputs.before
    if before is None and path.is_file():
        try:
            before = check_before_eval(path, config.data.forget_split, inputs.forget_questions, "earlier",
                                       protocol=config.eval.protocol)
        except LetheError:
            before = None  # this run's own file from other settings: recompute it
        if before is not None and _before_key(before) != _before_key_of(config):
            before = None  # computed for another model or with other evaluation settings
    if before is None:
        before = _evaluate(config.model.name, config, config.eval.retain_eval or None)
        before["config"].update(model=str(config.model.name), retain_eval=config.eval.retain_eval)
    write_tofu_eval(before, path)
    return before


def _before_key(evaluation: dict[str, Any]) -> tuple[Any, ...]:
    c = evaluation.get("config") or {}
    return (c.get("model"), c.get("retain_eval"), c.get("limit"), c.get("max_new_tokens"),
            c.get("protocol", "lethe"), c.get("system_prompt", ""), c.get("date_string", ""))


def _before_key_of(config: UnlearnConfig) -> tuple[Any, ...]:
    e = config.eval
    return (str(config.model.name), e.retain_eval, e.limit, e.max_new_tokens, e.protocol, e.system_prompt,
            e.date_string)


def sacrifice_rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float | None]:
    return {metric: sacrifice_rate(before, after, metric) for metric in SACRIFICE_METRICS}


def unlearn_and_evaluate(config: UnlearnConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    """Run :func:`run_unlearning`; with ``eval.enabled``, add TOFU metrics and sacrifice rates.

    Writes, besides the files of :func:`run_unlearning`, tofu_eval_before.json (a copy of ``eval.before``
    when given), tofu_eval.json, and the report; nothing outside the run directory."""
    config.validate()
    if config.method == "whp":  # Who's Harry Potter: a target text, not TOFU splits (lethe.unlearn.whp_run)
        from lethe.unlearn.whp_run import run_whp

        return run_whp(config, quiet=quiet)
    data = load_unlearn_data(config)  # fail before anything is written: the unlearning data first,
    inputs = check_eval_inputs(config)  # then what the evaluation will read
    after = None if inputs is None else functools.partial(_evaluate_run, config, inputs)
    return run_unlearning(config, quiet=quiet, data=data, after=after)  # evaluated inside the run's lock


def _evaluate_run(config: UnlearnConfig, inputs: EvalInputs, run_dir: Path,
                  metrics: dict[str, Any]) -> dict[str, Any]:
    """The TOFU evaluation of an unlearned run directory (nothing to do when a finished run has one)."""
    if "tofu" in metrics and (run_dir / "tofu_eval.json").is_file():
        return metrics
    before = _before_eval(config, inputs, run_dir)
    after = _evaluate(run_dir / "model", config, config.eval.retain_eval or None)
    write_tofu_eval(after, run_dir / "tofu_eval.json", open_unlearning=True)
    metrics["tofu_protocol"] = config.eval.protocol
    metrics["tofu_before"] = {k: before["summary"].get(k) for k in TOFU_HEADLINE}
    metrics["tofu"] = {k: after["summary"].get(k) for k in TOFU_HEADLINE}
    metrics["sacrifice_rate"] = sacrifice_rates(before, after)
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_unlearn_report(run_dir, config, metrics)
    return metrics


def write_unlearn_report(run_dir: Path, config: UnlearnConfig, metrics: dict[str, Any]) -> None:
    guard = "GUARD-weighted " if config.guard.enabled else ""
    page = Report(f"Unlearning: {guard}{config.method}", subtitle=f"{config.data.forget_split} of "
                                                                  f"{config.data.source}, model {config.model.name}")
    rows = [{"metric": k, "before": metrics["tofu_before"].get(k), "after": metrics["tofu"].get(k)}
            for k in TOFU_HEADLINE]
    page.add_paragraph(f"Input protocol: {metrics.get('tofu_protocol', config.eval.protocol)}"
                       f"{f', system prompt {config.eval.system_prompt!r}' if config.eval.system_prompt else ''}"
                       " (see docs/protocols.md)")
    page.add_table(rows, caption=f"TOFU metrics before and after unlearning ({config.eval.protocol} protocol)")
    page.add_keyvalues({f"sacrifice rate ({m})": v for m, v in metrics["sacrifice_rate"].items()},
                       caption="Retain performance lost per unit of forget performance removed (lower is better)")
    bars = {"before": {k: metrics["tofu_before"].get(k) or 0.0 for k in ("model_utility", "forget_Q_A_ROUGE",
                                                                          "forget_Q_A_Prob")},
            "after": {k: metrics["tofu"].get(k) or 0.0 for k in ("model_utility", "forget_Q_A_ROUGE",
                                                                 "forget_Q_A_Prob")}}
    page.add_figure("before_after", figures.bar_comparison(bars, "Before vs after unlearning"),
                    "Model utility and forget-set ROUGE / probability before and after.")
    page.write(run_dir)
