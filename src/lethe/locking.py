"""One process per run directory: an exclusive ``fcntl.flock`` on ``<run_dir>/.lethe.lock``.

Two commands writing into one run directory would interleave checkpoints and leave a ``config.yaml`` that
does not describe the model beside it, so the second one fails at once with a one-line error naming the
holder's pid. The lock is released when the process ends, however it ends (the kernel drops it on SIGKILL),
so a stale lock file never blocks a re-run. In a multi-process launch (``accelerate launch``, ``torchrun``)
only the global rank 0 takes it: the ranks of one launch share the run directory by design.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from lethe.errors import LetheError

LOCK_FILE = ".lethe.lock"


def is_main_rank() -> bool:
    """True outside a distributed launch and on its global rank 0."""
    return os.environ.get("RANK", "0") in ("", "0")


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {text})" if text.isdigit() else ""


def acquire(run_dir: str | Path) -> int | None:
    """Lock ``run_dir`` for this process; the descriptor to :func:`release` (None on ranks other than 0)."""
    if not is_main_rank():
        return None
    path = Path(run_dir) / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise LetheError(f"cannot lock run directory {run_dir}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LetheError(f"run directory {run_dir} is in use by another lethe process{_holder(path)}; "
                             "wait for it to finish or use another --run-dir") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not unlinked by a holder that cleaned up between our open and our flock
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the descriptor drops the flock


@contextlib.contextmanager
def locked(run_dir: str | Path) -> Iterator[None]:
    """``with locked(run_dir): ...`` holds the run directory's lock for the block."""
    fd = acquire(run_dir)
    try:
        yield
    finally:
        release(fd)
