"""Progress of long loops: a tqdm bar on a terminal, timed lines otherwise, events in the run's ``log.jsonl``.

Wrap a loop that can take more than a few seconds::

    for batch in progress(batches, "scoring", total=len(features), unit="sequences", size=len):
        ...

(``size``: how many units one item is worth, here the sequences of a batch.) Where the progress goes:

- stderr is a terminal and Lethe is not quiet: a tqdm bar on stderr;
- stderr is not a terminal (a file, a pipe, a notebook) and not quiet: one line now and then on stderr,
  ``[lethe] audit extraction, generation: 64/200 prompts (32%), 12.3 s elapsed, ~26 s left`` — when
  another 10% is done and 5 s have passed since the last line, or 30 s have passed — and a last line when
  the loop took 5 s or more (no ``\\r`` frames: a redirected log stays readable line by line);
- inside a run (:func:`run_context`, entered by :func:`lethe.runs.open_run` for every command), on the
  main process, whether quiet or not: ``{"event": "progress", "stage", "done", "total", "unit",
  "elapsed_s", "left_s"}`` in the run's ``log.jsonl`` at the same moments, and a last one with
  ``"final": true`` when the loop ends.

Quiet = ``--quiet`` (:func:`set_quiet`, which the CLI calls), ``quiet=True`` of the call, or
``TQDM_DISABLE`` set in the environment. Nested loops (the scoring of each canary inside the canary loop):
on a terminal the inner bar is drawn below the outer one and removed when done; lines and log events come
from the outermost loop only (an inner loop's updates let the outer one report its elapsed time), so
nothing is written once per inner call. While a loop is open, a background thread checks the 30 s clock
every 5 s, so a single batch that takes minutes still gets its lines. The first bar of a run also names the
run directory on stderr.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lethe.locking import is_main_rank

LINE_STEP = 0.10  # a line after another 10% of the loop ...
MIN_GAP_S = 5.0  # ... and at least 5 s after the previous line
MAX_GAP_S = 30.0  # a line at least every 30 s, whatever the fraction done
HEARTBEAT_S = 5.0  # how often a background thread checks the 30 s (a batch can take minutes on a CPU)
PREFIX = "[lethe]"
_clock = time.monotonic  # (tests replace it)


def _env_quiet() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


_ENV_QUIET = _env_quiet()  # read once, at import: the CLI sets TQDM_DISABLE itself for other libraries' bars
_quiet = _ENV_QUIET
_lock = threading.RLock()  # the heartbeat thread and the loop report through the same state
_active: list[Progress] = []  # open loops, outermost first
_runs: list[RunContext] = []  # open runs, innermost last


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) progress on stderr for this process; ``TQDM_DISABLE`` in the environment wins."""
    global _quiet
    _quiet = bool(quiet) or _ENV_QUIET


def is_quiet() -> bool:
    return _quiet


def on_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


@dataclass
class RunContext:
    """The run a loop reports to: its folder (``log.jsonl``) and the command's name for the lines."""

    path: Path
    label: str
    announced: bool = False


@contextlib.contextmanager
def run_context(path: str | Path, label: str) -> Iterator[RunContext]:
    """Loops started inside report to ``path/log.jsonl`` and name ``label`` in their lines."""
    context = RunContext(Path(path), label)
    _runs.append(context)
    try:
        yield context
    finally:
        for loop in [loop for loop in _active if loop.run is context]:
            loop.close()  # a loop left open by an exception (a failed training) ends with its run
        _runs.remove(context)


def _emit(line: str) -> None:
    """One whole line on stderr (one write, under the lock: the heartbeat thread never splits a line)."""
    with _lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def format_seconds(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """One loop's progress (see the module docstring); iterate it, or call :meth:`update` and :meth:`close`."""

    def __init__(self, iterable: Iterable[Any] | None = None, desc: str = "", *, total: int | None = None,
                 unit: str = "items", size: Callable[[Any], int] | None = None, initial: int = 0,
                 quiet: bool | None = None, eta: bool = True) -> None:
        if total is None and size is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.desc, self.total, self.unit, self.size = iterable, desc, total, unit, size
        self.done = self.initial = self.last_done = initial
        self.started = self.last_line = _clock()
        self.printed = False
        self.closed = False
        self.eta = eta  # False: units of unequal length (the steps of a conversion), no time-left estimate
        main = is_main_rank()
        self.show = main and not (_quiet or bool(quiet))
        self.outermost = not _active
        self.run = _runs[-1] if _runs and main else None
        self.bar = (tqdm(total=total, desc=desc, unit=f" {unit}", initial=initial, leave=self.outermost,
                         dynamic_ncols=True, file=sys.stderr) if self.show and on_terminal() else None)
        self.lines = self.show and self.bar is None and self.outermost
        _active.append(self)
        if self.run is not None and not self.run.announced:
            self.run.announced = True
            self.write(f"{PREFIX} run directory: {self.run.path} (progress in its log.jsonl)")
        self._stop = threading.Event()
        if self.outermost and (self.lines or self.run is not None):
            threading.Thread(target=self._heartbeat, name="lethe-progress", daemon=True).start()

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("Progress without an iterable: call update()")
        try:
            for item in self.iterable:
                yield item
                self.update(self.size(item) if self.size is not None else 1)
        finally:
            self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        if n <= 0:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if _active:
            _active[0]._tick()

    def update_to(self, done: int) -> None:
        self.update(done - self.done)

    def write(self, line: str) -> None:
        """A line on stderr that leaves the terminal's bars intact (nothing when quiet)."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        elif self.show:
            _emit(line)

    def close(self) -> None:
        self._stop.set()
        with _lock:
            if self.closed:
                return
            self.closed = True
            elapsed = _clock() - self.started
            if self.lines and (self.printed or elapsed >= MIN_GAP_S):
                _emit(self._line(final=True))
            self._log(final=True)
            if self.bar is not None:
                self.bar.close()
            if self in _active:
                _active.remove(self)

    # ---------------------------------------------------------------------------------------- reporting

    def _heartbeat(self) -> None:
        """While the loop is open: report on the 30 s clock even when no update comes (one long batch)."""
        while not self._stop.wait(HEARTBEAT_S):
            self._tick()

    def _tick(self) -> None:
        if not (self.lines or self.run is not None):
            return
        with _lock:
            now = _clock()
            gap = now - self.last_line
            step = (self.done - self.last_done) / self.total if self.total else 0.0
            if self.closed or not ((gap >= MIN_GAP_S and step >= LINE_STEP) or gap >= MAX_GAP_S):
                return
            if self.total and self.done >= self.total:
                return  # the last line (close) says it
            self.last_line, self.last_done = now, self.done
            if self.lines:
                self.printed = True
                _emit(self._line())
            self._log()

    def _left(self, elapsed: float) -> float | None:
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        if not self.total or rate <= 0 or not self.eta:
            return None
        return max(self.total - self.done, 0) / rate

    def _line(self, final: bool = False) -> str:
        elapsed = _clock() - self.started
        where = f"{self.run.label}, " if self.run is not None else ""
        count = f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"
        if final:
            return f"{PREFIX} {where}{self.desc}: {count} in {format_seconds(elapsed)}"
        percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = self._left(elapsed)
        eta = f", ~{format_seconds(left)} left" if left is not None else ""
        return f"{PREFIX} {where}{self.desc}: {count}{percent}, {format_seconds(elapsed)} elapsed{eta}"

    def _log(self, final: bool = False) -> None:
        """A progress event in the run's log.jsonl (the outermost loop of a run that is still open)."""
        if self.run is None or not self.outermost or self.run not in _runs:
            return
        from lethe.runs import RunLog

        elapsed = _clock() - self.started
        left = None if final else self._left(elapsed)
        fields: dict[str, Any] = {"stage": self.desc, "done": self.done, "total": self.total, "unit": self.unit,
                                  "elapsed_s": round(elapsed, 3),
                                  "left_s": None if left is None or not math.isfinite(left) else round(left, 3)}
        if final:
            fields["final"] = True
        with contextlib.suppress(OSError):  # progress is a report: it never fails the run
            RunLog(self.run.path)("progress", **fields)


def progress(iterable: Iterable[Any] | None = None, desc: str = "", *, total: int | None = None,
             unit: str = "items", size: Callable[[Any], int] | None = None, initial: int = 0,
             quiet: bool | None = None, eta: bool = True) -> Progress:
    """The progress of a loop over ``iterable`` (or, without one, of :meth:`Progress.update` calls):
    ``total`` units (default ``len(iterable)``), each item worth ``size(item)`` units (default 1)."""
    return Progress(iterable, desc, total=total, unit=unit, size=size, initial=initial, quiet=quiet, eta=eta)


@contextlib.contextmanager
def library_progress(module: Any, desc: str, unit: str = "items") -> Iterator[None]:
    """Route a library's own ``tqdm(iterable, ...)`` loop through :func:`progress` while inside: ``module``
    is the module whose global ``tqdm`` draws it (e.g. transformers' GGUF de-quantization, whose bar
    ignores transformers' progress-bar switch and writes ``\\r`` frames into redirected output)."""
    original = getattr(module, "tqdm", None)
    if original is None:
        yield
        return

    def routed(iterable: Iterable[Any] | None = None, *args: Any, **kwargs: Any) -> Progress:
        return progress(iterable, desc, total=kwargs.get("total"), unit=unit)

    module.tqdm = routed
    try:
        yield
    finally:
        module.tqdm = original
