"""GUARD: data-attribution weights for the forget samples (Niu, Ma et al. 2025, arXiv 2506.10946).

At θ₀, before unlearning, over the trainable parameters θ (all weights, or only the LoRA adapters):

    ḡ_R = (1/N_R) Σ_r ∇_θ ℓ_r(θ₀)                  mean retain gradient (a sample of the retain set)
    a_i = ⟨∇_θ ℓ_i(θ₀), ḡ_R⟩                        attribution of forget sample i
    w_i = exp(−a_i/τ) / Σ_j exp(−a_j/τ)              (a optionally z-scored first)

Forget samples aligned with the retained knowledge (large a_i) get small weights, so they are unlearned
gently; the objective's forget term becomes Σ_i w_i f_i (in minibatches mean_i N_f w_i f_i).

a_i is the directional derivative of ℓ_i along ḡ_R, so instead of one backward pass per forget sample,
one forward-mode JVP (``torch.func.jvp`` of params ↦ [ℓ_1 … ℓ_B] through ``functional_call``, tangent
ḡ_R) gives every a_i of a batch at once. ḡ_R itself is one backward pass per retain batch (the gradient
of Σ_r ℓ_r, divided by N_R at the end).

Exactness criterion (DESIGN: "match per-sample autograd to 1e-4 relative in float32"): the JVP scores a
must satisfy max_i |a_i − a_i^autograd| ≤ 1e-4 · max_i |a_i^autograd|, i.e. relative to the *scale of the
scores*, not element-wise. Element-wise relative error is meaningless for the scores near 0 (a_i changes
sign across the forget set, and a tiny a_i carries float32 rounding of the whole dot product over every
parameter), while the weights depend on a only through differences measured against its spread.

Default ``normalize="zscore"`` (deliberate; DESIGN makes z-scoring optional and the paper applies the
softmax to the raw scores, which ``normalize="none"`` reproduces): raw a_i are inner products of
gradients, so their scale follows the model size, the trainable parameters (full vs LoRA), the loss
scale and the training state, over orders of magnitude. With raw scores a fixed τ gives near-uniform
weights on one model and one-hot weights on another, and τ must be re-tuned each time. After z-scoring,
w depends only on the ranks and relative gaps of the a_i (invariant to their scale and offset), and τ
has one meaning everywhere: a temperature in standard deviations of a (τ = 1: a sample one standard
deviation above the mean gets e^-1 times the weight of an average one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from lethe.errors import LetheError
from lethe.losses import sequence_nll
from lethe.progress import progress
from lethe.runs import atomic_write_json

NORMALIZATIONS = ("none", "zscore")
MODEL_KEYS = ("input_ids", "attention_mask")


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: batch[k].to(device) for k in MODEL_KEYS if k in batch}


@contextlib.contextmanager
def _attribution_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and an attention kernel that supports forward-mode AD.

    PyTorch's fused SDPA kernels have no forward-AD rule, the math kernel has; other implementations
    (flash-attention, flex) are switched to ``eager`` for the duration."""
    was_training = model.training
    config = getattr(model, "config", None)
    original = getattr(config, "_attn_implementation", None)
    switched = original not in (None, "eager", "sdpa") and hasattr(model, "set_attn_implementation")
    if switched:
        model.set_attn_implementation("eager")
    model.eval()
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        model.train(was_training)
        if switched:
            model.set_attn_implementation(original)


def per_sample_losses(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                      params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """ℓ_i = S_i / n_i [B] for a collated batch (``input_ids``, ``attention_mask``, ``labels``)."""
    device = next(model.parameters()).device
    inputs = _model_inputs(batch, device)
    if params is None:
        logits = model(**inputs, use_cache=False).logits
    else:
        logits = functional_call(model, dict(params), args=(), kwargs={**inputs, "use_cache": False},
                                 strict=False).logits
    nll_sum, n_tokens = sequence_nll(logits, batch["labels"].to(device))
    return nll_sum / n_tokens.clamp(min=1)


def retain_mean_gradient(model: torch.nn.Module,
                         retain_batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """ḡ_R = mean over every retain sample of ∇ℓ_r, per trainable parameter (float32)."""
    params = trainable_parameters(model)
    if not params:
        raise LetheError("GUARD: the model has no trainable parameters")
    names = list(params)
    total = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    count = 0
    with _attribution_mode(model):
        for batch in progress(retain_batches, "GUARD retain gradient", unit="batches"):
            losses = per_sample_losses(model, batch)
            grads = torch.autograd.grad(losses.sum(), [params[n] for n in names], allow_unused=True)
            for name, grad in zip(names, grads, strict=True):
                if grad is not None:
                    total[name] += grad.float()
            count += losses.numel()
    if count == 0:
        raise LetheError("GUARD: no retain samples to average gradients over")
    return {name: g / count for name, g in total.items()}


def attribution_scores(model: torch.nn.Module, forget_batches: Iterable[Mapping[str, torch.Tensor]],
                       grad: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """a_i = ⟨∇ℓ_i(θ), ḡ_R⟩ for every forget sample, in batch order [N_f], one JVP per batch.

    Exact up to float rounding: it equals per-sample autograd to max|Δ| ≤ 1e-4·max|a| in float32 (the
    scale-relative criterion of the module docstring; tests/test_guard.py)."""
    params = trainable_parameters(model)
    missing = [name for name in params if name not in grad]
    if missing:
        raise LetheError(f"GUARD: retain gradient lacks trainable parameter {missing[0]!r}")
    primals = {name: p.detach() for name, p in params.items()}
    tangents = {name: grad[name].to(device=p.device, dtype=p.dtype) for name, p in params.items()}
    scores: list[torch.Tensor] = []
    with _attribution_mode(model):
        for batch in progress(forget_batches, "GUARD attribution", unit="batches"):
            def losses(p: dict[str, torch.Tensor], batch: Mapping[str, torch.Tensor] = batch) -> torch.Tensor:
                return per_sample_losses(model, batch, p)

            _, directional = jvp(losses, (primals,), (tangents,))
            scores.append(directional.detach().float().cpu())
    if not scores:
        return torch.zeros(0)
    return torch.cat(scores)


def guard_weights(scores: torch.Tensor, tau: float = 1.0, normalize: str = "zscore") -> torch.Tensor:
    """w = softmax(−a/τ) over the forget set (Σ w = 1); ``normalize='zscore'`` (the default, see the module
    docstring for why) standardises a first, so τ is in standard deviations of a; ``'none'`` uses the raw
    scores as the GUARD paper does."""
    if tau <= 0:
        raise LetheError(f"GUARD: guard.tau must be > 0, got {tau}")
    if normalize not in NORMALIZATIONS:
        raise LetheError(f"GUARD: guard.normalize must be one of {', '.join(NORMALIZATIONS)}, "
                         f"got {normalize!r}")
    a = scores.detach().double()
    if a.numel() == 0:
        raise LetheError("GUARD: no forget samples to weight")
    if not torch.isfinite(a).all():
        raise LetheError("GUARD: attribution scores are not finite (NaN/inf gradients at θ₀)")
    if normalize == "zscore":
        std = a.std(unbiased=False)
        a = (a - a.mean()) / std if std > 0 else torch.zeros_like(a)
    return torch.softmax(-a / tau, dim=0).float()


def write_attribution(path: str | Path, ids: Sequence[str], scores: torch.Tensor,
                      weights: torch.Tensor) -> Path:
    """``attribution.json``: one ``{"id", "score", "weight"}`` per forget sample, in forget-set order."""
    if not (len(ids) == len(scores) == len(weights)):
        raise LetheError(f"GUARD: {len(ids)} ids, {len(scores)} scores and {len(weights)} weights differ")
    rows = [{"id": str(i), "score": float(s), "weight": float(w)}
            for i, s, w in zip(ids, scores.tolist(), weights.tolist(), strict=True)]
    return atomic_write_json(path, rows)


def read_attribution(path: str | Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(ids, scores, weights) from an ``attribution.json``."""
    import json

    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    ids = [str(r["id"]) for r in rows]
    scores = torch.tensor([float(r["score"]) for r in rows])
    return ids, scores, torch.tensor([float(r["weight"]) for r in rows])
