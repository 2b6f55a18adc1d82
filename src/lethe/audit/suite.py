"""``lethe audit all --model M --data RUN``: every memorization audit that applies to a training run, in one
run directory with one report.

``RUN`` is a training run directory (``lethe train``, a demo arm): its ``manifest.jsonl`` says what it trained
on (:mod:`lethe.train.manifest`). The audits, each in its own sub-directory with its own files, as
``lethe audit <name>`` writes them:

- ``extraction/``: greedy extraction of every trained document's last ``suffix_len`` tokens;
- ``mia/``: membership inference, members = the trained documents, non-members = ``--nonmembers`` or, for a
  run on a fictional world's documents, the world's biographies the run never trained on (skipped, with the
  reason, when there are none);
- ``canaries/``: exposure of the canaries the run trained on (``--canaries``, or its world's canaries found
  in the manifest, with their real repetition counts; skipped when it trained on none).

The top directory holds ``metrics.json`` (every summary, and what was skipped and why), the comparison
report of the sub-runs (``report.html``) and, last, ``config.yaml``. The model is loaded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lethe.audit.commands import (
    CanarySettings,
    ExtractionSettings,
    MIASettings,
    audit_canaries,
    audit_extraction,
    audit_mia,
    audit_run,
    load_canaries,
)
from lethe.errors import LetheError
from lethe.models import load_model
from lethe.runs import atomic_write_json
from lethe.train.manifest import MANIFEST, is_train_run, read_manifest, trained_canaries, world_folder


@dataclass
class AuditAllSettings:
    data: str  # a training run directory (has manifest.json)
    model: str = ""  # "" = <data>/model
    nonmembers: str = ""  # "" = the world's never-trained biographies (runs on a fictional world)
    canaries: str = ""  # "" = the canaries of the run's world that it trained on
    suffix_len: int = 50
    limit: int = 0  # extraction: only the first N trained documents (0 = all)
    batch_size: int = 16
    n_bootstrap: int = 1000
    n_samples: int = 2000  # canary candidates
    seed: int = 0


def _skip_reason_mia(settings: AuditAllSettings, meta: dict[str, Any]) -> str:
    if settings.nonmembers:
        return ""
    if meta.get("world") and meta.get("format") == "documents":
        return ""
    return "no non-members: the run did not train on a fictional world's documents and --nonmembers is not set"


def _skip_reason_canaries(settings: AuditAllSettings, meta: dict[str, Any]) -> str:
    if settings.canaries:
        return ""
    world = world_folder(meta)
    if world is None:
        return "the run did not train on a fictional world and --canaries is not set"
    if not trained_canaries(settings.data, load_canaries(str(world))):
        return f"the run trained on none of the canaries of {world}"
    return ""


def audit_all(settings: AuditAllSettings, run_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Extraction, MIA and canaries (those that apply) of a training run's model; returns (dir, summary)."""
    from lethe.report import compare_runs

    if not is_train_run(settings.data):
        raise LetheError(f"--data must be a training run directory (with {MANIFEST}), got {settings.data}")
    meta, _ = read_manifest(settings.data)
    model_path = settings.model or str(Path(settings.data) / "model")
    skipped = {name: reason for name, reason in (("mia", _skip_reason_mia(settings, meta)),
                                                  ("canaries", _skip_reason_canaries(settings, meta))) if reason}
    model, tokenizer = load_model(model_path)
    with audit_run("audit-all", run_dir, settings) as run:
        summary: dict[str, Any] = {"model": model_path, "data": settings.data}
        extraction_dir, summary["extraction"] = audit_extraction(
            ExtractionSettings(model=model_path, data=settings.data, suffix_len=settings.suffix_len,
                               limit=settings.limit, batch_size=settings.batch_size),
            run.path / "extraction", model=model, tokenizer=tokenizer)
        done = [extraction_dir]
        if "mia" not in skipped:
            mia_dir, summary["mia"] = audit_mia(
                MIASettings(model=model_path, members=settings.data, nonmembers=settings.nonmembers,
                            batch_size=settings.batch_size, n_bootstrap=settings.n_bootstrap, seed=settings.seed),
                run.path / "mia", model=model, tokenizer=tokenizer)
            done.append(mia_dir)
        if "canaries" not in skipped:
            canary_dir, summary["canaries"] = audit_canaries(
                CanarySettings(model=model_path, canaries=settings.canaries or settings.data,
                               n_samples=settings.n_samples, seed=settings.seed),
                run.path / "canaries", model=model, tokenizer=tokenizer)
            done.append(canary_dir)
        summary["skipped"] = skipped
        atomic_write_json(run.path / "metrics.json", summary)
        compare_runs(done, run.path)
        return run.path, summary
