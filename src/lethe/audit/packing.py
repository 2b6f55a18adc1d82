"""Packed scoring rows: several sequences in one row, a prompt shared by some of them only once.

A TOFU question is scored with seven answers (the answer, its paraphrase, five perturbed answers) behind
the same chat prompt, about half of each sequence; a canary prefix with every candidate completion. Scoring
each sequence alone pushes the prompt through every layer seven times, and a batch of short texts of
different lengths (MIA) is 15% padding. Here the sequences of a group with the same prompt P (the tokens
before the first target, with the same attention mask, at least :data:`MIN_SHARED_PROMPT` tokens; else a
group of one) become

    tokens      P  S_1  S_2  …  S_n            (S_i: sequence i after P, without its last token)
    positions   0 … p−1,  p … p+|S_i|−1 for each S_i       (each sequence's own numbering)
    attention   q → k  iff  mask_k = 1,  k ≤ q,  same group  and  (k ∈ P  or  k, q ∈ the same S_i)

and groups fill rows of up to :data:`ROW_TOKENS` tokens (a longer group alone; pads attend to themselves).
Sequence i's next-token logits are the row's at P's last position for its first target and at its own S_i
positions after that: the computation of ``model(sequence_i)`` at every position a target needs, with P
computed once. A sequence's last token is left out: it predicts nothing and nothing after it attends to it.
The numbers equal scoring each sequence alone up to float rounding (matmul blocking: ~1e-6 relative in
float32; the tests find them equal to 1e-10 in float64).

The mask goes to the model as a 4-D additive float mask with explicit position ids, which Hugging Face
models built on ``masking_utils`` take as given (:func:`supports_packing`); other models, and models whose
layers use sliding-window or chunked attention that such a mask would override, are scored sequence by
sequence (:func:`lethe.audit.scoring.score_sequences`).

Measured (SmolLM2-135M, 2 threads): TOFU forget01 limit 5, 115 sequences: 8,176 tokens -> 4,293, 9.0 s ->
6.0 s.
"""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lethe.losses import IGNORE_INDEX

ATTENTION_TAKING_4D_MASKS = ("sdpa", "eager")
ROW_TOKENS = 128  # rows of several groups are filled up to this many tokens (see merge_rows)
MAX_ROW_TOKENS = 2048  # a group's row is cut beyond this (its [L, L] mask and attention grow quadratically)
MIN_SHARED_PROMPT = 4  # a shorter common prompt (a text's first token) is not worth a long row's attention


def supports_packing(model: Any) -> bool:
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
    if any("alibi" in key and value for key, value in _flat_items(config.to_dict())):
        return False  # ALiBi biases are built from the 2-D mask's cumulative positions (BLOOM, MPT, Falcon)
    try:
        return "position_ids" in inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return False


def _flat_items(settings: dict[str, Any]) -> list[tuple[str, Any]]:
    items = []
    for key, value in settings.items():
        items += _flat_items(value) if isinstance(value, dict) else [(str(key), value)]
    return items


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
    """Indices of the features grouped by identical prompt (tokens and mask) of at least
    :data:`MIN_SHARED_PROMPT` tokens (shorter prompts: a group of one), in first-seen order, each group cut
    into pieces of at most ``most`` sequences and (where sequences allow) :data:`MAX_ROW_TOKENS` tokens."""
    groups: dict[Any, list[int]] = {}
    for index, feature in enumerate(features):
        p = prompt_length(feature["labels"])
        key = (tuple(feature["input_ids"][:p]), tuple(_mask_of(feature)[:p])) if p >= MIN_SHARED_PROMPT else index
        groups.setdefault(key, []).append(index)
    pieces: list[list[int]] = []
    for group in groups.values():
        p, piece, tokens = prompt_length(features[group[0]]["labels"]), [], 0
        for index in group:
            suffix = len(features[index]["input_ids"]) - p
            if piece and (len(piece) >= most or p + tokens + suffix > MAX_ROW_TOKENS):
                pieces.append(piece)
                piece, tokens = [], 0
            piece.append(index)
            tokens += suffix
        pieces.append(piece)
    return pieces


@dataclass
class PackedRow:
    """A row of one or more groups: tokens, positions, group and segment per position (segment 0 = the
    group's prompt, i = its sequence i, from 1), mask, and for each sequence (feature index) the row position
    predicting each of its targets, and the targets."""

    input_ids: list[int]
    positions: list[int]
    groups: list[int]
    segments: list[int]
    mask: list[int]
    sequences: list[tuple[int, list[int], list[int]]]  # (feature index, predicting positions, targets)

    def __len__(self) -> int:
        return len(self.input_ids)

    def extend(self, other: PackedRow) -> None:
        """Append ``other``'s groups after this row's (block-diagonal: they never attend to each other)."""
        offset, next_group = len(self), (max(self.groups) + 1 if self.groups else 0)
        self.input_ids += other.input_ids
        self.positions += other.positions
        self.groups += [g + next_group for g in other.groups]
        self.segments += other.segments
        self.mask += other.mask
        self.sequences += [(i, [q + offset for q in predicting], targets) for i, predicting, targets in other.sequences]


def pack_group(features: Sequence[dict[str, Sequence[int]]], group: Sequence[int]) -> PackedRow:
    """The packed row of a group of features with one prompt (module docstring). Each sequence's last token
    is left out: it predicts no target of that sequence and no later position of its branch attends to it."""
    first = features[group[0]]
    p = prompt_length(first["labels"])
    row = PackedRow(input_ids=list(first["input_ids"][:p]), positions=list(range(p)), groups=[0] * p,
                    segments=[0] * p, mask=_mask_of(first)[:p], sequences=[])
    for segment, index in enumerate(group, start=1):
        ids, labels, mask = features[index]["input_ids"], features[index]["labels"], _mask_of(features[index])
        start = len(row.input_ids)
        predicting, targets = [], []
        for t in range(p, len(ids)):
            if labels[t] != IGNORE_INDEX:
                predicting.append(p - 1 if t == p else start + (t - 1 - p))
                targets.append(int(labels[t]))
        end = len(ids) - 1  # the last token: fed to no one
        row.input_ids.extend(ids[p:end])
        row.positions.extend(range(p, end))
        row.groups.extend([0] * (end - p))
        row.segments.extend([segment] * (end - p))
        row.mask.extend(mask[p:end])
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

    @property
    def in_order(self) -> bool:
        """Whether the logits rows are already the targets' (no position predicts two targets)."""
        return bool(torch.equal(self.gather, torch.arange(len(self.gather))))


def batch_rows(rows: Sequence[PackedRow], pad_id: int, dtype: torch.dtype) -> PackedBatch:
    """Right-pad ``rows`` into one batch with its block mask (module docstring)."""
    width = max(len(row) for row in rows)
    size = (len(rows), width)
    input_ids = torch.full(size, pad_id, dtype=torch.long)
    position_ids = torch.zeros(size, dtype=torch.long)
    groups = torch.full(size, -1, dtype=torch.long)
    segments = torch.full(size, -1, dtype=torch.long)
    key_mask = torch.zeros(size, dtype=torch.bool)
    keep = torch.zeros(size, dtype=torch.bool)
    for b, row in enumerate(rows):
        n = len(row)
        input_ids[b, :n] = torch.as_tensor(row.input_ids)
        position_ids[b, :n] = torch.as_tensor(row.positions)
        groups[b, :n] = torch.as_tensor(row.groups)
        segments[b, :n] = torch.as_tensor(row.segments)
        key_mask[b, :n] = torch.as_tensor(row.mask, dtype=torch.bool)
        for _, predicting, _ in row.sequences:
            keep[b, predicting] = True
    index = torch.arange(width)
    causal = index[None, :] <= index[:, None]  # [q, k]: k ≤ q
    same_group = groups[:, None, :] == groups[:, :, None]  # [B, q, k]
    same_branch = (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])
    allowed = causal & same_group & same_branch & key_mask[:, None, :] & (groups[:, :, None] >= 0)
    allowed |= torch.eye(width, dtype=torch.bool) & (groups < 0)[:, :, None]  # a pad attends to itself
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


def merge_rows(rows: Sequence[PackedRow], most_sequences: int, width: int | None = None) -> list[PackedRow]:
    """Rows of several groups, best fit by decreasing length into rows of at most ``width`` tokens (a longer
    group alone) and ``most_sequences`` sequences: short sequences without a shared prompt (MIA texts) fill
    rows instead of padding (15% of SmolLM2's tokens on 60 TOFU answers at batch 16), while a row's attention
    (quadratic in its length) stays a few percent of its linear layers."""
    width = ROW_TOKENS if width is None else width
    merged: list[PackedRow] = []
    free: list[tuple[int, int]] = []  # (tokens left, index in merged) of the rows that can take more, sorted
    for row in sorted(rows, key=len, reverse=True):
        at = bisect.bisect_left(free, (len(row), -1))  # the fullest row this one fits in (best fit)
        if at < len(free) and len(merged[free[at][1]].sequences) + len(row.sequences) <= most_sequences:
            _, index = free.pop(at)
        else:
            index = len(merged)
            merged.append(PackedRow([], [], [], [], [], []))
        merged[index].extend(row)
        if len(merged[index]) < width and len(merged[index].sequences) < most_sequences:
            bisect.insort(free, (width - len(merged[index]), index))
    return merged


def packed_batches(features: Sequence[dict[str, Sequence[int]]], *, batch_size: int, max_tokens: int | None,
                   pad_id: int, dtype: torch.dtype) -> list[PackedBatch]:
    """Every feature in some batch: groups of one prompt packed into rows, rows sorted by length and batched
    with at most ``batch_size`` sequences (the same logits memory as ``batch_size`` sequences alone) and,
    given ``max_tokens``, at most that many padded tokens per batch (a longer row alone)."""
    from lethe.audit.scoring import batches_by_length

    rows = merge_rows([pack_group(features, group) for group in prompt_groups(features, batch_size)], batch_size)
    batches = batches_by_length([len(row) for row in rows], batch_size, max_tokens,
                             weights=[len(row.sequences) for row in rows])
    return [batch_rows([rows[i] for i in batch], pad_id, dtype) for batch in batches]


def first_token_masked(features: Sequence[dict[str, Sequence[int]]]) -> bool:
    """Whether some feature masks its first token: that position would attend to nothing, a case the packed
    mask does not reproduce; such inputs are scored sequence by sequence."""
    return any(f.get("attention_mask") is not None and len(f["input_ids"]) and not f["attention_mask"][0]
               for f in features)
