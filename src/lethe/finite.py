"""NaN/inf guards: training stops before a non-finite update, and no non-finite model is saved or audited.

- :func:`check_loss` (in ``compute_loss``, before the backward pass): a NaN/inf loss ends the run at once.
- :class:`FiniteGradientCallback` (before each optimizer step): a finite loss can still give non-finite
  gradients (overflow); the update is not applied.
- :func:`check_parameters` (before a checkpoint or the final model is written): an update can still make a
  weight non-finite (e.g. ``train.lr=inf``); nothing non-finite reaches the disk.
- :func:`require_finite_model` (audits): a model with NaN/inf weights scores every text alike, so an audit of
  it would report "nothing memorized"; it is refused instead.
All three raise :class:`~lethe.errors.LetheError` naming the step and the last good checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

from lethe.errors import LetheError


def nonfinite_parameters(model: torch.nn.Module, limit: int = 3) -> list[str]:
    """Names of (up to ``limit``) parameters holding NaN or inf."""
    bad = []
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param.detach()).all()):
            bad.append(name)
            if len(bad) >= limit:
                break
    return bad


def require_finite_model(model: torch.nn.Module, where: str | Path) -> None:
    """Refuse a model with NaN/inf weights (what a diverged run leaves)."""
    bad = nonfinite_parameters(model)
    if bad:
        raise LetheError(f"model {where} has non-finite weights (NaN/inf in {', '.join(bad)}); it comes from a "
                         "diverged run and cannot be audited or trained further")


def any_rank(trainer, bad: bool | torch.Tensor) -> bool:
    """True when ``bad`` holds on any process (every rank must stop, or the others hang in all-reduce)."""
    flag = torch.as_tensor(bad, dtype=torch.float32, device=trainer.args.device).reshape(1)
    if trainer.accelerator.num_processes > 1:
        flag = trainer.accelerator.reduce(flag, reduction="sum")
    return bool(flag.item() > 0)


def stop_error(trainer, step: int, what: str, last_good: Path | None, hint: str) -> LetheError:
    kept = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved yet"
    return LetheError(f"training stopped at step {step}: {what}; {kept}; {hint}")


def check_loss(trainer, loss: torch.Tensor) -> bool:
    """True when the loss is not finite on some rank (the caller raises before the backward pass)."""
    return any_rank(trainer, ~torch.isfinite(loss.detach().float()))


def gradients_finite(trainer) -> bool:
    finite = [torch.isfinite(p.grad).all() for p in trainer.model.parameters() if p.grad is not None]
    return not any_rank(trainer, bool(finite) and not bool(torch.stack(finite).all()))


def check_parameters(trainer) -> bool:
    """True when every parameter is finite on every rank."""
    finite = torch.stack([torch.isfinite(p.detach()).all() for p in trainer.model.parameters()]).all()
    return not any_rank(trainer, not bool(finite))


class FiniteGradientCallback(TrainerCallback):
    """Calls ``trainer.check_gradients()`` before every optimizer step."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.check_gradients()
