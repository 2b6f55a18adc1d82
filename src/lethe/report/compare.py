"""Compare run directories side by side (backs ``lethe report RUN...``).

Each run holds a ``metrics.json``; its nested dicts are flattened to dotted keys and shown in one table
(rows = metrics, columns = runs) where rows whose values differ between runs are highlighted. A directory
without ``metrics.json`` that holds audit results (a demo arm such as ``runs/demo-gf/standard``) is
summarised from them instead: ``train_metrics.json`` -> ``train.*``, ``extraction.json`` -> ``extraction.*``
(per-item lists left out), ``mia.json`` -> ``mia.<attack>.auc`` / TPRs, ``canaries.json`` ->
``canaries.exposure_by_repetitions.*`` -- the same names as an arm's block in the demo's ``metrics.json``.

Figures are added from whatever the runs have, looked for in the run directory and its direct sub-folders
(a demo keeps one sub-folder per arm):

* ``extraction.json`` -> ROUGE-L distribution of every run (per-item ``items[].rougeL``, else ``rougeL_all``);
* ``mia.json`` -> ROC curves, one figure per attack with one curve per run. The layout is the one
  :func:`lethe.audit.mia.run_mia` writes: ``{"attacks": {name: {"auc": x, "roc": {"fpr": [...],
  "tpr": [...]}, ...}}}``; an attack entry with ``fpr`` / ``tpr`` at its top level is accepted too. The first
  :data:`MAX_ROC_FIGURES` attacks in :data:`ROC_ATTACK_ORDER` order are drawn (AUCs of all are in the table);
* ``canaries.json`` -> exposure vs. repetitions (``exposure_by_repetitions``, numeric keys), one line per run,
  with the largest ``canaries[].max_exposure`` (log2 |R|) as the ceiling;
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

__all__ = ["compare_runs", "flatten", "load_metrics", "scalars", "values_differ"]

MAX_LIST = 8  # lists of at most this many scalars are shown as one cell; longer ones are left out
ROC_ATTACK_ORDER = ("loss", "zlib", "min_k_0.2", "min_k_pp_0.2", "reference", "gradnorm")
MAX_ROC_FIGURES = 4


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
    except UnicodeDecodeError as exc:
        raise LetheError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise LetheError(f"{path}: cannot read ({exc.strerror})") from None


ARM_FILES = ("train_metrics.json", "extraction.json", "mia.json", "canaries.json")
_MIA_KEYS = ("auc", "auc_ci", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr", "tpr_at_5%_fpr")


def load_metrics(run_dir: Path) -> dict[str, Any]:
    """The flattened metrics of ``run_dir``; LetheError naming the run if there are none or they are bad.

    ``metrics.json`` when there is one, else a summary of the audit results in the directory.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LetheError(f"run directory {run_dir} does not exist")
    path = run_dir / "metrics.json"
    if not path.is_file():
        if not any((run_dir / name).is_file() for name in ARM_FILES):
            raise LetheError(f"no metrics.json in run directory {run_dir} (nor any of {', '.join(ARM_FILES)})")
        return flatten(arm_metrics(run_dir))
    data = _read_json(path)
    if not isinstance(data, dict):
        raise LetheError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return flatten(data)


def scalars(data: Any) -> dict[str, Any]:
    """The entries of a dict that are neither lists nor dicts ({} for anything that is not a dict)."""
    return {k: v for k, v in data.items() if not isinstance(v, list | dict)} if isinstance(data, dict) else {}


def _extraction_summary(data: Any) -> dict[str, Any]:
    """Scalars of an ``extraction.json`` plus those of its ``semantic`` block (means, featurizer)."""
    out = scalars(data)
    if isinstance(data, dict) and isinstance(data.get("semantic"), dict):
        out["semantic"] = scalars(data["semantic"])
    return out


def _mia_summary(data: Any) -> dict[str, Any]:
    attacks = data.get("attacks") if isinstance(data, dict) else None
    if not isinstance(attacks, dict):
        return {}
    out: dict[str, Any] = {"protocol": data.get("protocol", "lethe")}
    out.update({name: {k: a[k] for k in _MIA_KEYS if k in a} for name, a in attacks.items() if isinstance(a, dict)})
    return out


def arm_metrics(run_dir: Path) -> dict[str, Any]:
    """Metrics of a directory without ``metrics.json``, from its audit results (see the module docstring)."""
    readers = {"train_metrics.json": ("train", lambda d: d), "extraction.json": ("extraction", _extraction_summary),
               "mia.json": ("mia", _mia_summary),
               "canaries.json": ("canaries", lambda d: {"exposure_by_repetitions": scalars(
                   d.get("exposure_by_repetitions") if isinstance(d, dict) else None)})}
    out: dict[str, Any] = {}
    for filename, (key, summarise) in readers.items():
        if (run_dir / filename).is_file():
            out[key] = summarise(_read_json(run_dir / filename))
    return out


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


def _real(value: Any) -> float:
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan


def _curve(entry: Any) -> tuple[list[float], list[float], float] | None:
    """(fpr, tpr, auc) of one attack entry: ``{"auc", "roc": {"fpr", "tpr"}}`` or ``{"auc", "fpr", "tpr"}``."""
    if not isinstance(entry, dict):
        return None
    points = entry["roc"] if isinstance(entry.get("roc"), dict) else entry
    if not (isinstance(points.get("fpr"), list) and isinstance(points.get("tpr"), list)):
        return None
    fpr, tpr = [_real(v) for v in points["fpr"]], [_real(v) for v in points["tpr"]]
    if len(fpr) != len(tpr):
        return None
    return fpr, tpr, _real(entry.get("auc", entry.get("roc_auc")))


def _mia_curves(data: Any) -> dict[str, tuple[list[float], list[float], float]]:
    """Attack name -> (fpr, tpr, auc) from a ``mia.json`` (see the module docstring)."""
    if not isinstance(data, dict):
        return {}
    single = _curve(data)
    if single is not None and not isinstance(data.get("attacks"), dict):
        return {str(data.get("attack") or data.get("name") or "attack"): single}
    attacks = next((data[key] for key in ("attacks", "curves") if isinstance(data.get(key), dict)), data)
    curves = {str(name): _curve(entry) for name, entry in attacks.items()}
    return {name: curve for name, curve in curves.items() if curve is not None}


def _exposure(data: Any) -> tuple[list[tuple[int, float]], float | None]:
    """(repetitions, exposure) of every canary and the largest max_exposure of a ``canaries.json`` (the means
    of ``exposure_by_repetitions`` when it lists no canaries)."""
    if not isinstance(data, dict):
        return [], None
    rows = [c for c in data.get("canaries") or [] if isinstance(c, dict)]
    points = sorted((int(c["repetitions"]), _real(c.get("exposure"))) for c in rows
                    if isinstance(c.get("repetitions"), int) and not isinstance(c["repetitions"], bool))
    if not points and isinstance(data.get("exposure_by_repetitions"), dict):
        points = sorted((int(r), _real(e)) for r, e in data["exposure_by_repetitions"].items() if str(r).isdigit())
    ceilings = [_real(c.get("max_exposure")) for c in rows]
    ceilings = [c for c in ceilings if math.isfinite(c)]
    return points, max(ceilings) if ceilings else None


def _attack_order(names: list[str]) -> list[str]:
    preferred = [a for a in ROC_ATTACK_ORDER if a in names]
    return preferred + [a for a in names if a not in preferred]


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


def _delta(key: str, a: Any, b: Any) -> float | str | None:
    """b − a for two numbers (percentage points for rates in [0, 1]); None otherwise."""
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (a, b)):
        return None
    delta = float(b) - float(a)
    if is_rate_key(key) and all(0 <= float(v) <= 1 for v in (a, b)):
        return f"{100 * delta:+.1f} pp"  # percentage points, like the rates themselves
    return delta


def _metric_rows(metrics: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]], list[int]]:
    """(metric keys, table rows [key, value per run(, Δ)], indices of rows whose values differ)."""
    keys = list(dict.fromkeys(k for m in metrics for k in m))
    rows, highlight = [], []
    for key in keys:
        values = [m.get(key) for m in metrics]
        differ = len(metrics) > 1 and values_differ(values)
        if differ:
            highlight.append(len(rows))
        row: list[Any] = [key, *values]
        if len(metrics) == 2:
            row.append(_delta(key, *values) if differ else None)
        rows.append(row)
    return keys, rows, highlight


def compare_runs(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write a comparison report (``report.md``, ``report.html``, ``figures/``) into ``out_dir``.

    Returns the path of ``report.html``. Raises LetheError when a run has neither a (valid) ``metrics.json``
    nor audit results.
    """
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise LetheError("compare_runs: no run directories given")
    metrics = [load_metrics(p) for p in run_dirs]
    labels = _labels(run_dirs)
    keys, rows, highlight = _metric_rows(metrics)
    header = ["metric", *labels] + ([f"Δ ({labels[1]} − {labels[0]})"] if len(run_dirs) == 2 else [])

    report = Report("Run comparison", subtitle=f"{len(run_dirs)} runs, {len(keys)} metrics")
    report.add_table([{"run": label, "directory": str(p.resolve())} for label, p in zip(labels, run_dirs,
                                                                                        strict=True)],
                     caption="Runs")
    if len(run_dirs) > 1:
        report.add_note(f"{len(highlight)} of {len(keys)} metrics differ between the runs (highlighted).")
    report.add_heading("Metrics")
    report.add_table(rows, header=header, caption="metrics, flattened", highlight=highlight, row_keys=keys)
    _add_figures(report, labels, run_dirs)
    _, html_path = report.write(out_dir)
    return html_path


Curve = tuple[list[float], list[float], float]


def _collect(labels: list[str], run_dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """Per figure kind, series name ("run" or "run/arm") -> data, from the runs' result files."""
    found: dict[str, dict[str, Any]] = {"rouge": {}, "roc": {}, "exposure": {}, "steps": {}, "tokens": {}}
    for label, run_dir in zip(labels, run_dirs, strict=True):
        for suffix, path in _places(run_dir, "extraction.json"):
            scores = _rouge_scores(_read_json(path))
            if scores:
                found["rouge"][label + suffix] = scores
        for suffix, path in _places(run_dir, "mia.json"):
            for attack, curve in _mia_curves(_read_json(path)).items():
                found["roc"].setdefault(attack, {})[label + suffix] = curve
        for suffix, path in _places(run_dir, "canaries.json"):
            points, ceiling = _exposure(_read_json(path))
            if points:
                found["exposure"][label + suffix] = (points, ceiling)
        for suffix, path in _places(run_dir, "log.jsonl"):
            by_step, by_tokens = _train_series(path)
            if by_step:
                found["steps"][label + suffix] = by_step
            if by_tokens:
                found["tokens"][label + suffix] = by_tokens
    return found


def _add_figures(report: Report, labels: list[str], run_dirs: list[Path]) -> None:
    found = _collect(labels, run_dirs)
    if not any(found[kind] for kind in ("rouge", "roc", "exposure", "steps")):
        return
    report.add_heading("Figures")
    if found["rouge"]:
        report.add_figure("rouge_distribution", figures.rouge_distribution(found["rouge"]),
                          "ROUGE-L between generated and true suffixes, per document, all runs.")
    left_out = _add_roc_figures(report, found["roc"])
    if found["exposure"]:
        ceilings = [c for _, c in found["exposure"].values() if c is not None]
        series = {name: points for name, (points, _) in found["exposure"].items()}
        report.add_figure("exposure", figures.exposure_vs_repetitions(series, max(ceilings) if ceilings else None),
                          "Canary exposure (bits, mean per repetition count) vs. copies in the training data.")
    if found["steps"]:
        tokens = found["tokens"] or None
        report.add_figure("training_curves", figures.training_curves(found["steps"], tokens),
                          "Training loss per logged step" + (" and per supervised token." if tokens else "."))
    if left_out:
        report.add_note(f"ROC curves of {', '.join(left_out)} are not drawn; their AUCs and TPRs are in the "
                        "metrics table.")


def _add_roc_figures(report: Report, by_attack: dict[str, dict[str, Curve]]) -> list[str]:
    """One ROC figure per attack (the first MAX_ROC_FIGURES in ROC_ATTACK_ORDER); returns the attacks left out."""
    attacks = _attack_order(list(by_attack))
    shown, left_out = attacks[:MAX_ROC_FIGURES], attacks[MAX_ROC_FIGURES:]
    for attack in shown:
        report.add_figure(f"roc_{attack}", figures.roc_curves(by_attack[attack], title=f"ROC, {attack} attack"),
                          f"Membership inference with the {attack} attack, every run (log-scale FPR).")
    return left_out
