"""Score sequences that share a prompt in one packed row: the prompt once, every continuation after it.

A TOFU question is scored with seven answers (the answer, its paraphrase, five perturbed answers) behind
the same chat prompt, about half of each sequence; a canary prefix with every candidate completion. Scoring
each sequence alone pushes the prompt through every layer seven times. Here the sequences of a group with
the same prompt P (the tokens before the first target, with the same attention mask) become one row

    tokens      P  S_1  S_2  …  S_n            (S_i: sequence i after P; rows right-padded)
    positions   0 … p−1,  p … p+|S_i|−1 for each S_i       (each sequence's own numbering)
    attention   q → k  iff  mask_k = 1,  k ≤ q  and  (k ∈ P  or  k, q ∈ the same S_i)

(pads attend to themselves only). Sequence i's next-token logits are the row's at P's last position for its
first token and at its own S_i positions after that: the computation of ``model(sequence_i)`` for every
position, with P's hidden states computed once. The numbers equal scoring each sequence alone up to float
rounding (matmul blocking: ~1e-6 relative in float32).

The mask goes to the model as a 4-D additive float mask with explicit position ids, which Hugging Face
models built on ``masking_utils`` take as given (:func:`supports_prompt_sharing`); other models, and
models whose layers use sliding-window or chunked attention that such a mask would override, are scored
sequence by sequence (:func:`lethe.audit.scoring.score_sequences`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lethe.losses import IGNORE_INDEX

ATTENTION_TAKING_4D_MASKS = ("sdpa", "eager")


def supports_prompt_sharing(model: Any) -> bool:
    """Whether ``model`` computes a packed row as it computes its sequences alone: a transformers model with
    sdpa or eager attention over full (not sliding-window or chunked) attention, taking position ids."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return False
    config = model.config
    if getattr(config, "is_encoder_decoder", False) or getattr(config, "_attn_implementation", None) \
            not in ATTENTION_TAKING_4D_MASKS:
        return False
    if getattr(config, "sliding_window", None) is not None or getattr(config, "attention_chunk_size", None):
        return False
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return False
    try:
        return "position_ids" in inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return False


def prompt_length(labels: Sequence[int]) -> int:
    """The length of a sequence's prompt: the tokens before its first target (never 0: token 0 is no
    target); the whole sequence when it has none."""
    for t in range(1, len(labels)):
        if labels[t] != IGNORE_INDEX:
            return t
    return len(labels)


def _mask_of(feature: dict[str, Sequence[int]]) -> list[int]:
    mask = feature.get("attention_mask")
    return [1] * len(feature["input_ids"]) if mask is None else [int(m) for m in mask]


def prompt_groups(features: Sequence[dict[str, Sequence[int]]], most: int) -> list[list[int]]:
    """Indices of the features grouped by identical prompt (tokens and mask), in first-seen order, each
    group cut into pieces of at most ``most`` sequences."""
    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[int]] = {}
    for index, feature in enumerate(features):
        p = prompt_length(feature["labels"])
        key = (tuple(feature["input_ids"][:p]), tuple(_mask_of(feature)[:p]))
        groups.setdefault(key, []).append(index)
    return [group[i : i + most] for group in groups.values() for i in range(0, len(group), most)]


@dataclass
class PackedRow:
    """One group's row: tokens, positions, segment per position (0 = prompt, i = sequence i, from 1), mask,
    and for each sequence (feature index) the row position predicting each of its targets, and the targets."""

    input_ids: list[int]
    positions: list[int]
    segments: list[int]
    mask: list[int]
    sequences: list[tuple[int, list[int], list[int]]]  # (feature index, predicting positions, targets)

    def __len__(self) -> int:
        return len(self.input_ids)


def pack_group(features: Sequence[dict[str, Sequence[int]]], group: Sequence[int]) -> PackedRow:
    """The packed row of a group of features with one prompt (module docstring)."""
    first = features[group[0]]
    p = prompt_length(first["labels"])
    row = PackedRow(input_ids=list(first["input_ids"][:p]), positions=list(range(p)), segments=[0] * p,
                    mask=_mask_of(first)[:p], sequences=[])
    for segment, index in enumerate(group, start=1):
        ids, labels, mask = features[index]["input_ids"], features[index]["labels"], _mask_of(features[index])
        start = len(row.input_ids)
        predicting, targets = [], []
        for t in range(p, len(ids)):
            if labels[t] != IGNORE_INDEX:
                predicting.append(p - 1 if t == p else start + (t - 1 - p))
                targets.append(int(labels[t]))
        row.input_ids.extend(ids[p:])
        row.positions.extend(range(p, len(ids)))
        row.segments.extend([segment] * (len(ids) - p))
        row.mask.extend(mask[p:])
        row.sequences.append((index, predicting, targets))
    return row


@dataclass
class PackedBatch:
    """Model inputs of a batch of packed rows, and how to read each sequence's targets off its logits."""

    input_ids: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, 1, L, L] additive (0 attend, dtype min blocked)
    keep: torch.Tensor  # [B, L] bool: the positions whose logits are needed (each once)
    gather: torch.Tensor  # [N]: for every target, its row in the [keep.sum(), V] logits
    targets: torch.Tensor  # [N]
    sequences: list[tuple[int, int]]  # (feature index, number of targets), in the order of ``targets``


def batch_rows(rows: Sequence[PackedRow], pad_id: int, dtype: torch.dtype) -> PackedBatch:
    """Right-pad ``rows`` into one batch with its block mask (module docstring)."""
    width = max(len(row) for row in rows)
    size = (len(rows), width)
    input_ids = torch.full(size, pad_id, dtype=torch.long)
    position_ids = torch.zeros(size, dtype=torch.long)
    segments = torch.full(size, -1, dtype=torch.long)
    key_mask = torch.zeros(size, dtype=torch.bool)
    keep = torch.zeros(size, dtype=torch.bool)
    for b, row in enumerate(rows):
        n = len(row)
        input_ids[b, :n] = torch.as_tensor(row.input_ids)
        position_ids[b, :n] = torch.as_tensor(row.positions)
        segments[b, :n] = torch.as_tensor(row.segments)
        key_mask[b, :n] = torch.as_tensor(row.mask, dtype=torch.bool)
        for _, predicting, _ in row.sequences:
            keep[b, predicting] = True
    index = torch.arange(width)
    causal = index[None, :] <= index[:, None]  # [q, k]: k ≤ q
    same_branch = (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])  # [B, q, k]
    allowed = causal & same_branch & key_mask[:, None, :] & (segments[:, :, None] >= 0)
    allowed |= torch.eye(width, dtype=torch.bool) & (segments < 0)[:, :, None]  # a pad attends to itself
    attention_mask = torch.zeros((len(rows), 1, width, width), dtype=dtype)
    attention_mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    # the k-th kept position (row-major) is row k of the logits; each target reads the row of its position
    slot = torch.full(size, -1, dtype=torch.long)
    slot[keep] = torch.arange(int(keep.sum()))
    gather, targets, sequences = [], [], []
    for b, row in enumerate(rows):
        for feature_index, predicting, row_targets in row.sequences:
            gather.extend(slot[b, predicting].tolist())
            targets.extend(row_targets)
            sequences.append((feature_index, len(row_targets)))
    return PackedBatch(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, keep=keep,
                       gather=torch.as_tensor(gather, dtype=torch.long),
                       targets=torch.as_tensor(targets, dtype=torch.long), sequences=sequences)


def packed_batches(features: Sequence[dict[str, Sequence[int]]], *, batch_size: int, max_tokens: int | None,
                   pad_id: int, dtype: torch.dtype) -> list[PackedBatch]:
    """Every feature in some batch: groups of one prompt packed into rows, rows sorted by length and batched
    with at most ``batch_size`` sequences (the same logits memory as ``batch_size`` sequences alone) and,
    given ``max_tokens``, at most that many padded tokens per batch (a longer row alone)."""
    rows = sorted((pack_group(features, group) for group in prompt_groups(features, batch_size)), key=len)
    batches: list[list[PackedRow]] = []
    for row in rows:
        current = batches[-1] if batches else None
        if current is not None and sum(len(r.sequences) for r in current) + len(row.sequences) <= batch_size and (
                max_tokens is None or len(row) * (len(current) + 1) <= max_tokens):
            current.append(row)
        else:
            batches.append([row])
    return [batch_rows(rows, pad_id, dtype) for rows in batches]


def first_token_masked(features: Sequence[dict[str, Sequence[int]]]) -> bool:
    """Whether some feature masks its first token: that position would attend to nothing, a case the packed
    mask does not reproduce; such inputs are scored sequence by sequence."""
    return any(f.get("attention_mask") is not None and len(f["input_ids"]) and not f["attention_mask"][0]
               for f in features)
