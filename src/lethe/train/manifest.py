"""The data manifest of a training run: which documents it trained on, and how often.

Every training run (``lethe train``, the demos' arms, WHP's fine-tuning) writes, beside its model:

- ``manifest.jsonl``: one line per distinct document, in first-seen order:
  ``{"id", "sha256", "occurrences", "repetitions", "text"}``. ``sha256`` is the hex SHA-256 of the document's
  UTF-8 text (a QA record's text is ``question + "\\n" + answer``, what the tokenizer corpus uses);
  ``occurrences`` is how many records of the training data have that text (a canary inserted 5 times: 5);
  ``repetitions`` = ``occurrences x epochs``, the times the run saw it (a fractional last epoch, as with
  ``train.max_steps``, counts as its expected share: HF's sampler visits a random subset of that epoch).
  ``id`` is the record's id, or ``sha256:<first 16 hex digits>`` when the data has none.
- ``manifest.json``: the totals and where the data came from (``source``, ``file``, ``format``, the fictional
  world it belongs to, if any), written last.

The audits read it back: ``--data RUN`` / ``--members RUN`` are the manifest's documents
(:func:`manifest_documents`), the non-members default to the world's biographies the run never trained on
(:func:`world_nonmembers`), and the canaries audited are the world's canaries the run trained on, with their
real repetition counts (:func:`trained_canaries`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lethe.data.text import jsonl_text, load_documents, parse_json_records, read_text_file
from lethe.errors import LetheError
from lethe.runs import atomic_write_json, atomic_write_text

MANIFEST = "manifest.json"
MANIFEST_LINES = "manifest.jsonl"
WORLD_FILE = "world.json"
# the fictional world's biographies: every author's, then the never-trained (holdout) authors'
WORLD_BIOGRAPHIES = ("biographies.jsonl", "biographies_holdout.jsonl")


def content_hash(text: str) -> str:
    """Hex SHA-256 of the UTF-8 text: a document's identity in the manifest."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_text(record: dict[str, Any]) -> str:
    """A training record's text: a document's, or a QA pair's ``question\\nanswer``."""
    return record["text"] if "text" in record else f"{record['question']}\n{record['answer']}"


def manifest_rows(records: list[dict[str, Any]], epochs: float) -> list[dict[str, Any]]:
    """One row per distinct text of ``records`` (first-seen order) with its occurrence and repetition counts."""
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        text = record_text(record)
        digest = content_hash(text)
        row = rows.get(digest)
        if row is None:
            record_id = record.get("id")
            rows[digest] = {"id": str(record_id) if record_id is not None else f"sha256:{digest[:16]}",
                            "sha256": digest, "occurrences": 1, "text": text}
        else:
            row["occurrences"] += 1
    for row in rows.values():
        row["repetitions"] = round(row["occurrences"] * epochs, 4)
    return [{k: row[k] for k in ("id", "sha256", "occurrences", "repetitions", "text")} for row in rows.values()]


def _world_of(source: str, n_authors: int, seed: int) -> dict[str, Any] | None:
    """The fictional world the data came from: the embedded one, a world folder, or a file inside one."""
    if source == "embedded":
        return {"embedded": True, "authors": n_authors, "seed": seed}
    path = Path(source).expanduser().resolve()
    folder = path if path.is_dir() else path.parent
    return {"folder": str(folder)} if (folder / WORLD_FILE).is_file() else None


def write_manifest(run_dir: Path, records: list[dict[str, Any]], data: Any, epochs: float) -> dict[str, Any]:
    """Write ``manifest.jsonl`` and then ``manifest.json`` for ``records`` (``data``: the run's DataSettings)."""
    rows = manifest_rows(records, epochs)
    atomic_write_text(run_dir / MANIFEST_LINES, jsonl_text(rows))
    meta = {
        "format": data.format, "source": data.source, "file": data.file, "limit": data.limit,
        "world": _world_of(data.source, data.world_authors, data.world_seed),
        "records": len(records), "documents": len(rows), "epochs": epochs,
        "hash": "sha256 of the UTF-8 text (QA: question + newline + answer)",
    }
    atomic_write_json(run_dir / MANIFEST, meta)
    return meta


def is_train_run(path: str | Path) -> bool:
    """A folder holding a training run's manifest."""
    folder = Path(path).expanduser()
    return folder.is_dir() and (folder / MANIFEST).is_file()


def read_manifest(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(manifest.json, the rows of manifest.jsonl) of a training run; one-line errors for broken files."""
    folder = Path(run_dir).expanduser()
    try:
        meta = json.loads(read_text_file(folder / MANIFEST, "manifest"))
    except json.JSONDecodeError as err:
        raise LetheError(f"{folder / MANIFEST}: invalid JSON ({err.msg})") from None
    lines = folder / MANIFEST_LINES
    if not lines.is_file():
        raise LetheError(f"{folder} has {MANIFEST} but no {MANIFEST_LINES} (an incomplete run directory)")
    rows = [row for _, row in parse_json_records(lines, read_text_file(lines, "manifest"))]
    if not rows:
        raise LetheError(f"{lines}: no documents")
    return meta, rows


def manifest_documents(run_dir: str | Path) -> list[tuple[str, str]]:
    """(id, text) of every distinct document the run trained on: the members of an audit."""
    return [(row["id"], row["text"]) for row in read_manifest(run_dir)[1]]


def world_folder(meta: dict[str, Any]) -> Path | None:
    """The fictional world folder a manifest's data came from (the embedded one is generated if needed)."""
    world = meta.get("world")
    if not world:
        return None
    if world.get("embedded"):
        from lethe.data.world import embedded_world

        return embedded_world(int(world["authors"]), int(world["seed"]))
    folder = Path(world["folder"])
    if not (folder / WORLD_FILE).is_file():
        raise LetheError(f"the run trained on the world {folder}, which is gone; pass --nonmembers")
    return folder


def world_nonmembers(run_dir: str | Path) -> list[tuple[str, str]]:
    """The world's biographies (every author's, then the holdout authors') that the run never trained on."""
    meta, rows = read_manifest(run_dir)
    folder = world_folder(meta)
    if folder is None or meta.get("format") != "documents":
        raise LetheError(f"{run_dir} did not train on a fictional world's documents, so there are no default "
                         "non-members; pass --nonmembers")
    trained = {row["sha256"] for row in rows}
    documents = [(d.id, d.text) for name in WORLD_BIOGRAPHIES for d in load_documents(folder / name)
                 if content_hash(d.text) not in trained]
    if not documents:
        raise LetheError(f"{run_dir} trained on every biography of {folder}; pass --nonmembers")
    return documents


def trained_canaries(run_dir: str | Path, canaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``canaries`` the run trained on, each with ``repetitions`` = its occurrences in the training data."""
    occurrences = {row["sha256"]: row["occurrences"] for row in read_manifest(run_dir)[1]}
    return [{**c, "repetitions": occurrences[content_hash(c["text"])]} for c in canaries
            if content_hash(c.get("text", "")) in occurrences]
