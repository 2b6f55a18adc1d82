"""Batch collation for causal-LM training, with goldfish applied as a label transform.

Each feature holds ``input_ids``, ``labels`` (−100 where unsupervised) and a ``doc_id`` (int). The batch
gets right padding, an ``attention_mask``, and per-token document ids ``doc_ids`` [B, T] (−1 on padding),
so later methods (MemSinks, packing) can key on the document of every token. With goldfish enabled,
``labels[goldfish_mask(input_ids)] = −100``: the mask is computed from the true tokens, so prompt masking
never changes which answer tokens are dropped, and any trainer gets goldfish for free. Special tokens are
protected (and left out of the hashed window) only under ``hash``; ``hash-table`` stays bit-identical to
the authors' reference, which knows no special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lethe.config import GoldfishSettings
from lethe.losses import IGNORE_INDEX
from lethe.train.goldfish import apply_goldfish


@dataclass
class CausalLMCollator:
    pad_id: int
    goldfish: GoldfishSettings | None = None
    special_ids: tuple[int, ...] = ()
    canonical_ids: torch.Tensor | None = None
    _calls: int = field(default=0, init=False, repr=False)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = len(features)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        doc_ids = torch.full((batch, width), -1, dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"])
            labels[row, :n] = torch.as_tensor(feature["labels"])
            attention_mask[row, :n] = 1
            doc_ids[row, :n] = int(feature.get("doc_id", row))
        if self.goldfish is not None and self.goldfish.enabled:
            self._calls += 1
            labels = apply_goldfish(
                labels, input_ids, self.goldfish.k, self.goldfish.h, self.goldfish.strategy,
                special_ids=self.special_ids if self.goldfish.strategy == "hash" else None,
                seed=self.goldfish.seed * 1_000_003 + self._calls,
                canonical_ids=self.canonical_ids,
            )
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "doc_ids": doc_ids}
