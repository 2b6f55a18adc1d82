"""Batch collation for causal-LM training, with goldfish applied as a label transform.

Each feature holds ``input_ids``, ``labels`` (−100 where unsupervised) and a ``doc_id`` (int). The batch
gets right padding, an ``attention_mask``, and per-token document ids ``doc_ids`` [B, T] (−1 on padding),
so later methods (MemSinks, packing) can key on the document of every token. With goldfish enabled,
``labels[goldfish_mask(input_ids)] = −100``: the mask is computed from the true tokens, so prompt masking
never changes which answer tokens are dropped, and any trainer gets goldfish for free. Special tokens are
protected (and left out of the hashed window) only under ``hash``; ``hash-table`` stays bit-identical to
the authors' reference, which knows no special tokens.

``random`` draws each sequence's mask from a generator seeded by (``seed``, the epoch, a hash of the
sequence's own token ids): a passage gets a fresh mask every epoch -- the point of the random baseline,
whose model eventually sees every token, unlike under ``static`` / ``hash`` -- and the same mask in any batch,
batch position or process, and after a resume (the trainer sets :attr:`CausalLMCollator.epoch` at each
epoch's start). Features carrying a ``sample_index`` (the trainer's do) mix it in, so repeated copies of a
passage (canaries) get independent masks as well.

Packing (``pack_length`` > 0): after goldfish, the batch's documents are packed first-fit, in order, into
rows of at most ``pack_length`` tokens. Such a batch has ``position_ids`` that restart at 0 for every
document and **no** ``attention_mask``: from the position resets, transformers' masking builds a causal
mask that never crosses a document boundary (a packed row gives every document the logits it gets alone),
and ``doc_ids`` keeps each token's own document (MemSinks keys its sinks on it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lethe.config import GoldfishSettings
from lethe.losses import IGNORE_INDEX
from lethe.train.goldfish import apply_goldfish, goldfish_mask


def content_seed(seed: int, input_ids: Sequence[int] | torch.Tensor, epoch: int = 0,
                 sample_index: int | None = None) -> int:
    """A 63-bit generator seed from ``seed``, ``epoch``, the sample's index in the training set (when known)
    and the token ids of one sequence (stable across processes)."""
    ids = torch.as_tensor(input_ids, dtype=torch.int64).cpu().numpy().tobytes()
    digest = hashlib.blake2b(ids, digest_size=8, key=f"{seed}:{epoch}:{sample_index}".encode())
    return int.from_bytes(digest.digest(), "little") >> 1


@dataclass
class CausalLMCollator:
    pad_id: int
    goldfish: GoldfishSettings | None = None
    special_ids: tuple[int, ...] = ()
    canonical_ids: torch.Tensor | None = None
    epoch: int = 0  # `random` goldfish only: set by the trainer at the start of every epoch
    pack_length: int = 0  # > 0: pack the batch's documents into rows of at most this many tokens

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
            labels = self._goldfish(self.goldfish, labels, input_ids, features)
        if self.pack_length > 0:
            return pack_rows(input_ids, labels, doc_ids, attention_mask.sum(1).tolist(), self.pack_length,
                             self.pad_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "doc_ids": doc_ids}

    def _goldfish(self, g: GoldfishSettings, labels: torch.Tensor, input_ids: torch.Tensor,
                  features: list[dict[str, Any]]) -> torch.Tensor:
        if g.strategy != "random":
            return apply_goldfish(
                labels, input_ids, g.k, g.h, g.strategy,
                special_ids=self.special_ids if g.strategy == "hash" else None,
                canonical_ids=self.canonical_ids,
            )
        drop = torch.zeros_like(input_ids, dtype=torch.bool)
        for row, feature in enumerate(features):  # each row on its own: padding and batch-mates do not matter
            ids = input_ids[row, : len(feature["input_ids"])]
            seed = content_seed(g.seed, ids, self.epoch, feature.get("sample_index"))
            drop[row, : len(ids)] = goldfish_mask(ids, g.k, g.h, "random", seed=seed)
        return labels.masked_fill(drop, IGNORE_INDEX)


def pack_rows(input_ids: torch.Tensor, labels: torch.Tensor, doc_ids: torch.Tensor, lengths: list[int],
              pack_length: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Pack right-padded rows (one document each) first-fit into rows of at most ``pack_length`` tokens.

    Returns ``input_ids``, ``labels``, ``doc_ids`` and ``position_ids`` (0 … n−1 per document, and per
    padding tail, which is its own segment with labels −100 and doc id −1); no ``attention_mask``.
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for row, n in enumerate(lengths):
        n = min(n, pack_length)
        target = next((b for b, free in enumerate(room) if free >= n), None)
        if target is None:
            bins.append([])
            room.append(pack_length)
            target = len(bins) - 1
        bins[target].append(row)
        room[target] -= n
    width = max(pack_length - free for free in room)
    out_ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    out_labels = torch.full((len(bins), width), IGNORE_INDEX, dtype=torch.long)
    out_docs = torch.full((len(bins), width), -1, dtype=torch.long)
    positions = torch.zeros((len(bins), width), dtype=torch.long)
    for b, rows in enumerate(bins):
        start = 0
        for row in rows:
            n = min(lengths[row], pack_length)
            out_ids[b, start : start + n] = input_ids[row, :n]
            out_labels[b, start : start + n] = labels[row, :n]
            out_docs[b, start : start + n] = doc_ids[row, :n]
            positions[b, start : start + n] = torch.arange(n)
            start += n
        positions[b, start:] = torch.arange(width - start)
    return {"input_ids": out_ids, "labels": out_labels, "doc_ids": out_docs, "position_ids": positions}
