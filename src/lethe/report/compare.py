"""Compare run directories side by side (backs ``lethe report RUN...``).

Each run must hold a ``metrics.json``; its nested dicts are flattened to dotted keys and shown in one table
(rows = metrics, columns = runs) where rows whose values differ between runs are highlighted. Figures are
added from whatever the runs have in common, looked for in the run directory and its direct sub-folders
(a demo keeps one sub-folder per arm):

* ``extraction.json`` -> ROUGE-L distribution of every run (per-item ``items[].rougeL``, else ``rougeL_all``);
* ``mia.json`` -> ROC curves: ``{"fpr": [...], "tpr": [...], "auc": x}`` for one attack, or a mapping
  ``name -> {"fpr", "tpr", "auc"}``, at the top level or under ``"attacks"`` / ``"curves"`` / ``"roc"``;
* ``log.jsonl`` -> training curves from its ``"train"`` events that carry ``step`` and ``loss`` (and a
  loss-vs-supervised-tokens panel when they carry ``supervised_tokens``).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lethe.errors import LetheError
from lethe.report import figures
from lethe.report.html import Report, is_rate_key

__all__ = ["compare_runs", "flatten", "load_metrics", "values_differ"]

MAX_LIST = 8  # lists of at most this many scalars are shown as one cell; longer ones are left out


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": value}``; short scalar lists kept whole, long or nested lists dropped."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                out.update(flatten(value, name))
            elif isinstance(value, list):
                if len(value) <= MAX_LIST and all(not isinstance(v, dict | list) for v in value):
                    out[name] = value
            else:
                out[name] = value
    elif prefix:
        out[prefix] = obj
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LetheError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
    except OSError as exc:
        raise LetheError(f"{path}: cannot read ({exc.strerror})") from None


def load_metrics(run_dir: Path) -> dict[str, Any]:
    """The flattened ``metrics.json`` of ``run_dir``; LetheError naming the run if it is missing or bad."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LetheError(f"run directory {run_dir} does not exist")
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise LetheError(f"no metrics.json in run directory {run_dir}")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise LetheError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return flatten(data)


def values_differ(values: list[Any]) -> bool:
    """Whether the runs' values for one metric differ (missing counts as different; floats to 1e-9)."""
    first = values[0]
    for value in values[1:]:
        both_numbers = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (first, value))
        if both_numbers:
            a, b = float(first), float(value)
            if math.isnan(a) and math.isnan(b):
                continue
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
                return True
        elif first != value:
            return True
    return False


def _labels(run_dirs: list[Path]) -> list[str]:
    labels: list[str] = []
    for path in run_dirs:
        name = path.resolve().name or str(path)
        label, n = name, 1
        while label in labels:
            n += 1
            label = f"{name} ({n})"
        labels.append(label)
    return labels


def _places(run_dir: Path, filename: str) -> Iterator[tuple[str, Path]]:
    """``filename`` in the run directory ("" suffix) and in its direct sub-folders ("/sub" suffix)."""
    if (run_dir / filename).is_file():
        yield "", run_dir / filename
    for sub in sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (sub / filename).is_file():
            yield f"/{sub.name}", sub / filename


def _rouge_scores(data: Any) -> list[float]:
    if not isinstance(data, dict):
        return []
    items = data.get("items")
    if isinstance(items, list) and items and all(isinstance(i, dict) and "rougeL" in i for i in items):
        raw = [i["rougeL"] for i in items]
    else:
        raw = data.get("rougeL_all") or []
    return [float(v) for v in raw if isinstance(v, numbers.Real) and not isinstance(v, bool)]


def _curve(entry: Any) -> tuple[list[float], list[float], float] | None:
    if isinstance(entry, dict) and isinstance(entry.get("fpr"), list) and isinstance(entry.get("tpr"), list):
        auc = entry.get("auc", entry.get("roc_auc"))
        auc = float(auc) if isinstance(auc, numbers.Real) and not isinstance(auc, bool) else math.nan
        fpr = [float(v) if isinstance(v, numbers.Real) else math.nan for v in entry["fpr"]]
        tpr = [float(v) if isinstance(v, numbers.Real) else math.nan for v in entry["tpr"]]
        if len(fpr) == len(tpr):
            return fpr, tpr, auc
    return None


def _mia_curves(data: Any) -> dict[str, tuple[list[float], list[float], float]]:
    """Attack name -> (fpr, tpr, auc) from the accepted ``mia.json`` layouts (see the module docstring)."""
    single = _curve(data)
    if single is not None:
        return {str(data.get("attack") or data.get("name") or "attack"): single}
    if not isinstance(data, dict):
        return {}
    for key in ("attacks", "curves", "roc"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    out = {}
    for name, entry in data.items():
        curve = _curve(entry)
        if curve is not None:
            out[str(name)] = curve
    return out


def _train_series(path: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(step, loss) and (supervised_tokens, loss) pairs of the ``train`` events; bad lines are skipped."""
    by_step, by_tokens = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a killed run can leave a partial last line
        if not isinstance(event, dict) or event.get("event") != "train":
            continue
        loss, step, tokens = event.get("loss"), event.get("step"), event.get("supervised_tokens")
        if not isinstance(loss, numbers.Real) or not isinstance(step, numbers.Real):
            continue
        by_step.append((float(step), float(loss)))
        if isinstance(tokens, numbers.Real):
            by_tokens.append((float(tokens), float(loss)))
    return by_step, by_tokens


def compare_runs(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write a comparison report (``report.md``, ``report.html``, ``figures/``) into ``out_dir``.

    Returns the path of ``report.html``. Raises LetheError when a run has no (valid) ``metrics.json``.
    """
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise LetheError("compare_runs: no run directories given")
    metrics = [load_metrics(p) for p in run_dirs]
    labels = _labels(run_dirs)
    keys = list(dict.fromkeys(k for m in metrics for k in m))
    rows, row_keys, highlight = [], [], []
    for key in keys:
        values = [m.get(key) for m in metrics]
        if len(run_dirs) > 1 and values_differ(values):
            highlight.append(len(rows))
        row: list[Any] = [key, *values]
        if len(run_dirs) == 2:
            a, b = values
            numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (a, b))
            delta = float(b) - float(a) if numeric and len(rows) in highlight else None
            if delta is not None and is_rate_key(key) and all(0 <= float(v) <= 1 for v in (a, b)):
                delta = f"{100 * delta:+.1f} pp"  # percentage points, like the rates themselves
            row.append(delta)
        rows.append(row)
        row_keys.append(key)
    header = ["metric", *labels] + ([f"Δ ({labels[1]} − {labels[0]})"] if len(run_dirs) == 2 else [])

    report = Report("Run comparison", subtitle=f"{len(run_dirs)} runs, {len(keys)} metrics")
    report.add_table([{"run": label, "directory": str(p.resolve())} for label, p in zip(labels, run_dirs,
                                                                                        strict=True)],
                     caption="Runs")
    if len(run_dirs) > 1:
        report.add_note(f"{len(highlight)} of {len(keys)} metrics differ between the runs (highlighted).")
    report.add_heading("Metrics")
    report.add_table(rows, header=header, caption="metrics.json, flattened", highlight=highlight,
                     row_keys=row_keys)

    rouge: dict[str, list[float]] = {}
    curves: dict[str, tuple[list[float], list[float], float]] = {}
    steps: dict[str, list[tuple[float, float]]] = {}
    tokens: dict[str, list[tuple[float, float]]] = {}
    for label, run_dir in zip(labels, run_dirs, strict=True):
        for suffix, path in _places(run_dir, "extraction.json"):
            scores = _rouge_scores(_read_json(path))
            if scores:
                rouge[label + suffix] = scores
        for suffix, path in _places(run_dir, "mia.json"):
            for attack, curve in _mia_curves(_read_json(path)).items():
                curves[f"{label}{suffix}: {attack}"] = curve
        for suffix, path in _places(run_dir, "log.jsonl"):
            by_step, by_tokens = _train_series(path)
            if by_step:
                steps[label + suffix] = by_step
            if by_tokens:
                tokens[label + suffix] = by_tokens
    if rouge or curves or steps:
        report.add_heading("Figures")
    if rouge:
        report.add_figure("rouge_distribution", figures.rouge_distribution(rouge),
                          "ROUGE-L between generated and true suffixes, per document, all runs.")
    if curves:
        report.add_figure("roc_curves", figures.roc_curves(curves),
                          "Membership-inference ROC curves (log-scale FPR).")
    if steps:
        report.add_figure("training_curves", figures.training_curves(steps, tokens or None),
                          "Training loss per logged step" + (" and per supervised token." if tokens else "."))
    _, html_path = report.write(out_dir)
    return html_path
