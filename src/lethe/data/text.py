"""Plain documents: load JSON Lines / JSON array / .txt corpora as :class:`Document`, write JSONL atomically.

Also holds the small JSON record reader that the TOFU loader shares, so both report bad input the same
way: one line naming the file, the line (or record) number and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lethe.errors import LetheError
from lethe.runs import atomic_write_text

TEXT_SUFFIXES = (".txt", ".text", ".md")


@dataclass
class Document:
    """One training/audit document: a stable id, its text and any other fields of its record."""

    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    generated_id: bool = field(default=False, compare=False)  # True: the record had no id (position id)


def stable_doc_id(record_id: str | None, content: str) -> int:
    """The integer id a training sequence carries (``doc_ids``): 63 bits of BLAKE2b of the record's id, or of
    its content when it has none, so repeated copies of a document share one id in every process and run.
    Always >= 1 (MemSinks reserves 0, and -1 marks padding)."""
    source = f"id:{record_id}" if record_id is not None else f"content:{content}"
    return max(1, int.from_bytes(hashlib.blake2b(source.encode("utf-8"), digest_size=8).digest(), "little") >> 1)


def _one_line(message: str) -> str:
    return " ".join(message.split())


def read_text_file(path: Path, what: str = "file") -> str:
    """The UTF-8 text of ``path`` (a leading BOM is dropped); LetheError if missing, a folder or not UTF-8."""
    if not path.exists():
        raise LetheError(f"{what} not found: {path}")
    if path.is_dir():
        raise LetheError(f"{what} {path} is a folder, expected a file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LetheError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise LetheError(f"{path}: cannot read ({exc.strerror})") from None


def parse_json_records(path: Path, text: str) -> list[tuple[str, Any]]:
    """Records of a JSON Lines text or of a single JSON array, each with its location ("line 3"/"record 3").

    The format is picked by the first non-space character (``[`` = one JSON array). Blank lines are skipped.
    """
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LetheError(f"{path} line {exc.lineno}: invalid JSON ({_one_line(exc.msg)})") from None
        if not isinstance(values, list):
            raise LetheError(f"{path}: expected a JSON array or JSON Lines")
        return [(f"record {i + 1}", value) for i, value in enumerate(values)]
    records: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise LetheError(f"{path} line {number}: invalid JSON ({_one_line(exc.msg)})") from None
    return records


def require_string(path: Path, where: str, record: dict[str, Any], name: str) -> str:
    """``record[name]`` as a non-empty string, or a one-line LetheError naming file, location and field."""
    if name not in record:
        raise LetheError(f"{path} {where}: field '{name}' missing")
    value = record[name]
    if not isinstance(value, str):
        raise LetheError(f"{path} {where}: field '{name}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise LetheError(f"{path} {where}: field '{name}' is empty")
    return value


def _document_id(path: Path, where: str, record: dict[str, Any], id_field: str, index: int) -> str:
    if id_field not in record or record[id_field] is None:
        return f"doc-{index:04d}"
    value = record[id_field]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise LetheError(f"{path} {where}: field '{id_field}' must be a string or an integer, "
                         f"got {type(value).__name__}")
    value = str(value)
    if not value.strip():
        raise LetheError(f"{path} {where}: field '{id_field}' is empty")
    return value


def _paragraph_documents(text: str) -> list[Document]:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text)]
    return [Document(f"doc-{i:04d}", p, generated_id=True) for i, p in enumerate(p for p in paragraphs if p)]


def load_documents(path: str | Path, text_field: str = "text", id_field: str = "id") -> list[Document]:
    """Documents from JSON Lines / a JSON array of objects (or strings), or a .txt file of paragraphs.

    In a .txt file documents are separated by blank lines and get ids ``doc-0000``, ``doc-0001``, ...; a
    record without ``id_field`` gets ``doc-%04d`` of its position (and ``generated_id=True``, so training
    keys it by content instead, see :func:`stable_doc_id`). Every other field goes to ``meta``.
    """
    path = Path(path).expanduser()
    text = read_text_file(path, "documents file")
    if path.suffix.lower() in TEXT_SUFFIXES:
        documents = _paragraph_documents(text)
    else:
        documents = []
        seen: dict[str, str] = {}
        for index, (where, record) in enumerate(parse_json_records(path, text)):
            if isinstance(record, str):
                record = {text_field: record}
            if not isinstance(record, dict):
                raise LetheError(f"{path} {where}: expected a JSON object, got {type(record).__name__}")
            body = require_string(path, where, record, text_field)
            doc_id = _document_id(path, where, record, id_field, index)
            if doc_id in seen:
                raise LetheError(f"{path} {where}: duplicate id '{doc_id}' (first at {seen[doc_id]})")
            seen[doc_id] = where
            meta = {k: v for k, v in record.items() if k not in (text_field, id_field)}
            generated = record.get(id_field) is None
            documents.append(Document(doc_id, body, meta, generated_id=generated))
    if not documents:
        raise LetheError(f"{path}: no documents")
    return documents


def jsonl_text(rows: Iterable[Any]) -> str:
    """One ``json.dumps(row, ensure_ascii=False)`` per line, each line ending in a newline."""
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n" for row in rows)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write ``rows`` as JSON Lines (UTF-8, key order kept, trailing newline), atomically."""
    return atomic_write_text(path, jsonl_text(rows))


def write_json(path: str | Path, value: Any) -> Path:
    """Write one JSON value (indent 2, UTF-8, trailing newline), atomically."""
    return atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=2) + "\n")
