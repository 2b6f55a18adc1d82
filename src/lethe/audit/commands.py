"""Entry functions of ``lethe audit ...``: load model and data, run an audit, write the run directory.

Each writes its result JSON (``extraction.json``, ``mia.json``, ``canaries.json``, ``tofu_eval.json``),
``metrics.json`` (the summary), the resolved settings as ``config.yaml`` (DESIGN §4) and ``report.md`` /
``report.html`` with figures, all atomically. The run directory is claimed first, before the model is loaded
(:func:`audit_run`): it must be free or an earlier run of the same audit (never a train / unlearn / other
audit directory, never a finished audit with other settings). ``config.yaml`` is written at the start, so a
running audit's folder says what it runs (its progress is in ``log.jsonl``: :mod:`lethe.progress`);
``run.json`` says ``running`` until every result is written, and a failed audit leaves nothing (or the
earlier run as it was).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lethe.config import to_yaml
from lethe.data.text import load_documents, read_text_file
from lethe.data.world import EMBEDDED, resolve_source
from lethe.errors import LetheError
from lethe.models import load_model, model_positions
from lethe.report import Report, figures
from lethe.report.compare import scalars
from lethe.report.tables import extraction_examples, mia_rows
from lethe.runs import RUN_FILE, Run, RunLog, atomic_write_json, atomic_write_text, notice, open_run
from lethe.train.manifest import (
    MANIFEST,
    is_train_run,
    manifest_documents,
    read_manifest,
    trained_canaries,
    world_folder,
    world_nonmembers,
)
from lethe.train.memsinks import load_model_in_mode

DEFAULT_DOCUMENTS = "biographies.jsonl"
DEFAULT_CANARIES = "canaries.jsonl"


@dataclass
class ExtractionSettings:
    model: str
    data: str = EMBEDDED
    suffix_len: int = 50
    prefix_len: int = 0  # 0 = every token before the suffix
    batch_size: int = 32
    limit: int = 0
    num_beams: int = 1  # > 1: beam-search attack with B beams
    any_of_beams: bool = False  # count a document as extracted if any of the B beams reproduces it
    semantic: bool = False  # BERTScore-style similarity with the offline all-MiniLM-L6-v2 featurizer
    memsinks_mode: str = ""  # a MemSinks model in this mode (all, dropout, exclude, activate); "" = as saved
    memsinks_ids: list[int] = field(default_factory=list)  # the IDs of exclude / activate


@dataclass
class MIASettings:
    model: str
    members: str
    nonmembers: str = ""  # "" = the never-trained biographies of the world that `members` (a train run) used
    reference: str = ""
    ks: list[float] = field(default_factory=lambda: [0.2, 0.4])
    gradnorm: bool = False
    max_length: int = 0  # sliding-window size in tokens; 0 = the model's maximum positions (MIMIR)
    batch_size: int = 16
    n_bootstrap: int = 1000
    seed: int = 0
    memsinks_mode: str = ""
    memsinks_ids: list[int] = field(default_factory=list)
    protocol: str = "lethe"  # lethe | mimir (reproduces MIMIR's per-sample scores)
    add_eos: bool = False  # score an appended EOS too (lethe protocol only)
    gradnorm_p: str = ""  # 1 | 2 | inf; "" = the protocol's default (lethe 2, mimir inf)


@dataclass
class CanarySettings:
    model: str
    canaries: str = EMBEDDED
    n_samples: int = 2000
    seed: int = 0
    batch_size: int = 64


def load_audit_documents(data: str, limit: int = 0, default_file: str = DEFAULT_DOCUMENTS) -> list[tuple[str, str]]:
    """(id, text) pairs from a documents file, a training run's manifest (the documents it trained on), or a
    folder's / the embedded world's ``default_file``."""
    if is_train_run(data):
        documents = manifest_documents(data)
        return documents[:limit] if limit else documents
    source = resolve_source(data)
    if source.is_dir() and (source / RUN_FILE).is_file():
        raise LetheError(f"{source} is a run directory without {MANIFEST} (only training runs have one; runs "
                         "trained before manifests existed need a documents file)")
    path = source / default_file if source.is_dir() else source
    if source.is_dir() and not path.is_file():
        raise LetheError(f"{source} is a folder without {default_file}; pass a documents file")
    documents = [(d.id, d.text) for d in load_documents(path)]
    return documents[:limit] if limit else documents


def extraction_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("items", "rougeL_all", "semantic_items")}


def audit_extraction(settings: ExtractionSettings, run_dir: str | Path | None = None,
                     model=None, tokenizer=None) -> tuple[Path, dict[str, Any]]:
    """``lethe audit extraction``: suffix extraction on every document; writes extraction.json."""
    check_positive("batch_size", settings.batch_size)
    check_positive("suffix_len", settings.suffix_len)
    documents = load_audit_documents(settings.data, settings.limit)
    with audit_run("audit-extraction", run_dir, settings) as run:
        if model is None or tokenizer is None:
            model, tokenizer = load_model_in_mode(settings.model, settings.memsinks_mode, ids=settings.memsinks_ids)
        return _extraction(run, settings, model, tokenizer, documents)


def _extraction(run: Run, settings: ExtractionSettings, model, tokenizer,
                documents: list[tuple[str, str]]) -> tuple[Path, dict[str, Any]]:
    from lethe.audit.extraction import run_extraction  # rouge_score pulls in nltk (+ sklearn): seconds

    out = run.path
    positions = model_positions(model)
    result = run_extraction(
        model, tokenizer, documents, suffix_len=settings.suffix_len, prefix_len=settings.prefix_len or None,
        batch_size=settings.batch_size, num_beams=settings.num_beams, any_of_beams=settings.any_of_beams,
        max_positions=positions,
    )
    if result.n_prefix_truncated:
        notice(f"{result.n_prefix_truncated} prefix(es) cut from the left to fit the model's {positions} "
               f"positions with the {settings.suffix_len}-token suffix (n_prefix_truncated in extraction.json)")
    report = result.to_dict()
    if settings.semantic:
        add_semantic_similarity(report)
    atomic_write_json(out / "extraction.json", report)
    summary = extraction_summary(report)
    atomic_write_json(out / "metrics.json", {"extraction": summary})
    page = Report("Extraction audit", subtitle=f"model {settings.model}, data {settings.data}")
    page.add_table([{"model": Path(settings.model).name or settings.model, **scalars(summary)}],
                   caption=f"Greedy{'/beam' if settings.num_beams > 1 else ''} extraction of a "
                           f"{settings.suffix_len}-token suffix")
    if isinstance(summary.get("semantic"), dict):
        add_semantic_table(page, summary["semantic"])
    page.add_figure("rouge_distribution", figures.rouge_distribution({settings.model: report["rougeL_all"]}),
                    "ROUGE-L (no stemming) between the generated and the true suffix, per document.")
    add_extraction_examples(page, report["items"])
    page.write(out)
    RunLog(out)("audit_extraction", **scalars(summary), **_semantic_fields(summary))
    return out, summary


def add_extraction_examples(page: Report, items: list[dict[str, Any]], label: str = "", n: int = 6) -> None:
    """Example generations of an extraction audit: true vs generated suffix, the differing tokens marked."""
    examples, what = extraction_examples(items, n)
    if examples:
        page.add_generations(examples, caption=f"Example generations{f' ({label})' if label else ''}: {what}")


def write_config(run_dir: Path, settings: Any) -> Path:
    """The resolved settings of an audit as the run directory's ``config.yaml``."""
    return atomic_write_text(run_dir / "config.yaml", to_yaml(settings))


@contextlib.contextmanager
def audit_run(command: str, run_dir: str | Path | None, settings: Any) -> Iterator[Run]:
    """Claim the run directory of an audit (see the module docstring): config.yaml is written at once and
    run.json says ``running`` until the audit's results are written, then ``finished``."""
    text = to_yaml(settings)
    with open_run(command, run_dir, allow_legacy=False) as run:
        config = run.path / "config.yaml"
        if run.finished and config.is_file() and config.read_text(encoding="utf-8") != text:
            raise LetheError(f"{run.path} holds a finished `lethe {command.replace('-', ' ', 1)}` run with other "
                             "settings (its config.yaml); use another --run-dir")
        run.mark("running")
        run.write_text("config.yaml", text)  # at the start: a running audit says what it runs
        yield run
        run.mark("finished")


def check_positive(name: str, value: Any) -> None:
    """An integer setting that must be >= 1 (a batch size, a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LetheError(f"--{name.replace('_', '-')} must be >= 1, got {value!r}")


def check_mia_settings(settings: MIASettings) -> None:
    if not settings.ks or any(not (isinstance(k, int | float) and math.isfinite(k) and 0 < k <= 1)
                              for k in settings.ks):
        raise LetheError(f"--ks must be fractions in (0, 1], got {settings.ks}")
    check_positive("batch_size", settings.batch_size)
    window = settings.max_length
    if isinstance(window, bool) or not isinstance(window, int) or window < 0 or window == 1:
        raise LetheError(f"--max-length must be 0 (the model's positions) or >= 2, got {window!r}")
    if settings.n_bootstrap < 0:
        raise LetheError(f"--bootstrap must be >= 0 (0 = no confidence intervals), got {settings.n_bootstrap}")


def check_members(members: list[str], nonmembers: list[str], max_overlap: float = 0.0) -> None:
    """Members and non-members must be different texts: identical sets give AUC 0.5 by construction."""
    shared = set(members) & set(nonmembers)
    if not shared:
        return
    if shared >= set(members) or shared >= set(nonmembers):
        raise LetheError(f"members and non-members are the same texts ({len(shared)} shared): a membership "
                         "audit needs texts the model was not trained on as non-members")
    notice(f"{len(shared)} text(s) are both members and non-members; their scores count on both sides", "warning")


def clamp_max_length(max_length: int, model, log: RunLog | None = None, sliding: bool = False) -> int:
    """Texts are scored within the model's positions: a longer ``max_length`` is cut there, and said.

    ``sliding``: ``max_length`` is a scoring window (MIA), so longer texts are still scored whole, window by
    window; otherwise they are truncated.
    """
    positions = model_positions(model)
    if positions is None or max_length <= positions:
        return max_length
    effect = (f"the window is cut to {positions} tokens (longer texts are still scored whole, by sliding window)"
              if sliding else f"texts are truncated at {positions} tokens")
    notice(f"max-length {max_length} exceeds the model's {positions} positions: {effect}")
    if log is not None:
        log("max_length_clamped", requested=max_length, used=positions)
    return positions


def add_semantic_table(page: Report, semantic: dict[str, Any]) -> None:
    """The semantic-similarity means as a table captioned with the featurizer that produced them."""
    means = {k: v for k, v in scalars(semantic).items() if k != "featurizer"}
    page.add_table([means], caption=f"Semantic similarity of generated and true suffixes (BERTScore-style, "
                                    f"raw cosines; featurizer: {semantic.get('featurizer', 'unknown')})")


def _semantic_fields(summary: dict[str, Any]) -> dict[str, Any]:
    semantic = summary.get("semantic")
    if not isinstance(semantic, dict):
        return {}
    return {f"semantic_{k}": v for k, v in scalars(semantic).items()}


def add_semantic_similarity(report: dict[str, Any]) -> None:
    """Add BERTScore-style similarity (offline MiniLM featurizer) to an extraction report, in place."""
    from lethe.audit.similarity import semantic_similarity

    items = report["items"]
    result = semantic_similarity([i["target_text"] for i in items], [i["generated_text"] for i in items])
    per_item = result.pop("items", None) or result.pop("per_item", [])
    for item, scores in zip(items, per_item, strict=False):
        item["semantic"] = scores
    report["semantic"] = result


def audit_mia(settings: MIASettings, run_dir: str | Path | None = None, model=None,
              tokenizer=None) -> tuple[Path, dict[str, Any]]:
    """``lethe audit mia``: every membership-inference attack from one scoring pass; writes mia.json."""
    check_mia_settings(settings)
    members = [text for _, text in load_audit_documents(settings.members)]
    nonmembers = [text for _, text in load_nonmembers(settings)]
    check_members(members, nonmembers)
    with audit_run("audit-mia", run_dir, settings) as run:
        if model is None or tokenizer is None:
            model, tokenizer = load_model_in_mode(settings.model, settings.memsinks_mode, ids=settings.memsinks_ids)
        reference = load_model(settings.reference) if settings.reference else None
        return _mia(run, settings, model, tokenizer, reference, members, nonmembers)


def load_nonmembers(settings: MIASettings) -> list[tuple[str, str]]:
    """``--nonmembers``, or, when it is empty and ``--members`` is a training run on a fictional world, the
    world's biographies the run never trained on (its holdout authors and those ``data.limit`` left out)."""
    if settings.nonmembers:
        return load_audit_documents(settings.nonmembers)
    if not is_train_run(settings.members):
        raise LetheError("--nonmembers is required unless --members is a training run directory (whose "
                         "non-members default to its world's never-trained biographies)")
    return world_nonmembers(settings.members)


def _mia(run: Run, settings: MIASettings, model, tokenizer, reference, members: list[str],
         nonmembers: list[str]) -> tuple[Path, dict[str, Any]]:
    from lethe.audit.mia import run_mia

    out = run.path
    max_length = clamp_max_length(settings.max_length, model, RunLog(out), sliding=True)
    if reference is not None:
        max_length = clamp_max_length(max_length, reference[0], RunLog(out), sliding=True)
    result = run_mia(model, tokenizer, members, nonmembers, reference=reference, ks=tuple(settings.ks),
                     gradnorm=settings.gradnorm, max_length=max_length, batch_size=settings.batch_size,
                     n_bootstrap=settings.n_bootstrap, seed=settings.seed, protocol=settings.protocol,
                     add_eos=settings.add_eos, gradnorm_p=settings.gradnorm_p or None)
    atomic_write_json(out / "mia.json", result)
    summary = mia_summary(result)
    atomic_write_json(out / "metrics.json", {"mia": summary})
    page = Report("Membership inference audit", subtitle=f"model {settings.model}, protocol {result['protocol']}")
    page.add_paragraph(mia_protocol_line(result))
    page.add_paragraph(result["sign_convention"])
    add_mia_table(page, summary["attacks"], caption=f"{result['n_members']} members vs {result['n_nonmembers']} "
                                                    "non-members; intervals: bootstrap 95%")
    page.add_figure("roc", figures.roc_curves(roc_series(result)),
                    f"ROC per attack (log-scale FPR, from 1/{result['n_nonmembers']}: the smallest FPR "
                    f"{result['n_nonmembers']} non-members can measure).")
    page.write(out)
    return out, summary


def add_mia_table(page: Report, attacks: dict[str, Any], caption: str, label: str | None = None) -> None:
    """The per-attack MIA table (AUC with its interval, TPRs or "not resolvable") and why a TPR is not given."""
    rows, notes = mia_rows(attacks, label)
    page.add_table(rows, caption=caption)
    for note in notes:
        page.add_note(note)


def mia_protocol_line(result: dict[str, Any]) -> str:
    """The input protocol and reading rules of an MIA result, for every report that shows MIA numbers."""
    c = result.get("config") or {}
    parts = [f"Input protocol: {result.get('protocol', 'lethe')} (tokenizer defaults"
             f"{', EOS appended' if c.get('add_eos') else ', no EOS appended'}, sliding window "
             f"{c.get('window', '?')} / stride {c.get('stride', '?')}, {c.get('n_windowed', 0)} texts windowed)",
             result.get("tpr_convention", ""), result.get("nan_policy", "")]
    if result.get("gradnorm_reading"):
        parts.append(result["gradnorm_reading"])
    return "; ".join(p for p in parts if p) + " (see docs/protocols.md)"


def mia_summary(result: dict[str, Any]) -> dict[str, Any]:
    from lethe.audit.mia import FPR_TARGETS

    tprs = (f"tpr_at_{x}_fpr{end}" for x, _ in FPR_TARGETS for end in ("", "_ci", "_note"))
    keep = ("auc", "auc_ci", "tpr_at_0_fpr", *tprs, "n_members", "n_nonmembers")
    return {
        "protocol": result.get("protocol", "lethe"),
        "n_members": result["n_members"], "n_nonmembers": result["n_nonmembers"],
        "n_skipped": len(result["skipped"]["members"]) + len(result["skipped"]["nonmembers"]),
        "attacks": {name: {k: a[k] for k in keep if k in a} for name, a in result["attacks"].items()},
    }


def roc_series(result: dict[str, Any], label: str = "") -> dict[str, figures.RocCurve]:
    """The ROC curve of every attack of an MIA result (with its AUC interval and non-member count)."""
    prefix = f"{label} " if label else ""
    return {f"{prefix}{name}": figures.RocCurve(a["roc"]["fpr"], a["roc"]["tpr"], a["auc"], a.get("auc_ci"),
                                                a.get("n_nonmembers", result.get("n_nonmembers")))
            for name, a in result["attacks"].items()}


def load_canaries(source: str) -> list[dict[str, Any]]:
    """Canary records from a JSONL file, or a folder's / the embedded world's canaries.jsonl; for a training run,
    the canaries of its world that it trained on, with their repetition counts in its training data."""
    if is_train_run(source):
        return run_canaries(source)
    path = resolve_source(source)
    if path.is_dir():
        path = path / DEFAULT_CANARIES
    if not path.is_file():
        raise LetheError(f"canaries file not found: {path}")
    rows = []
    for number, line in enumerate(read_text_file(path, "canaries file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise LetheError(f"{path} line {number}: invalid JSON ({err.msg})") from None
    if not rows:
        raise LetheError(f"{path}: no canaries")
    return rows


def run_canaries(run_dir: str) -> list[dict[str, Any]]:
    """The canaries of a training run's world that the run trained on (an error when there are none)."""
    world = world_folder(read_manifest(run_dir)[0])
    if world is None:
        raise LetheError(f"{run_dir} did not train on a fictional world: pass a canaries file to --canaries")
    chosen = trained_canaries(run_dir, load_canaries(str(world)))
    if not chosen:
        raise LetheError(f"{run_dir} trained on none of the canaries of {world}")
    return chosen


def audit_canaries(settings: CanarySettings, run_dir: str | Path | None = None, model=None,
                   tokenizer=None) -> tuple[Path, dict[str, Any]]:
    """``lethe audit canaries``: exposure (bits) of every canary; writes canaries.json."""
    check_positive("samples", settings.n_samples)
    check_positive("batch_size", settings.batch_size)
    canaries = load_canaries(settings.canaries)
    with audit_run("audit-canaries", run_dir, settings) as run:
        if model is None or tokenizer is None:
            model, tokenizer = load_model(settings.model)
        return _canaries(run, settings, model, tokenizer, canaries)


def _canaries(run: Run, settings: CanarySettings, model, tokenizer,
              canaries: list[dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    from lethe.audit.canaries import canary_exposure

    out = run.path
    result = canary_exposure(model, tokenizer, canaries, n_samples=settings.n_samples, seed=settings.seed,
                             batch_size=settings.batch_size)
    atomic_write_json(out / "canaries.json", result)
    summary = {"exposure_by_repetitions": result["exposure_by_repetitions"],
               "mean_exposure": _mean([c["exposure"] for c in result["canaries"]])}
    atomic_write_json(out / "metrics.json", {"canaries": summary})
    page = Report("Canary exposure audit", subtitle=f"model {settings.model}")
    page.add_table([{k: c[k] for k in ("id", "repetitions", "exposure", "max_exposure", "rank_estimate", "method")}
                    for c in result["canaries"]], caption="Exposure = log2|R| − log2 rank (bits)")
    page.add_figure("exposure", figures.exposure_vs_repetitions(
        {Path(settings.model).name or settings.model: exposure_points(result)}, max_exposure=max_exposure(result)),
        "Exposure of every canary (dots) and the mean per repetition count with its 95% t-interval.")
    page.write(out)
    return out, summary


def exposure_points(result: dict[str, Any]) -> list[tuple[int, float]]:
    """(repetitions, exposure) of every canary with a known repetition count (the figure draws each one and
    the mean per count with its interval)."""
    return sorted((int(c["repetitions"]), float(c["exposure"])) for c in result["canaries"]
                  if isinstance(c.get("repetitions"), int) and not isinstance(c["repetitions"], bool))


def max_exposure(result: dict[str, Any]) -> float | None:
    values = [c["max_exposure"] for c in result["canaries"]]
    return max(values) if values else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class TofuEvalSettings:
    model: str
    data: str = EMBEDDED
    split: str = "forget10"
    retain_eval: str = ""  # the retain model's tofu_eval.json or open-unlearning TOFU_EVAL.json
    limit: int = 0
    max_new_tokens: int = 200
    batch_size: int = 16
    protocol: str = "open-unlearning"  # open-unlearning (leaderboard-comparable) | lethe (clean)
    system_prompt: str = ""  # open-unlearning's instruct configs: "You are a helpful assistant."
    date_string: str = ""  # for chat templates that print a date (open-unlearning's Llama 3.x configs)


TOFU_HEADLINE = ("forget_quality", "model_utility", "forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
                 "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "privleak", "extraction_strength",
                 "exact_memorization")


def check_retain_eval(path: str) -> None:
    if path and not Path(path).is_file():
        raise LetheError(f"retain-eval file not found: {path} (the tofu_eval.json or open-unlearning "
                         "TOFU_EVAL.json of the retain model, needed for forget_quality and privleak)")


def tofu_protocol_line(result: dict[str, Any]) -> str:
    """The protocol an evaluation ran under, for every report that shows TOFU numbers."""
    config = result.get("config") or {}
    system = config.get("system_prompt") or ""
    return (f"Input protocol: {config.get('protocol', 'lethe')}"
            f"{f', system prompt {system!r}' if system else ''} (see docs/protocols.md)")


def eval_tofu(settings: TofuEvalSettings, run_dir: str | Path | None = None, model=None,
              tokenizer=None) -> tuple[Path, dict[str, Any]]:
    """``lethe eval tofu``: the TOFU metrics of one model; writes tofu_eval.json (per item + summary)."""
    from lethe.audit.tofu_metrics import evaluate_tofu
    from lethe.audit.tofu_protocol import check_protocol

    check_protocol(settings.protocol)
    if settings.limit < 0:
        raise LetheError(f"--limit must be >= 0 (0 = every item), got {settings.limit}")
    check_positive("max_new_tokens", settings.max_new_tokens)
    check_positive("batch_size", settings.batch_size)
    check_retain_eval(settings.retain_eval)
    folder = resolve_source(settings.data)
    with audit_run("eval-tofu", run_dir, settings) as run:
        if model is None or tokenizer is None:
            model, tokenizer = load_model(settings.model)
        result = evaluate_tofu(model, tokenizer, folder, forget_split=settings.split,
                               retain_eval=settings.retain_eval or None, batch_size=settings.batch_size,
                               max_new_tokens=settings.max_new_tokens, limit=settings.limit,
                               protocol=settings.protocol, system_prompt=settings.system_prompt,
                               date_string=settings.date_string)
        return _write_tofu(run.path, settings, folder, result)


def _write_tofu(out: Path, settings: TofuEvalSettings, folder: Path,
                result: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    from lethe.audit.tofu_metrics import write_tofu_eval

    write_tofu_eval(result, out / "tofu_eval.json", open_unlearning=True)
    atomic_write_json(out / "metrics.json", {"tofu": result["summary"], "protocol": settings.protocol})
    page = Report("TOFU evaluation", subtitle=f"model {settings.model}, {settings.split} of {folder}, "
                                              f"protocol {settings.protocol}")
    page.add_paragraph(tofu_protocol_line(result))
    page.add_table([{"metric": k, "value": result["summary"].get(k)} for k in TOFU_HEADLINE],
                   caption=f"Leaderboard metrics (open-unlearning names and formulas; {settings.protocol} "
                           "input protocol). Also written as open-unlearning's TOFU_EVAL.json / TOFU_SUMMARY.json")
    for note in result.get("notes", []):
        page.add_note(note)
    page.write(out)
    return out, result["summary"]


@dataclass
class FamiliaritySettings:
    model: str
    probes: str = EMBEDDED  # familiarity probes JSONL, a world folder, or the embedded world's
    terms: str = ""  # the anchored-term dictionary: its keys also count as familiar in completions
    reinforced: str = ""  # with it: the inference-time WHP model v_b - alpha * ReLU(v_r - v_b) of model + this
    alpha: float = 1.0  # inference-time WHP only (MUSE's default)
    max_new_tokens: int = 12
    batch_size: int = 32


def load_familiarity_model(settings: FamiliaritySettings):
    """The model to audit: ``settings.model``, or, with ``reinforced``, the inference-time WHP model."""
    model, tokenizer = load_model(settings.model)
    if settings.reinforced:
        from lethe.unlearn.whp import WHPLogitsModel, check_same_vocabulary

        reinforced, reinforced_tokenizer = load_model(settings.reinforced)
        check_same_vocabulary(tokenizer, reinforced_tokenizer, model, reinforced, where="--reinforced")
        model = WHPLogitsModel(model, reinforced, settings.alpha)
    return model, tokenizer


def audit_familiarity(settings: FamiliaritySettings, run_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """``lethe audit familiarity``: completion and probability familiarity; writes familiarity.json."""
    from lethe.audit.familiarity import load_probes
    from lethe.unlearn.whp import load_terms

    if settings.max_new_tokens < 1:
        raise LetheError(f"--max-new-tokens must be >= 1, got {settings.max_new_tokens}")
    probes = load_probes(resolve_source(settings.probes))
    terms = list(load_terms(settings.terms)) if settings.terms else []
    check_positive("batch_size", settings.batch_size)
    with audit_run("audit-familiarity", run_dir, settings) as run:
        model, tokenizer = load_familiarity_model(settings)
        return _familiarity(run.path, settings, model, tokenizer, probes, terms)


def _familiarity(out: Path, settings: FamiliaritySettings, model, tokenizer, probes, terms: list[str]
                 ) -> tuple[Path, dict[str, Any]]:
    from lethe.audit.familiarity import COMPLETION_NOTE, familiarity, familiarity_summary

    result = familiarity(model, tokenizer, probes, terms, max_new_tokens=settings.max_new_tokens,
                         batch_size=settings.batch_size)
    atomic_write_json(out / "familiarity.json", result)
    summary = familiarity_summary(result)
    atomic_write_json(out / "metrics.json", {"familiarity": summary})
    page = Report("Familiarity audit", subtitle=f"model {settings.model}"
                                                + (f" (inference-time WHP with {settings.reinforced}, "
                                                   f"alpha {settings.alpha:g})" if settings.reinforced else ""))
    page.add_keyvalues({k: v for k, v in summary.items() if k != "judge"})
    page.add_note(COMPLETION_NOTE)
    page.add_table([{k: i[k] for k in ("id", "prompt", "target", "completion", "familiar", "probability",
                                       "first_token_probability")} for i in result["items"]],
                   caption="Per probe: greedy completion, whether it names a target-specific term absent from the "
                           "prompt, and P(target | prompt)")
    page.write(out)
    return out, summary
