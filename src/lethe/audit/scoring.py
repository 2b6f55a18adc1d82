"""One scoring pass: batched, length-bucketed forward passes that keep only per-token statistics.

For every supervised target token x_t of a sequence (labels ≠ −100, shifted as in causal-LM training)
with next-token distribution p = softmax(z_{t−1}):
    log p(x_t),   μ_t = Σ_v p_v log p_v,   σ_t² = Σ_v p_v (log p_v)² − μ_t²,
    argmax_v p_v,  rank_t = #{v : log p_v > log p(x_t)}   (0 = the model's top-1 choice).
Full [T × V] logits never leave the device; every MIA score (loss, zlib, min-k, min-k++) and every TOFU
probability derives from these statistics (DESIGN 3.6).

A feature may carry its own ``attention_mask`` (0/1 per token): open-unlearning's collator masks every token
equal to the pad id, EOS included when pad = EOS (:mod:`lethe.audit.tofu_protocol`). Every sequence is
numbered 0..T−1 whatever the mask, as a plain ``model(**batch)`` call does: here by not passing position
ids, in packed rows (``pack=True``, :mod:`lethe.audit.packing`) by passing each sequence's own 0..T−1.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.progress import progress


@dataclass
class TokenScores:
    """Per-token statistics of one sequence's supervised targets (all 1-D, same length)."""

    targets: torch.Tensor
    logp: torch.Tensor
    mu: torch.Tensor
    var: torch.Tensor
    argmax: torch.Tensor
    rank: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.targets.numel())

    @property
    def sum_nll(self) -> float:
        return float(-self.logp.sum())

    @property
    def mean_nll(self) -> float:
        return float(-self.logp.mean()) if self.n else float("nan")


# bytes of float32 logits per statistics step: a [chunk, V] temporary that stays in a core's L2 cache makes
# the eight passes over it one memory pass (SmolLM2, 2,000 x 49k logits, 2 threads: 0.59 s at 512 rows a
# step, 0.15 s at 1 MiB = 5 rows)
STATS_CHUNK_BYTES = 1 << 20


def _row_statistics(logits: torch.Tensor, targets: torch.Tensor, full: bool = True) -> dict[str, torch.Tensor]:
    """The statistics of [N, V] next-token logits at N target positions (in place on one temporary).
    ``full=False``: only log p(x_t) and the argmax (μ, σ² NaN and rank −1: three of the eight passes over
    the [N, V] temporary, for callers that need probabilities, not the MIA statistics)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    logp = logprobs.gather(-1, targets[:, None]).squeeze(-1)
    if not full:
        unused = torch.full_like(logp, float("nan"))
        return {"logp": logp, "mu": unused, "var": unused.clone(), "argmax": logprobs.max(-1).indices,
                "rank": torch.full_like(targets, -1)}
    plogp = logprobs.exp().mul_(logprobs)  # p_v log p_v
    mu = plogp.sum(-1)
    var = plogp.mul_(logprobs).sum(-1) - mu.square()  # Σ p_v (log p_v)² − μ²
    # on a CPU a max reduction with indices is ~1.7x faster than argmax, an int32 sum than count_nonzero
    argmax = logprobs.max(-1).indices
    rank = (logprobs > logp[:, None]).sum(-1, dtype=torch.int32).long()
    return {"logp": logp, "mu": mu, "var": var, "argmax": argmax, "rank": rank}


def _statistics(logits: torch.Tensor, targets: torch.Tensor, full: bool = True) -> dict[str, torch.Tensor]:
    """:func:`_row_statistics` over chunks of :data:`STATS_CHUNK_BYTES` (one memory pass per chunk instead
    of one per operation over the whole batch: about 4x faster on a CPU)."""
    chunk = max(1, STATS_CHUNK_BYTES // (4 * max(1, logits.shape[-1])))
    parts = [_row_statistics(logits[i : i + chunk], targets[i : i + chunk], full)
             for i in range(0, len(targets), chunk)] or [_row_statistics(logits, targets, full)]  # none
    return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}


def concat_scores(parts: Sequence[TokenScores]) -> TokenScores:
    """The statistics of several pieces of one sequence (e.g. its sliding windows), in order."""
    names = ("targets", "logp", "mu", "var", "argmax", "rank")
    return TokenScores(**{name: torch.cat([getattr(p, name) for p in parts]) for name in names})


def batches_by_length(lengths: Sequence[int], batch_size: int, max_tokens: int | None,
                   weights: Sequence[int] | None = None) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``batch_size`` rows (or, given ``weights``, of
    at most that total weight: a packed row counts its sequences) and, given ``max_tokens``, at most that
    many padded tokens (a longer sequence alone)."""
    weights = weights if weights is not None else [1] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and sum(weights[j] for j in batches[-1]) + weights[i] <= batch_size and (
                max_tokens is None or lengths[i] * (len(batches[-1]) + 1) <= max_tokens):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _check_positions(model: Any, features: Sequence[dict[str, Sequence[int]]]) -> None:
    from lethe.models import model_positions

    positions = model_positions(model)
    longest = max((len(f["input_ids"]) for f in features), default=0)
    if positions is not None and longest > positions:
        raise LetheError(f"a sequence of {longest} tokens exceeds the model's {positions} positions (shorten the "
                         "inputs, e.g. a smaller max length, or use a model with more positions)")


def takes_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs; not most wrappers)."""
    try:
        return "logits_to_keep" in inspect.signature(type(model).forward).parameters
    except (TypeError, ValueError):
        return False


def _logits_at(model: Any, positions: torch.Tensor, **inputs: Any) -> torch.Tensor:
    """[N, V] logits at the N ``positions`` (a [B, T] boolean mask), in row-major order. A model that takes a
    boolean ``logits_to_keep`` mask (transformers' causal LMs) projects only those hidden states onto the
    vocabulary: the LM head (a 49k × 576 matmul per position for SmolLM2) and its [B, T, V] float32 output
    are skipped for prompts and padding. Other models (wrappers, PEFT): full logits, then the same positions."""
    if takes_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=positions).logits
        if logits.dim() == 2 and logits.shape[0] == int(positions.sum()):
            return logits
    return model(**inputs).logits[positions]


def _per_sequence(targets: torch.Tensor, stats: dict[str, torch.Tensor], counts: list[int]) -> list[TokenScores]:
    """A batch's statistics (its sequences' targets one after another) cut into one TokenScores each."""
    parts = {name: value.split(counts) for name, value in
             {"targets": targets.cpu(), **{n: v.cpu() for n, v in stats.items()}}.items()}
    return [TokenScores(**{name: pieces[row] for name, pieces in parts.items()}) for row in range(len(counts))]


def _score_padded(model: Any, features: Sequence[dict[str, Sequence[int]]], batch_size: int, pad_id: int,
                  max_tokens: int | None, mia_statistics: bool) -> list[TokenScores]:
    """:func:`score_sequences` over right-padded, length-sorted batches of whole sequences."""
    device = next(model.parameters()).device
    results: list[TokenScores | None] = [None] * len(features)
    for chunk in progress(batches_by_length([len(f["input_ids"]) for f in features], batch_size, max_tokens),
                          "scoring", total=len(features), unit="sequences", size=len):
        width = max(len(features[i]["input_ids"]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, index in enumerate(chunk):
            ids = features[index]["input_ids"]
            input_ids[row, : len(ids)] = torch.as_tensor(ids)
            labels[row, : len(ids)] = torch.as_tensor(features[index]["labels"])
            mask = features[index].get("attention_mask")
            attention[row, : len(ids)] = 1 if mask is None else torch.as_tensor(mask)
        targets = labels[:, 1:]
        keep = targets.ne(IGNORE_INDEX)  # every row's supervised positions, taken in one gather
        positions = torch.zeros_like(input_ids, dtype=torch.bool)
        positions[:, :-1] = keep  # the position before each target
        logits = _logits_at(model, positions.to(device), input_ids=input_ids.to(device),
                            attention_mask=attention.to(device))
        stats = _statistics(logits, targets[keep].to(device), mia_statistics)
        for index, scores in zip(chunk, _per_sequence(targets[keep], stats, keep.sum(1).tolist()), strict=True):
            results[index] = scores
    return results  # type: ignore[return-value]


def _score_packed(model: Any, features: Sequence[dict[str, Sequence[int]]], batch_size: int, pad_id: int,
                  max_tokens: int | None, mia_statistics: bool) -> list[TokenScores]:
    """:func:`score_sequences` over packed rows (:mod:`lethe.audit.packing`)."""
    from lethe.audit.packing import packed_batches

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    results: list[TokenScores | None] = [None] * len(features)
    batches = packed_batches(features, batch_size=batch_size, max_tokens=max_tokens, pad_id=pad_id,
                             dtype=dtype if dtype.is_floating_point else torch.float32)
    for batch in progress(batches, "scoring", total=len(features), unit="sequences", size=lambda b: len(b.sequences)):
        logits = _logits_at(model, batch.keep.to(device), input_ids=batch.input_ids.to(device),
                            attention_mask=batch.attention_mask.to(device),
                            position_ids=batch.position_ids.to(device), use_cache=False)
        if not batch.in_order:  # a shared prompt's last position predicts the first target of several sequences
            logits = logits[batch.gather.to(device)]
        stats = _statistics(logits, batch.targets.to(device), mia_statistics)
        counts = [count for _, count in batch.sequences]
        for (index, _), scores in zip(batch.sequences, _per_sequence(batch.targets, stats, counts), strict=True):
            results[index] = scores
    return results  # type: ignore[return-value]


@torch.inference_mode()
def score_sequences(model: Any, features: Sequence[dict[str, Sequence[int]]], *, batch_size: int = 16,
                    pad_id: int = 0, max_tokens: int | None = None, mia_statistics: bool = True,
                    pack: bool = False) -> list[TokenScores]:
    """Per-token statistics for each feature (``input_ids``, ``labels``, optional ``attention_mask``),
    returned in input order.

    Sequences are sorted by length and batched (right padding), so padding costs little; ``max_tokens``
    also caps the padded tokens of a batch (the [B, T, V] logits of long sequences). A sequence longer than
    the model's positions is an error: GPT-2 would fail with an IndexError, a rotary model would score it
    silently past its context (long texts go through :func:`lethe.audit.mia_protocol.text_windows`).
    ``mia_statistics=False`` skips μ, σ² and the rank (NaN / −1 in the result): log-probabilities and argmax
    are the same numbers, at less than half the statistics' cost on a large vocabulary.
    ``pack=True``: sequences are packed into rows without padding, the sequences with one prompt (the tokens
    before their first target) behind one copy of it (:mod:`lethe.audit.packing`), where the model allows it;
    ``batch_size`` then still bounds the sequences (so the logits) per forward pass. A sequence longer than
    :data:`lethe.audit.packing.MAX_ROW_TOKENS` is scored padded: its causal mask needs no [L, L] tensor.
    """
    from lethe.audit.packing import MAX_ROW_TOKENS, first_token_masked, supports_packing

    _check_positions(model, features)
    packs = pack and supports_packing(model) and not first_token_masked(features)
    packed = [i for i, f in enumerate(features) if packs and len(f["input_ids"]) <= MAX_ROW_TOKENS]
    padded = sorted(set(range(len(features))) - set(packed))
    was_training = model.training
    model.eval()
    results: list[TokenScores | None] = [None] * len(features)
    try:
        for indices, score in ((packed, _score_packed), (padded, _score_padded)):
            if indices:
                scored = score(model, [features[i] for i in indices], batch_size, pad_id, max_tokens, mia_statistics)
                for i, scores in zip(indices, scored, strict=True):
                    results[i] = scores
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def corpus_loss(scores: Sequence[TokenScores]) -> float:
    """Token-weighted mean NLL over a corpus (nats per supervised token)."""
    total = sum(s.sum_nll for s in scores)
    count = sum(s.n for s in scores)
    return total / count if count else float("nan")
