"""Training progress for HF ``Trainer``: Lethe's progress (:mod:`lethe.progress`) instead of HF's own output.

HF prints its log records as Python dicts with the numbers turned into strings (``{'loss': '3.214', ...}``),
through a tqdm bar that, redirected to a file, becomes one line of ``\\r`` frames (``ProgressCallback``),
or with ``print`` when the bar is off (``PrinterCallback``). :class:`TrainingProgress` replaces both: a
bar over the optimizer steps on a terminal, timed lines otherwise, ``progress`` events in the run's
``log.jsonl``, and each log record as one readable line on stderr with its numbers as numbers::

    [lethe] train, step 20/100: loss 3.214, grad_norm 1.052, learning_rate 0.0004, epoch 0.4, ...

(the records themselves go to ``log.jsonl`` as JSON numbers: ``JsonlLogCallback``). Nothing on stderr
when quiet.
"""

from __future__ import annotations

from typing import Any

from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback

from lethe.progress import PREFIX, Progress, progress


def format_value(value: Any) -> str:
    """A logged number as a number: floats with 4 significant digits, ints as they are."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def log_line(label: str, step: int, max_steps: int, logs: dict[str, Any]) -> str:
    """One log record of the Trainer as one line."""
    fields = ", ".join(f"{key} {format_value(value)}" for key, value in logs.items() if key != "total_flos")
    where = f"{label}, " if label else ""
    return f"{PREFIX} {where}step {step}/{max_steps}: {fields}"


class TrainingProgress(TrainerCallback):
    """The Trainer's steps as a :class:`lethe.progress.Progress`, its log records as lines (main process)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar: Progress | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = progress(desc="training", total=state.max_steps, unit="steps", initial=state.global_step,
                                quiet=self.quiet)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update_to(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            label = self.bar.run.label if self.bar.run is not None else ""
            self.bar.write(log_line(label, state.global_step, state.max_steps, logs))

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def show_training_progress(trainer: Trainer, quiet: bool = False) -> TrainingProgress:
    """Swap the Trainer's own progress output (bar or printed dicts) for :class:`TrainingProgress`."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    callback = TrainingProgress(quiet)
    trainer.add_callback(callback)
    return callback
