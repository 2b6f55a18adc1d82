"""LoRA adapters through peft (Hu et al. 2021, arXiv 2106.09685) for ``lethe train`` and ``lethe unlearn``.

Each target linear layer W (``lora.target_modules``; ``all-linear`` = every linear layer but the LM head)
becomes

    h = W x + (alpha / r) · B A x,    A ∈ R^{r×d_in} (random), B ∈ R^{d_out×r} (zeros),

with W frozen and only A and B trained, so the model starts exactly at the base model. A finished run saves
the adapter on its own (``adapter/``: peft's folder, whose ``base_model_name_or_path`` names the base) and
the merged model W + (alpha / r) · B A (``model/``: a plain HF folder, what every other command reads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lethe.config import LoraSettings
from lethe.errors import LetheError
from lethe.models import peft_quiet
from lethe.runs import publish_dir


def is_peft(model: torch.nn.Module) -> bool:
    """A peft model (adapters that can be disabled, saved alone or merged)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def apply_lora(model: torch.nn.Module, settings: LoraSettings, seed: int) -> torch.nn.Module:
    """``model`` wrapped with fresh LoRA adapters (A drawn from ``seed``: the same run, the same adapters):
    only the adapters require gradients."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(seed)

    targets: str | list[str] = list(settings.target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    try:  # activation checkpointing, enabled later by the Trainer, makes the inputs require grad for peft
        with peft_quiet():
            return get_peft_model(model, config)
    except ValueError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LetheError(f"config: lora.target_modules {settings.target_modules}: {first}") from None


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable and total parameters (LoRA: the adapters vs the whole model)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_parameters": trainable, "total_parameters": sum(p.numel() for p in model.parameters())}


def lora_summary(settings: LoraSettings, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """What metrics.json says about LoRA."""
    if not settings.enabled:
        return {"enabled": False}
    summary: dict[str, Any] = {"enabled": True, "r": settings.r, "alpha": settings.alpha,
                               "dropout": settings.dropout, "target_modules": list(settings.target_modules)}
    if model is not None:
        summary.update(parameter_counts(model))
    return summary


def save_adapter(model: torch.nn.Module, tokenizer: Any, folder: Path, base: str) -> Path:
    """The adapter alone (safetensors) with the tokenizer; ``base`` is recorded as its base model."""
    for config in model.peft_config.values():
        config.base_model_name_or_path = base
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def publish_adapter(model: torch.nn.Module, tokenizer: Any, run_dir: Path, base_name: str) -> Path | None:
    """``run_dir/adapter`` (staged, then renamed) for a peft model, before its adapters are merged; None for a
    plain model. Called by the main process only."""
    if not is_peft(model):
        return None
    base = base_reference(base_name)
    return publish_dir(run_dir / "adapter", lambda staging: save_adapter(model, tokenizer, staging, base))


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with its adapters merged into the weights (a peft model is changed in place)."""
    if not is_peft(model):
        return model
    with peft_quiet():
        return model.merge_and_unload()


def base_reference(name: str) -> str:
    """How an adapter names its base: a local folder as an absolute path (the run may be read from another
    directory), a preset or a cached hub id as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name
