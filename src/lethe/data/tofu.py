"""TOFU-format loader: read and validate the split files of a TOFU folder (the real benchmark or the world).

A split ``<name>`` is the file ``<folder>/<name>.json`` (or ``.jsonl``), JSON Lines or one JSON array.
Fields are checked by the split's kind; every other field (``id``, ``author``, ...) is kept as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lethe.data.text import parse_json_records, read_text_file, require_string
from lethe.errors import LetheError

FORGET_SPLITS = ("forget01", "forget05", "forget10")
RETAIN_SPLITS = ("retain99", "retain95", "retain90")
HOLDOUT_SPLITS = ("holdout01", "holdout05", "holdout10")
FORGET_PERTURBED_SPLITS = ("forget01_perturbed", "forget05_perturbed", "forget10_perturbed")
GENERAL_SPLITS = ("real_authors_perturbed", "world_facts_perturbed")
PLAIN_SPLITS = ("full", *FORGET_SPLITS, *RETAIN_SPLITS, *HOLDOUT_SPLITS)
PERTURBED_SPLITS = (*FORGET_PERTURBED_SPLITS, "retain_perturbed", *GENERAL_SPLITS)
SPLIT_NAMES = (*PLAIN_SPLITS, *PERTURBED_SPLITS)
# forget split -> the retain split that completes it to `full`
RETAIN_OF = dict(zip(FORGET_SPLITS, RETAIN_SPLITS, strict=True))
SUFFIXES = (".json", ".jsonl")


def split_fields(split: str) -> tuple[tuple[str, ...], bool]:
    """(required string fields, whether ``perturbed_answer`` is required) for a split name.

    ``*_perturbed`` splits need ``perturbed_answer``; all but real_authors/world_facts also need
    ``paraphrased_answer``. Any other name (``full``, ``forget10``, ``general``, ...) is plain QA.
    """
    if not split.endswith("_perturbed"):
        return ("question", "answer"), False
    if split in GENERAL_SPLITS:
        return ("question", "answer"), True
    return ("question", "answer", "paraphrased_answer"), True


def _split_name(split: str) -> str:
    for suffix in SUFFIXES:
        if split.endswith(suffix):
            return split[: -len(suffix)]
    return split


def split_path(folder: str | Path, split: str) -> Path:
    """The file of ``split`` in ``folder`` (``.json`` preferred over ``.jsonl``); LetheError if neither."""
    folder = Path(folder).expanduser()
    name = _split_name(split)
    for suffix in SUFFIXES:
        candidate = folder / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    raise LetheError(f"TOFU split '{name}' not found: {folder / (name + '.json')}")


def _check_perturbed(path: Path, where: str, record: dict[str, Any]) -> None:
    name = "perturbed_answer"
    if name not in record:
        raise LetheError(f"{path} {where}: field '{name}' missing")
    value = record[name]
    if not isinstance(value, list):
        raise LetheError(f"{path} {where}: field '{name}' must be a list of strings, "
                         f"got {type(value).__name__}")
    if not value:
        raise LetheError(f"{path} {where}: field '{name}' is an empty list")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise LetheError(f"{path} {where}: field '{name}'[{i}] must be a string, "
                             f"got {type(item).__name__}")
        if not item.strip():
            raise LetheError(f"{path} {where}: field '{name}'[{i}] is empty")


def load_split(folder: str | Path, split: str) -> list[dict[str, Any]]:
    """The validated records of one split, in file order (see :func:`split_fields` for the checks)."""
    path = split_path(folder, split)
    fields, perturbed = split_fields(_split_name(split))
    records: list[dict[str, Any]] = []
    for where, record in parse_json_records(path, read_text_file(path, "TOFU split")):
        if not isinstance(record, dict):
            raise LetheError(f"{path} {where}: expected a JSON object, got {type(record).__name__}")
        for name in fields:
            require_string(path, where, record, name)
        if "paraphrased_question" in record:
            require_string(path, where, record, "paraphrased_question")
        if perturbed:
            _check_perturbed(path, where, record)
        records.append(record)
    if not records:
        raise LetheError(f"{path}: no records")
    return records


def available_splits(folder: str | Path) -> list[str]:
    """The TOFU split names (:data:`SPLIT_NAMES` order) that have a file in ``folder``."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise LetheError(f"TOFU folder not found: {folder}")
    return [name for name in SPLIT_NAMES if any((folder / f"{name}{s}").is_file() for s in SUFFIXES)]


def load_refusals(path: str | Path) -> list[str]:
    """Refusal answers ("I don't know" set): plain text lines, or JSON Lines / a JSON array of strings or
    ``{"text": ...}`` objects. The format is fixed by the first non-blank line (JSON if it parses)."""
    path = Path(path).expanduser()
    text = read_text_file(path, "refusals file")
    stripped = text.strip()
    json_mode = stripped.startswith("[")
    if not json_mode and stripped[:1] in ('"', "{"):
        first = stripped.splitlines()[0]
        try:
            json_mode = isinstance(json.loads(first), str | dict)
        except ValueError:
            json_mode = False
    refusals: list[str] = []
    if json_mode:
        for where, record in parse_json_records(path, text):
            if isinstance(record, dict):
                refusals.append(require_string(path, where, record, "text").strip())
            elif isinstance(record, str) and record.strip():
                refusals.append(record.strip())
            else:
                raise LetheError(f"{path} {where}: expected a non-empty string or an object with 'text'")
    else:
        refusals = [line.strip() for line in text.splitlines() if line.strip()]
    if not refusals:
        raise LetheError(f"{path}: no refusals")
    return refusals
