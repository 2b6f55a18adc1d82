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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lethe.errors import LetheError
from lethe.report import figures
from lethe.report.html import Report, is_rate_key
from lethe.report.tables import mia_rows, sacrifice_flag
from lethe.runs import read_run_file

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
    out.update({name: {k: a[k] for k in MIA_FIELDS if k in a} for name, a in attacks.items() if isinstance(a, dict)})
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


@dataclass
class RunInfo:
    """What a run directory is: its command (``run.json``), the model it audited or produced, its status."""

    label: str
    path: Path
    kind: str  # run.json's command (train, unlearn, audit-mia, ...), "demo arm", or "unknown"
    status: str | None
    model: str | None  # the audited model (audits), the model written (train / unlearn), else None
    base: str | None = None  # train / unlearn: the model they started from (config.yaml model.name)


PRODUCES_MODEL = ("train", "unlearn")


def _model_key(value: Any) -> str | None:
    """A model reference as one comparable string: the resolved path when it exists, else the text as given."""
    if not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def _config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}  # config.yaml is only read to link runs: an unreadable one just links nothing
    return data if isinstance(data, dict) else {}


def run_info(run_dir: Path, label: str) -> RunInfo:
    """The :class:`RunInfo` of ``run_dir`` from its ``run.json`` and ``config.yaml``."""
    record = read_run_file(run_dir) or {}
    config = _config(run_dir)
    kind = str(record.get("command") or ("demo arm" if (run_dir / "train_metrics.json").is_file() else "unknown"))
    model_cfg = config.get("model")
    base = model_cfg.get("name") if isinstance(model_cfg, dict) else None
    if kind in PRODUCES_MODEL or kind == "demo arm":
        model = str((run_dir / "model").resolve()) if (run_dir / "model").is_dir() else None
        return RunInfo(label, run_dir, kind, record.get("status"), model, base if kind in PRODUCES_MODEL else None)
    return RunInfo(label, run_dir, kind, record.get("status"), _model_key(model_cfg))


# summary columns: (column, flattened metric keys to try, in order)
HEADLINES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("train loss", ("train_loss", "train.train_loss")),
    ("exact match rate", ("extraction.exact_match_rate",)),
    ("ROUGE-L", ("extraction.rougeL",)),
    ("MIA loss AUC", ("mia.attacks.loss.auc", "mia.loss.auc")),
    ("mean exposure (bits)", ("canaries.mean_exposure",)),
    ("forget quality", ("tofu.forget_quality",)),
    ("model utility", ("tofu.model_utility",)),
    ("forget ROUGE", ("tofu.forget_Q_A_ROUGE",)),
    ("headline holds", ("headline_holds",)),
)


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for column, keys in HEADLINES:
        out[column] = next((metrics[k] for k in keys if k in metrics), None)
    return out


def _model_labels(infos: list[RunInfo]) -> dict[str, str]:
    """Model key -> how the report names it: "<run>/model" for a model one of the runs wrote, else its path."""
    labels: dict[str, str] = {}
    for info in infos:
        if info.model and info.kind in PRODUCES_MODEL + ("demo arm",):
            labels.setdefault(info.model, f"{info.label}/model")
    for info in infos:
        if info.model and info.model not in labels:
            labels[info.model] = info.model
    return labels


def compare_runs(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write a comparison report (``report.md``, ``report.html``, ``figures/``) into ``out_dir``.

    The page opens with a summary (one row per run: kind, model, status, headline metrics), then one section
    per model: the run that wrote it (``lethe train`` / ``unlearn``, read from ``run.json`` and
    ``config.yaml``) and every audit of it (the ``model`` of their ``config.yaml``), each with its metrics
    and figures; runs without a model (demos) follow. Runs of one kind on several models are then compared
    side by side, metric by metric, differing values highlighted. Returns the path of ``report.html``;
    raises LetheError when a run has neither a (valid) ``metrics.json`` nor audit results.
    """
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise LetheError("compare_runs: no run directories given")
    metrics = [load_metrics(p) for p in run_dirs]
    labels = _labels(run_dirs)
    infos = [run_info(p, label) for p, label in zip(run_dirs, labels, strict=True)]
    models = _model_labels(infos)
    report = Report("Run comparison", subtitle=f"{len(run_dirs)} run{'s' * (len(run_dirs) > 1)}, "
                                               f"{len(models)} model{'s' * (len(models) != 1)}")
    report.add_heading("Summary")
    summary = [{"run": i.label, "kind": i.kind, "model": models.get(i.model, "—") if i.model else "—",
                "status": i.status, **_headline(m)} for i, m in zip(infos, metrics, strict=True)]
    used = [c for c in summary[0] if c in ("run", "kind", "model") or any(r[c] is not None for r in summary)]
    report.add_table([{c: r[c] for c in used} for r in summary],
                     caption="One row per run: what it is, the model it audited or wrote, its headline numbers "
                             "(all of them in the sections below)")
    report.add_table([{"run": i.label, "directory": str(i.path.resolve())} for i in infos], caption="Directories")
    by_model: dict[str | None, list[int]] = {}
    for index, info in enumerate(infos):
        by_model.setdefault(info.model, []).append(index)
    order = sorted(by_model, key=lambda k: (k is None, min(by_model[k])))  # models first, then the rest
    for number, key in enumerate(order, start=1):
        indices = by_model[key]
        _add_group(report, number, key, models, [infos[i] for i in indices], [metrics[i] for i in indices], infos)
    _add_side_by_side(report, infos, metrics)
    _, html_path = report.write(out_dir)
    return html_path


def _add_group(report: Report, number: int, key: str | None, models: dict[str, str], infos: list[RunInfo],
               metrics: list[dict[str, Any]], everyone: list[RunInfo]) -> None:
    if key is None:
        report.add_heading("Runs without a single model (demos, other outputs)")
    else:
        report.add_heading(f"Model {models[key]}")
        writer = next((i for i in everyone if i.model == key and i.kind in PRODUCES_MODEL + ("demo arm",)), None)
        if writer is not None:
            base = f" from {models.get(_model_key(writer.base) or '', writer.base)}" if writer.base else ""
            report.add_paragraph(f"Written by run {writer.label} ({writer.kind}{base}); {key}.")
        else:
            report.add_paragraph(f"{key} (not written by any of these runs).")
        audits = [i.label for i in infos if i is not writer]
        if audits:
            report.add_paragraph(f"Audited by: {', '.join(audits)}.")
    for info, values in zip(infos, metrics, strict=True):
        _add_run_metrics(report, info, values)
    _add_figures(report, [i.label for i in infos], [i.path for i in infos], prefix=f"m{number}_")


def _add_run_metrics(report: Report, info: RunInfo, values: dict[str, Any]) -> None:
    """One run's metrics: MIA attacks as the attack table (intervals, unresolvable TPRs), the rest flattened."""
    attacks, consumed = _attacks(values)
    tofu = [k[len("tofu_before."):] for k in values if k.startswith("tofu_before.")]
    srs = [k[len("sacrifice_rate."):] for k in values if k.startswith("sacrifice_rate.")]
    consumed |= {f"tofu_before.{k}" for k in tofu} | {f"tofu.{k}" for k in tofu}
    consumed |= {k for k in values if k.startswith(("sacrifice_rate.", "sacrifice_parts."))}
    plain = {k: v for k, v in values.items() if k not in consumed and not _setting(k)}
    if plain:
        report.add_table([[k, v] for k, v in plain.items()], header=["metric", "value"],
                         caption=f"{info.label} ({info.kind}; its settings are in its config.yaml)",
                         row_keys=list(plain))
    if tofu:
        report.add_table([[k, values[f"tofu_before.{k}"], values.get(f"tofu.{k}")] for k in tofu],
                         header=["TOFU metric", "before", "after"], caption=f"{info.label}: TOFU before and after",
                         row_keys=tofu)
    if srs:
        rows = []
        for metric in srs:
            retain, forget = (values.get(f"sacrifice_parts.{metric}.{part}") for part in ("retain_drop", "forget_drop"))
            rows.append({"metric": metric, "retain lost": retain, "forget removed": forget,
                         "SR": values[f"sacrifice_rate.{metric}"], "reading": sacrifice_flag(retain, forget)})
        report.add_table(rows, caption=f"{info.label}: sacrifice rates (lower is better only while the forget "
                                       "metric went down)")
    if attacks:
        rows, notes = mia_rows(attacks)
        report.add_table(rows, caption=f"{info.label}: membership inference per attack (intervals: bootstrap 95%)")
        for note in notes:
            report.add_note(note)


SETTING_GROUPS = ("objective.", "lora.", "goldfish.", "memsinks.", "guard.")


def _setting(key: str) -> bool:
    """Whether a flattened metrics key is a setting or a path (left to config.yaml in a run's own table)."""
    if key.startswith(SETTING_GROUPS):
        return not key.endswith((".enabled", ".effective_samples", ".weight_min", ".weight_max"))
    return key.endswith(("_dir", "_file", "resumed_from"))


MIA_FIELDS = (*_MIA_KEYS, "tpr_at_0_fpr", "n_members", "n_nonmembers",
              *(f"tpr_at_{x}_fpr{end}" for x in ("0.1%", "1%", "5%") for end in ("_ci", "_note")))


def _attacks(values: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """(attack -> its numbers, the flattened keys they came from) of ``mia.attacks.<a>.<k>`` / ``mia.<a>.<k>``."""
    out: dict[str, dict[str, Any]] = {}
    keys: dict[str, list[str]] = {}
    for key, value in values.items():
        prefix = "mia.attacks." if key.startswith("mia.attacks.") else "mia." if key.startswith("mia.") else None
        if prefix is None:
            continue
        rest = key[len(prefix):]
        field = next((f for f in MIA_FIELDS if rest.endswith(f".{f}")), None)
        if field is not None:
            name = rest[: -len(field) - 1]
            out.setdefault(name, {})[field] = value
            keys.setdefault(name, []).append(key)
    attacks = {name: a for name, a in out.items() if "auc" in a}
    return attacks, {k for name in attacks for k in keys[name]}


def _add_side_by_side(report: Report, infos: list[RunInfo], metrics: list[dict[str, Any]]) -> None:
    """Runs of one kind on more than one model (or several runs of one kind): metric by metric."""
    kinds: dict[str, list[int]] = {}
    for index, info in enumerate(infos):
        kinds.setdefault(info.kind, []).append(index)
    shown = False
    for kind, indices in kinds.items():
        if len(indices) < 2:
            continue
        if not shown:
            report.add_heading("Side by side")
            shown = True
        labels = [infos[i].label for i in indices]
        keys, rows, highlight = _metric_rows([metrics[i] for i in indices])
        header = ["metric", *labels] + ([f"Δ ({labels[1]} − {labels[0]})"] if len(indices) == 2 else [])
        report.add_note(f"{kind}: {len(highlight)} of {len(keys)} metrics differ between {', '.join(labels)} "
                        "(highlighted).")
        report.add_table(rows, header=header, caption=f"{kind} runs, metrics flattened", highlight=highlight,
                         row_keys=keys)


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


def _add_figures(report: Report, labels: list[str], run_dirs: list[Path], prefix: str = "") -> None:
    found = _collect(labels, run_dirs)
    if found["rouge"]:
        report.add_figure(f"{prefix}rouge_distribution", figures.rouge_distribution(found["rouge"]),
                          "ROUGE-L between generated and true suffixes, per document.")
    left_out = _add_roc_figures(report, found["roc"], prefix)
    if found["exposure"]:
        ceilings = [c for _, c in found["exposure"].values() if c is not None]
        series = {name: points for name, (points, _) in found["exposure"].items()}
        report.add_figure(f"{prefix}exposure", figures.exposure_vs_repetitions(
            series, max(ceilings) if ceilings else None),
            "Canary exposure (bits) vs. copies in the training data: every canary and the mean per count with its "
            "95% t-interval.")
    if found["steps"]:
        tokens = found["tokens"] or None
        report.add_figure(f"{prefix}training_curves", figures.training_curves(found["steps"], tokens),
                          "Training loss per logged step" + (" and per supervised token." if tokens else "."))
    if left_out:
        report.add_note(f"ROC curves of {', '.join(left_out)} are not drawn; their AUCs and TPRs are in the "
                        "tables.")


def _add_roc_figures(report: Report, by_attack: dict[str, dict[str, Curve]], prefix: str = "") -> list[str]:
    """One ROC figure with the first MAX_ROC_FIGURES attacks (ROC_ATTACK_ORDER) of every run of the group;
    returns the attacks left out."""
    attacks = _attack_order(list(by_attack))
    shown, left_out = attacks[:MAX_ROC_FIGURES], attacks[MAX_ROC_FIGURES:]
    if shown:
        runs = {run for attack in shown for run in by_attack[attack]}
        curves = {(f"{run} {attack}" if len(runs) > 1 else attack): curve
                  for attack in shown for run, curve in by_attack[attack].items()}
        report.add_figure(f"{prefix}roc", figures.roc_curves(curves, title="Membership inference ROC"),
                          f"ROC of the {', '.join(shown)} attacks (log-scale FPR from 1/n_nonmembers).")
    return left_out
