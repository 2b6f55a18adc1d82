"""Run directories and atomic writes.

Every command writes into one run directory: the resolved ``config.yaml``, ``metrics.json``, a JSONL
log, reports and models. Result files are written to a temporary file in the same folder and renamed
into place, so a killed or failed run never leaves a half-written result behind.

:func:`open_run` claims a run directory for one command: it checks the path (not a file, not under a file,
writable), takes the directory's lock (:mod:`lethe.locking`), refuses a directory that ``run.json`` says
belongs to another command, deletes staging folders (``*.partial-<pid>``) of dead processes, and on failure
removes what the run wrote unless the run says it left something worth keeping (a complete checkpoint).
``run.json`` records the command, its status (``running``, ``finished``, ``failed``) and the pid.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lethe.errors import LetheError

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


def check_output_dir(path: str | Path, what: str = "run directory") -> Path:
    """Fail with one line when ``path`` cannot become a folder this process writes into: it is a file, it
    lies under a file, or it (or the nearest existing folder above it) is not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LetheError(f"{what} {path} is a file, not a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise LetheError(f"{what} {path} lies under {probe}, which is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise LetheError(f"{what} {path}: {probe} is not writable")
    return path


def make_dir(path: str | Path, what: str = "run directory") -> Path:
    """``mkdir -p`` with the checks of :func:`check_output_dir` and one-line errors."""
    path = check_output_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LetheError(f"cannot create {what} {path}: {err.strerror or err}") from None
    return path


def _default_dir(command: str, root: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{command}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{command}-{stamp}-{suffix}"
    return path


def new_run_dir(command: str, requested: str | Path | None = None, root: Path = DEFAULT_RUNS_ROOT) -> Path:
    """The run directory to use: the requested one, else ``runs/<command>-<timestamp>``; created."""
    return make_dir(Path(requested) if requested else _default_dir(command, root))


def notice(message: str, kind: str = "note") -> None:
    """One line on stderr (``note: ...`` / ``warning: ...``) for what the user must know but is no error."""
    print(f"{kind}: {message}", file=sys.stderr)


RUN_FILE = "run.json"
_PARTIAL = re.compile(r"\.partial-(\d+)$")
# what marks a folder as some run's output (a folder holding none of these is free to use)
RUN_MARKERS = ("config.yaml", "metrics.json", "model", "checkpoints", RUN_FILE)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_partials(folder: Path) -> list[Path]:
    """Delete ``*.partial-<pid>`` staging folders/files of processes that are gone (a kill mid-publish)."""
    removed = []
    for path in folder.rglob("*.partial-*"):
        match = _PARTIAL.search(path.name)
        if match and not _alive(int(match.group(1))):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def clean_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files an atomic write killed before its rename leaves in ``folder``;
    call it only while holding the folder's lock (no other process writes there then)."""
    removed = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def read_run_file(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Run:
    """A claimed run directory (see :func:`open_run`)."""

    path: Path
    command: str
    created: bool  # this process made the folder
    previous: dict[str, Any] | None  # the run.json found there, if any
    legacy: bool  # the folder held run output but no run.json (written by an older Lethe, or by hand)
    started: bool = False  # the run began changing the folder's state (training started)
    keep: bool = False  # set when the run left something worth keeping on failure (a complete checkpoint)
    written: dict[Path, bytes | None] = field(default_factory=dict)  # file -> its bytes before this run
    before: set[str] = field(default_factory=set)  # names in the folder when it was claimed
    log_size: int = 0  # bytes of log.jsonl when the folder was claimed
    marked: bool = False  # run.json was written by this run
    settled: bool = False  # the run's result is complete: a later failure leaves the folder as it is
    created_top: Path | None = None  # the outermost folder this process created to make ``path``

    @property
    def finished(self) -> bool:
        return bool(self.previous) and self.previous.get("status") == "finished"

    def mark(self, status: str, **fields: Any) -> None:
        """(Re)write run.json with ``status``."""
        from lethe.locking import is_main_rank

        if is_main_rank():
            self.marked = True
            atomic_write_json(self.path / RUN_FILE, {"command": self.command, "status": status, "pid": os.getpid(),
                                                     "time": round(time.time(), 3), **fields})

    def write_text(self, name: str, text: str) -> Path:
        """A file of the run (config.yaml) that a failed run puts back as it was (or removes)."""
        path = self.path / name
        if path not in self.written:
            self.written[path] = path.read_bytes() if path.is_file() else None
        return atomic_write_text(path, text)

    def _undo(self) -> None:
        """Put the folder back as it was claimed: what this run added is removed, what it rewrote restored."""
        if self.created:
            _remove_created(self.path, self.created_top)
            return
        for path, old in self.written.items():
            if old is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(path, old)
        for path in self.path.iterdir():
            if path.name in self.before or path.name == RUN_FILE:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        log = self.path / "log.jsonl"
        if log.is_file() and log.stat().st_size > self.log_size:
            os.truncate(log, self.log_size)
        if not self.marked:
            return
        if self.previous is None:
            (self.path / RUN_FILE).unlink(missing_ok=True)
        else:
            atomic_write_json(self.path / RUN_FILE, self.previous)


def _remove_created(path: Path, top: Path | None) -> None:
    """Remove ``path`` and the (then empty) folders above it that this process created, up to ``top``."""
    shutil.rmtree(path, ignore_errors=True)
    if top is None:
        return
    current = path.parent
    while top in (current, *current.parents) and current != top.parent:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what ``mkdir -p`` will create first)."""
    if path.exists():
        return None
    top = path
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    return top


def check_run_kind(path: Path, command: str, previous: dict[str, Any] | None) -> None:
    """Refuse a folder that run.json says another command wrote."""
    if previous is not None and previous.get("command") != command:
        raise LetheError(f"{path} is the run directory of `lethe {_spoken(previous.get('command'))}`, not of "
                         f"`lethe {_spoken(command)}`; use another --run-dir")


def _spoken(command: Any) -> str:
    return str(command).replace("-", " ", 1) if str(command).startswith(("audit-", "eval-", "demo-")) else str(command)


@contextlib.contextmanager
def open_run(command: str, requested: str | Path | None = None, *, root: Path = DEFAULT_RUNS_ROOT,
             allow_legacy: bool = True) -> Iterator[Run]:
    """Claim a run directory for ``command`` (see the module docstring); yields a :class:`Run`.

    ``allow_legacy=False``: a folder with run output but no run.json (another tool's, or a hand-made mix)
    is refused. On an exception the run's own writes are undone unless ``run.keep`` is set, in which case
    run.json says ``failed``; the lock is always released."""
    from lethe import locking, progress

    path = Path(requested) if requested else _default_dir(command, root)
    existed = path.is_dir()
    top = _first_missing(path)
    make_dir(path)
    before = {p.name for p in path.iterdir()} if existed else set()
    try:
        fd = locking.acquire(path)
    except BaseException:
        if not existed:
            _remove_created(path, top)
        raise
    try:
        previous = read_run_file(path)
        legacy = previous is None and any((path / name).exists() for name in RUN_MARKERS)
        check_run_kind(path, command, previous)
        if legacy and not allow_legacy:
            raise LetheError(f"{path} already holds another run's output (config.yaml / metrics.json / model) "
                             f"and no run.json of `lethe {_spoken(command)}`; use another --run-dir")
        if locking.is_main_rank():
            clean_stale_partials(path)
            clean_stale_temp_files(path)
        log = path / "log.jsonl"
        run = Run(path=path, command=command, created=not existed, previous=previous, legacy=legacy,
                  before=before, log_size=log.stat().st_size if log.is_file() else 0, created_top=top)
    except BaseException:
        locking.release(fd)
        if not existed:
            _remove_created(path, top)
        raise
    try:
        with progress.run_context(path, _spoken(command)):  # loops report to its log.jsonl
            yield run
    except BaseException as err:
        if locking.is_main_rank():
            with contextlib.suppress(OSError):  # never hide the run's own error behind a cleanup one
                if run.settled:
                    pass
                elif run.keep and run.started:
                    run.mark("failed", error=str(err).splitlines()[0] if str(err) else type(err).__name__)
                else:
                    run._undo()
        raise
    finally:
        locking.release(fd)


class RunLog:
    """Append-only JSONL event log (``log.jsonl``); one JSON object per line, flushed at once."""

    def __init__(self, run_dir: str | Path, name: str = "log.jsonl") -> None:
        self.path = Path(run_dir) / name

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"time": round(time.time(), 3), "event": event, **fields}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(_json_safe(record), ensure_ascii=False) + "\n")


def already_finished(run: Run, metrics: dict[str, Any], further: str) -> dict[str, Any]:
    """A finished run re-run with settings that would not change it: say so (``further``: how to go on), log
    it, mark a finished run of an older Lethe (no run.json) as finished; return its stored ``metrics``."""
    notice(f"{run.path} is a finished run ({metrics.get('steps')} steps); nothing to do ({further})")
    RunLog(run.path)("already_finished", steps=metrics.get("steps"))
    if not run.finished:
        run.mark("finished")
    return metrics


@contextlib.contextmanager
def demo_run(command: str, requested: str | Path | None) -> Iterator[Path]:
    """:func:`open_run` for a demo: locked and kind-checked; its finished stages are kept when it fails
    (a re-run reuses them), and run.json says ``finished`` at the end."""
    with open_run(command, requested) as run:
        run.keep = run.started = True
        run.mark("running")
        yield run.path
        run.mark("finished")
