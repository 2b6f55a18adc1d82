"""Sealed checkpoints: a checkpoint counts only once it is complete.

HF ``Trainer`` writes ``checkpoint-N`` file by file (weights, optimizer, scheduler, RNG, trainer state), so a
kill or Ctrl-C in the middle leaves a folder that looks like a checkpoint and cannot be resumed from. Lethe
writes one more small file, ``lethe_state.json``, **last** and atomically (temp file + ``os.replace``): it
seals the checkpoint and carries what HF does not keep (the token counters, the running training loss, GUARD
weights). Then:

- resume takes the newest *sealed* checkpoint; unsealed ones are ignored and deleted (:func:`clean_incomplete`);
- rotation (``train.save_total_limit``) is done here, after sealing, and only ever deletes checkpoints older
  than the newest sealed one, so the only complete checkpoint is never lost.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from lethe.runs import atomic_write_json

STATE_FILE = "lethe_state.json"
TRAINER_STATE = "trainer_state.json"
PREFIX = "checkpoint-"
FORMAT = 1
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """N for a folder named ``checkpoint-N``, else None."""
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else None


def read_state(checkpoint: str | Path) -> dict[str, Any] | None:
    """The seal of ``checkpoint`` (its ``lethe_state.json``), or None when it is missing or unreadable."""
    path = Path(checkpoint) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) else None


def is_complete(checkpoint: Path) -> bool:
    """Sealed for its own step, with the trainer state beside the seal. The seal is written after every
    other file (weights in whatever layout: safetensors, FSDP shards, DeepSpeed ``global_step*/``), so it is
    the one thing to check."""
    step = checkpoint_step(checkpoint)
    state = read_state(checkpoint) if step is not None and checkpoint.is_dir() else None
    return state is not None and state.get("global_step") == step and (checkpoint / TRAINER_STATE).is_file()


def _checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def complete_checkpoints(folder: str | Path) -> list[Path]:
    """The sealed checkpoints in ``folder``, oldest first."""
    return [p for p in _checkpoints(Path(folder)) if is_complete(p)]


def latest_complete(folder: str | Path) -> Path | None:
    """The newest sealed checkpoint in ``folder`` (what a re-run resumes from), or None."""
    complete = complete_checkpoints(folder)
    return complete[-1] if complete else None


def clean_incomplete(folder: str | Path) -> list[Path]:
    """Delete every unsealed ``checkpoint-N`` in ``folder`` (a kill during a save); return what was deleted."""
    removed = [p for p in _checkpoints(Path(folder)) if not is_complete(p)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def seal(checkpoint: str | Path, global_step: int, **state: Any) -> Path:
    """Write ``lethe_state.json`` into a checkpoint whose other files are all written: it is now complete."""
    return atomic_write_json(Path(checkpoint) / STATE_FILE, {"format": FORMAT, "global_step": global_step, **state})


def rotate(folder: str | Path, limit: int | None) -> list[Path]:
    """Keep the newest ``limit`` sealed checkpoints (all when ``limit`` is None or < 1) and delete the older
    ones and every unsealed one older than the newest sealed one; return what was deleted."""
    folder = Path(folder)
    complete = complete_checkpoints(folder)
    if not complete:
        return []
    newest = checkpoint_step(complete[-1]) or 0
    doomed = complete[:-limit] if limit and limit > 0 else []
    doomed += [p for p in _checkpoints(folder) if not is_complete(p) and (checkpoint_step(p) or 0) < newest]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


class SealedCheckpoints:
    """Mixin for an HF ``Trainer`` subclass (put it first in the bases): every checkpoint it writes is sealed
    by :func:`seal` after HF's files, rotated by :func:`rotate`, and carries the running loss sum and what
    :meth:`checkpoint_state` adds. Build the ``TrainingArguments`` with ``save_total_limit=None`` and pass the
    limit as ``keep_checkpoints``: HF's own rotation runs before the seal and could delete the only complete
    checkpoint."""

    def __init__(self, *args: Any, keep_checkpoints: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_checkpoints = keep_checkpoints
        self.resumed_loss_sum = 0.0  # Σ per-step losses of the steps before the resumed checkpoint
        self.resumed_step = 0

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint must carry besides HF's files; called on every rank (may run collectives)."""
        return {}

    def loss_sum(self) -> float:
        """Σ over every optimizer step so far (this process and the resumed ones) of the step's mean loss."""
        pending = getattr(self, "_tr_loss", None)
        value = 0.0
        if isinstance(pending, torch.Tensor):
            pending = pending.detach().float().clone()
            if self.accelerator.num_processes > 1:
                pending = self.accelerator.reduce(pending, reduction="mean")
            value = float(pending)
        return self.resumed_loss_sum + float(getattr(self, "_total_loss_scalar", 0.0)) + value

    def restore_state(self, checkpoint: str | Path | None) -> dict[str, Any]:
        """Read a sealed checkpoint's state back (the loss sum here; subclasses read the rest)."""
        state = read_state(checkpoint) if checkpoint else None
        if not state:
            return {}
        self.resumed_loss_sum = float(state.get("loss_sum") or 0.0)
        self.resumed_step = int(state.get("global_step") or 0)
        return state

    def run_loss(self, output_loss: float) -> float:
        """The mean per-step loss over the whole run, resumed steps included."""
        steps = self.state.global_step
        trained = steps - self.resumed_step
        total = self.resumed_loss_sum + output_loss * max(trained, 0)
        return total / steps if steps > 0 else 0.0

    def _save_checkpoint(self, model, trial) -> None:
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX}{self.state.global_step}"
        if self.args.should_save:
            (folder / STATE_FILE).unlink(missing_ok=True)  # re-saved in place: unsealed until complete again
        super()._save_checkpoint(model, trial)
        state = {"loss_sum": self.loss_sum(), **self.checkpoint_state()}
        self.accelerator.wait_for_everyone()  # every rank's shard is written before the seal
        if self.args.should_save:
            seal(folder, self.state.global_step, **state)
            rotate(folder.parent, self.keep_checkpoints)
