"""Per-token and per-sample causal-LM losses, shared by training, unlearning and audits.

For logits z ∈ R^{B×T×V} and labels y ∈ Z^{B×T} (−100 = not supervised), the target of position t is
y_{t+1}:  nll_{b,t} = −log softmax(z_{b,t})[y_{b,t+1}].  Per sample: S_b = Σ_t nll_{b,t} (summed NLL) and
n_b = #supervised targets, so ℓ_b = S_b / n_b (mean NLL) and log π(y_b) = −S_b.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted per-token NLL [B, T−1] (0 where unsupervised) and the supervision mask [B, T−1]."""
    targets = labels[:, 1:]
    mask = targets.ne(IGNORE_INDEX)
    logits = logits[:, :-1].float()
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)
    return nll, mask


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL S_b [B] and supervised-token counts n_b [B]."""
    nll, mask = token_nll(logits, labels)
    return nll.sum(dim=1), mask.sum(dim=1)
