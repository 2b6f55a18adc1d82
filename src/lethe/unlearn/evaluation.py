"""``lethe unlearn`` end to end: unlearn, then evaluate with the TOFU metrics before and after.

The sacrifice rate (GUARD, DESIGN 3.4) of a metric M is
    SR = (M_retain(before) − M_retain(after)) / (M_forget(before) − M_forget(after)),
the retain performance lost per unit of forget performance removed (lower is better); it is reported for
truth ratio, ROUGE-L and probability (:func:`lethe.audit.tofu_metrics.sacrifice_rate`).
"""

from __future__ import annotations

import functools
import json
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
from lethe.report.tables import sacrifice_flag
from lethe.runs import atomic_write_json
from lethe.unlearn.config import UnlearnConfig
from lethe.unlearn.guard import read_attribution
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


def sacrifice_parts(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per SR metric: the retain loss (numerator) and the forget removal (denominator), from two summaries."""
    before, after = before.get("summary", before), after.get("summary", after)
    return {metric: {"retain_drop": before[r] - after[r], "forget_drop": before[f] - after[f]}
            for metric, (r, f) in SACRIFICE_KEYS.items()}


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
    after = functools.partial(_report_run, config) if inputs is None else functools.partial(_evaluate_run, config,
                                                                                              inputs)
    return run_unlearning(config, quiet=quiet, data=data, after=after)  # evaluated inside the run's lock


def _report_run(config: UnlearnConfig, run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Without an evaluation: the report of the unlearning alone (curves, GUARD weights)."""
    write_unlearn_report(run_dir, config, metrics)
    return metrics


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
    metrics["sacrifice_parts"] = sacrifice_parts(before, after)
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_unlearn_report(run_dir, config, metrics)
    return metrics


SR_LABELS = {"truth_ratio": "truth ratio", "rougeL": "ROUGE-L", "probability": "probability"}


def write_unlearn_report(run_dir: Path, config: UnlearnConfig, metrics: dict[str, Any]) -> None:
    """``report.md`` / ``report.html`` of an unlearning run: TOFU before/after and the sacrifice rates with
    the reading of their sign (when evaluated), the forget / retain curves of the run's log, the GUARD
    weights (when GUARD is on)."""
    guard = "GUARD-weighted " if config.guard.enabled else ""
    page = Report(f"Unlearning: {guard}{config.method}", subtitle=f"{config.data.forget_split} of "
                                                                  f"{config.data.source}, model {config.model.name}")
    page.add_keyvalues({"method": config.method, "steps": metrics.get("steps"),
                        "forget samples": metrics.get("forget_samples"),
                        "retain samples": metrics.get("retain_samples"),
                        "forget NLL before → after": _arrow(metrics, "forget_nll"),
                        "forget probability before → after": _arrow(metrics, "forget_prob"),
                        "retain NLL before → after": _arrow(metrics, "retain_nll"),
                        "retain probability before → after": _arrow(metrics, "retain_prob")},
                       caption="The run (NLL: mean per answer token over the forget set and a retain sample of "
                               "its size)")
    if "tofu" in metrics:
        _add_tofu_sections(page, config, metrics)
    else:
        page.add_note("No TOFU evaluation (eval.enabled=false): no before/after metrics or sacrifice rates.")
    _add_curves(page, run_dir, config)
    if config.guard.enabled:
        _add_guard_weights(page, run_dir, metrics)
    page.write(run_dir)


def _arrow(metrics: dict[str, Any], key: str) -> str | None:
    before, after = metrics.get(f"{key}_before"), metrics.get(f"{key}_after")
    if not all(isinstance(v, int | float) for v in (before, after)):
        return None
    return f"{before:.4g} → {after:.4g}"


def _add_tofu_sections(page: Report, config: UnlearnConfig, metrics: dict[str, Any]) -> None:
    rows = [{"metric": k, "before": metrics["tofu_before"].get(k), "after": metrics["tofu"].get(k)}
            for k in TOFU_HEADLINE]
    page.add_paragraph(f"Input protocol: {metrics.get('tofu_protocol', config.eval.protocol)}"
                       f"{f', system prompt {config.eval.system_prompt!r}' if config.eval.system_prompt else ''}"
                       " (see docs/protocols.md)")
    page.add_table(rows, caption=f"TOFU metrics before and after unlearning ({config.eval.protocol} protocol)")
    page.add_heading("Sacrifice rates")
    page.add_paragraph("SR = (M_retain(before) − M_retain(after)) / (M_forget(before) − M_forget(after)): retain "
                       "performance lost per unit of forget performance removed. Lower is better only while the "
                       "forget metric went down; the reading column says what each sign means here.")
    parts = metrics.get("sacrifice_parts") or {}
    sr_rows, flagged = [], []
    for metric, value in metrics["sacrifice_rate"].items():
        part = parts.get(metric) or {}
        reading = sacrifice_flag(part.get("retain_drop"), part.get("forget_drop"))
        sr_rows.append({"metric": SR_LABELS.get(metric, metric), "retain lost": part.get("retain_drop"),
                        "forget removed": part.get("forget_drop"), "SR": value, "reading": reading})
        if not reading.startswith("retain lost per unit"):
            flagged.append(f"{SR_LABELS.get(metric, metric)}: {reading}")
    page.add_table(sr_rows, caption="Sacrifice rate per metric, with its numerator and denominator")
    for line in flagged:
        page.add_note(f"SR ({line}).", kind="warning" if "NOT" in line or "undefined" in line else "info")
    bars = {"before": {k: metrics["tofu_before"].get(k) or 0.0 for k in ("model_utility", "forget_Q_A_ROUGE",
                                                                          "forget_Q_A_Prob")},
            "after": {k: metrics["tofu"].get(k) or 0.0 for k in ("model_utility", "forget_Q_A_ROUGE",
                                                                 "forget_Q_A_Prob")}}
    page.add_figure("before_after", figures.bar_comparison(bars, "Before vs after unlearning"),
                    "Model utility and forget-set ROUGE / probability before and after.")


def unlearning_curves(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """(step, value) of ``forget_nll``, ``forget_loss`` and ``retain_loss`` from the run's ``log.jsonl``
    ``train`` events (the batch means the trainer logs every ``train.logging_steps``); bad lines skipped."""
    out: dict[str, list[tuple[float, float]]] = {"forget_nll": [], "forget_loss": [], "retain_loss": []}
    path = run_dir / "log.jsonl"
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a killed run can leave a partial last line
        if not isinstance(event, dict) or event.get("event") != "train" or not isinstance(event.get("step"), int):
            continue
        for key, points in out.items():
            if isinstance(event.get(key), int | float):
                points.append((float(event["step"]), float(event[key])))
    return out


def _add_curves(page: Report, run_dir: Path, config: UnlearnConfig) -> None:
    curves = unlearning_curves(run_dir)
    page.add_heading("Unlearning curves")
    if not any(curves.values()):
        page.add_note("The run's log.jsonl has no logged training steps (lower train.logging_steps).")
        return
    page.add_figure("forget_curve", figures.training_curves(
        {"forget NLL (batch mean per token)": curves["forget_nll"],
         f"forget term of {config.method}": curves["forget_loss"]}, title="Forget set during unlearning"),
        "Forget batches at each logged step: mean NLL per answer token (higher = more forgotten) and the "
        "objective's forget term.")
    if any(v for _, v in curves["retain_loss"]):
        page.add_figure("retain_curve", figures.training_curves(
            {"retain term (batch mean)": curves["retain_loss"]}, title="Retain set during unlearning"),
            "The objective's retain term on the retain batches at each logged step (NLL or KL: lower = retain "
            "knowledge kept).")


def _add_guard_weights(page: Report, run_dir: Path, metrics: dict[str, Any]) -> None:
    page.add_heading("GUARD weights")
    path = run_dir / "attribution.json"
    if not path.is_file():
        page.add_note("GUARD was on but the run directory has no attribution.json.", kind="warning")
        return
    ids, scores, weights = read_attribution(path)
    g = metrics.get("guard") or {}
    page.add_keyvalues({k: g.get(k) for k in ("tau", "normalize", "effective_samples", "weight_min", "weight_max",
                                              "recompute_every") if k in g},
                       caption="GUARD: w = softmax(−a/τ) over the forget set, a_i = ⟨∇ℓ_i, ḡ_R⟩ at θ₀")
    page.add_figure("guard_weights", figures.guard_weights_figure(weights.tolist(), scores.tolist()),
                    f"Weight N·w of each of the {len(ids)} forget samples (1 = uniform; > 1 unlearned more strongly, "
                    "< 1 more gently), from attribution.json; right: against the attribution score.")
    recomputed = sorted((run_dir / "attribution").glob("step-*.json")) if (run_dir / "attribution").is_dir() else []
    if recomputed:
        page.add_note(f"The weights were recomputed {len(recomputed)} time(s) during the run "
                      "(attribution/step-*.json); the figure shows those at θ₀.")
