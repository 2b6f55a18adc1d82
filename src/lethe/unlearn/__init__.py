"""Unlearning: remove a forget set from a trained causal LM (DESIGN 3.3, 3.4).

- :mod:`lethe.unlearn.objectives`: GA, GD, KL, NPO, SimNPO, IdkPO as per-sample forget terms + retain terms.
- :mod:`lethe.unlearn.guard`: GUARD attribution weights, a_i = ⟨∇ℓ_i, ḡ_R⟩ by forward-mode JVP.
- :mod:`lethe.unlearn.trainer`: :class:`UnlearnTrainer` (HF Trainer) and :func:`run_unlearning`.
"""

from __future__ import annotations

from typing import Any

from lethe._callable import make_callable
from lethe.unlearn.guard import attribution_scores, guard_weights, retain_mean_gradient, write_attribution
from lethe.unlearn.objectives import METHODS, REFUSALS, get_method

__all__ = [
    "METHODS", "REFUSALS", "attribution_scores", "get_method", "guard_weights", "retain_mean_gradient",
    "run_unlearning", "write_attribution",
]


def run_unlearning(*args: Any, **kwargs: Any):
    """See :func:`lethe.unlearn.trainer.run_unlearning` (imported lazily: it pulls in transformers)."""
    from lethe.unlearn.trainer import run_unlearning as _run

    return _run(*args, **kwargs)


make_callable(__name__, "_unlearn")  # lethe.unlearn(config, overrides) stays the API call
