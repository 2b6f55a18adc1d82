"""One scoring pass: batched, length-bucketed forward passes that keep only per-token statistics.

For every supervised target token x_t of a sequence (labels ≠ −100, shifted as in causal-LM training)
with next-token distribution p = softmax(z_{t−1}):
    log p(x_t),   μ_t = Σ_v p_v log p_v,   σ_t² = Σ_v p_v (log p_v)² − μ_t²,
    argmax_v p_v,  rank_t = #{v : log p_v > log p(x_t)}   (0 = the model's top-1 choice).
Full [T × V] logits never leave the device; every MIA score (loss, zlib, min-k, min-k++) and every TOFU
probability derives from these statistics (DESIGN 3.6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lethe.losses import IGNORE_INDEX


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


def _row_statistics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    logp = logprobs.gather(-1, targets[:, None]).squeeze(-1)
    probs = logprobs.exp()
    mu = (probs * logprobs).sum(-1)
    var = (probs * logprobs.square()).sum(-1) - mu.square()
    rank = (logprobs > logp[:, None]).sum(-1)
    return {"logp": logp, "mu": mu, "var": var, "argmax": logprobs.argmax(-1), "rank": rank}


@torch.inference_mode()
def score_sequences(model: Any, features: Sequence[dict[str, Sequence[int]]], *, batch_size: int = 16,
                    pad_id: int = 0) -> list[TokenScores]:
    """Per-token statistics for each feature (``input_ids``, ``labels``), returned in input order.

    Sequences are sorted by length and batched (right padding), so padding costs little.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    results: list[TokenScores | None] = [None] * len(features)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(features[i]["input_ids"]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, index in enumerate(chunk):
                ids = features[index]["input_ids"]
                input_ids[row, : len(ids)] = torch.as_tensor(ids)
                labels[row, : len(ids)] = torch.as_tensor(features[index]["labels"])
                attention[row, : len(ids)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            for row, index in enumerate(chunk):
                targets = labels[row, 1:].to(device)
                keep = targets.ne(IGNORE_INDEX)
                stats = _row_statistics(logits[row, :-1][keep], targets[keep])
                host = {name: value.cpu() for name, value in stats.items()}
                results[index] = TokenScores(targets=targets[keep].cpu(), **host)
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def corpus_loss(scores: Sequence[TokenScores]) -> float:
    """Token-weighted mean NLL over a corpus (nats per supervised token)."""
    total = sum(s.sum_nll for s in scores)
    count = sum(s.n for s in scores)
    return total / count if count else float("nan")
