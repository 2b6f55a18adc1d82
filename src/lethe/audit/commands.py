"""Entry functions of ``lethe audit ...``: load model and data, run an audit, write the run directory."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lethe.audit.extraction import run_extraction
from lethe.data.text import load_documents
from lethe.data.world import EMBEDDED, resolve_source
from lethe.errors import LetheError
from lethe.models import load_model
from lethe.runs import RunLog, atomic_write_json, atomic_write_text, new_run_dir

DEFAULT_DOCUMENTS = "biographies.jsonl"


@dataclass
class ExtractionSettings:
    model: str
    data: str = EMBEDDED
    suffix_len: int = 50
    prefix_len: int = 0  # 0 = every token before the suffix
    batch_size: int = 32
    limit: int = 0


def load_audit_documents(data: str, limit: int = 0) -> list[tuple[str, str]]:
    """(id, text) pairs from a documents file, or a folder / the embedded world's biographies."""
    source = resolve_source(data)
    path = source / DEFAULT_DOCUMENTS if source.is_dir() else source
    if source.is_dir() and not path.is_file():
        raise LetheError(f"{source} is a folder without {DEFAULT_DOCUMENTS}; pass a documents file")
    documents = [(d.id, d.text) for d in load_documents(path)]
    return documents[:limit] if limit else documents


def audit_extraction(settings: ExtractionSettings, run_dir: str | Path | None = None,
                     model=None, tokenizer=None) -> tuple[Path, dict[str, Any]]:
    """``lethe audit extraction``: greedy suffix extraction on every document; writes extraction.json."""
    documents = load_audit_documents(settings.data, settings.limit)
    if model is None or tokenizer is None:
        model, tokenizer = load_model(settings.model)
    out = new_run_dir("audit-extraction", run_dir)
    atomic_write_json(out / "config.json", asdict(settings))
    result = run_extraction(
        model, tokenizer, documents, suffix_len=settings.suffix_len,
        prefix_len=settings.prefix_len or None, batch_size=settings.batch_size,
    )
    report = result.to_dict()
    atomic_write_json(out / "extraction.json", report)
    summary = {k: v for k, v in report.items() if k not in ("items", "rougeL_all")}
    atomic_write_json(out / "metrics.json", {"extraction": summary})
    atomic_write_text(out / "report.md", extraction_markdown(settings.model, summary))
    RunLog(out)("audit_extraction", **summary)
    return out, summary


def extraction_markdown(model: str, summary: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items() if not isinstance(v, list))
    return f"# Extraction audit\n\nModel: `{model}`\n\n| metric | value |\n|---|---|\n{rows}\n"
