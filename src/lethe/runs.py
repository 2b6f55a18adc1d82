"""Run directories and atomic writes.

Every command writes into one run directory: the resolved ``config.yaml``, ``metrics.json``, a JSONL
log, reports and models. Result files are written to a temporary file in the same folder and renamed
into place, so a killed or failed run never leaves a half-written result behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_RUNS_ROOT = Path("runs")


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 minus the process umask (which os.umask can only swap)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def publish_dir(final: str | Path, build: Callable[[Path], Any],
                keep_existing: Callable[[Path], bool] | None = None) -> Path:
    """Build a folder as ``<final>.partial-<pid>`` and rename it to ``final``: a reader (or a killed run)
    never sees a half-written folder, and concurrent processes never share a staging folder.

    ``final`` already there (an earlier result, or another process finished first): kept when
    ``keep_existing(final)`` says so, else replaced. A build that fails leaves no staging folder."""
    final = Path(final)
    staging = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # a leftover of an earlier process with the same pid
    try:
        build(staging)
        if final.exists() and keep_existing is not None and keep_existing(final):
            shutil.rmtree(staging, ignore_errors=True)
            return final
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``; normal (umask) permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode())  # mkstemp makes 0o600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(_json_safe(obj), indent=2, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def new_run_dir(command: str, requested: str | Path | None = None, root: Path = DEFAULT_RUNS_ROOT) -> Path:
    """The run directory to use: the requested one, else ``runs/<command>-<timestamp>``."""
    if requested:
        path = Path(requested)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = root / f"{command}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = root / f"{command}-{stamp}-{suffix}"
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunLog:
    """Append-only JSONL event log (``log.jsonl``); one JSON object per line, flushed at once."""

    def __init__(self, run_dir: str | Path, name: str = "log.jsonl") -> None:
        self.path = Path(run_dir) / name

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"time": round(time.time(), 3), "event": event, **fields}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(_json_safe(record), ensure_ascii=False) + "\n")
