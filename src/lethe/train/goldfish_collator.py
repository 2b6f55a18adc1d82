"""Goldfish loss for any trainer: a data collator that wraps another one.

Goldfish (Hans et al. 2024, arXiv 2406.10209) is a label transform, so it needs no trainer of its own: the
wrapped collator builds the batch as usual (``input_ids``, ``labels``, ``attention_mask``), then

    labels[goldfish_mask(input_ids, k, h)] = −100

drops a hashed 1/k of the targets (after the first h tokens of each window) from the loss; HF ``Trainer``,
TRL's ``SFTTrainer`` or a hand-written loop then average the loss over the supervised tokens only. A base
collator that returns no ``labels`` gets ``input_ids`` with padding (``attention_mask == 0``) at −100.

    from transformers import DataCollatorForLanguageModeling, Trainer
    from lethe import GoldfishCollator

    collator = GoldfishCollator(DataCollatorForLanguageModeling(tokenizer, mlm=False), k=4, h=13,
                                special_ids=tokenizer.all_special_ids)
    Trainer(model=model, args=args, train_dataset=tokenized, data_collator=collator).train()

Strategies: ``hash`` (default), ``hash-table`` (the authors' reference table), ``static``; ``random`` needs a
per-epoch seed that only ``lethe train`` provides, so it is refused here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.train.goldfish import _check_params, apply_goldfish

COLLATOR_STRATEGIES = ("hash", "hash-table", "static")


@dataclass
class GoldfishCollator:
    """``base(features)``, then goldfish on its labels (see the module docstring)."""

    base: Callable[[list[dict[str, Any]]], dict[str, Any]]
    k: int = 4
    h: int = 13
    strategy: str = "hash"
    special_ids: Sequence[int] = ()  # `hash`: never dropped, left out of the window (pass all_special_ids)

    def __post_init__(self) -> None:
        _check_params(self.k, self.h, self.strategy)
        if self.strategy not in COLLATOR_STRATEGIES:
            raise LetheError(f"GoldfishCollator: strategy must be one of {', '.join(COLLATOR_STRATEGIES)} "
                             f"(`random` needs lethe train's per-epoch seeds), got {self.strategy!r}")
        if not callable(self.base):
            raise LetheError(f"GoldfishCollator: base must be a data collator (a callable), got "
                             f"{type(self.base).__name__}")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(features)
        if "input_ids" not in batch:
            raise LetheError(f"GoldfishCollator: the base collator returned no input_ids (keys: {sorted(batch)})")
        input_ids = torch.as_tensor(batch["input_ids"])
        labels = batch.get("labels")
        if labels is None:
            labels = input_ids.clone()
            mask = batch.get("attention_mask")
            if mask is not None:
                labels = labels.masked_fill(torch.as_tensor(mask) == 0, IGNORE_INDEX)
        batch["labels"] = apply_goldfish(torch.as_tensor(labels), input_ids, self.k, self.h, self.strategy,
                                         special_ids=self.special_ids if self.strategy == "hash" else None)
        return batch
