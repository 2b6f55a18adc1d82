"""MAUVE: how close the distribution of generated text is to that of human text (Pillutla et al., NeurIPS 2021,
"MAUVE: Measuring the Gap Between Neural Text and Human Text using Divergence Frontiers", arXiv 2102.01454).

Given feature vectors (one per text) of the true texts, P, and of the generated texts, Q:

1. **Quantize** P and Q jointly: stack the features, L2-normalise each row, fit a PCA on the stack and keep the
   first d components that explain ``explained_variance`` (0.9) of the variance, then k-means the reduced stack
   into m clusters (m = ``num_buckets``; ``"auto"`` = max(2, round(min(|P|, |Q|) / 10))). The cluster
   histograms are the multinomials p̂, q̂ ∈ Δ_m: p̂_j = |{x ∈ P : c(x) = j}| / |P|, likewise q̂.
2. **Divergence frontier**: for mixtures R_λ = λ p̂ + (1 − λ) q̂, λ on a grid of ``discretization`` points in
   (0, 1) (1e-6 … 1 − 1e-6), the points

       ( exp(−c · KL(q̂ ‖ R_λ)),  exp(−c · KL(p̂ ‖ R_λ)) ),   c = ``scaling_factor`` = 5,

   with KL(a ‖ b) = Σ_j a_j log(a_j / b_j) over a_j > 0, plus the end points (1, 0) (λ → 0, R = q̂) and
   (0, 1) (λ → 1, R = p̂).
3. **MAUVE** = the area under that curve, 1/2·(∫ y dx + ∫ x dy) with the trapezoid rule over the points sorted
   by x (resp. y), as the authors' ``mauve-text`` package computes it. Identical histograms give 1; histograms
   with disjoint supports give ≈ 0 (both KL terms are large for every λ).

The quantization uses scikit-learn (``KMeans`` with ``n_init`` restarts keeping the lowest inertia, the
authors' ``nredo``) where ``mauve-text`` uses faiss: the cluster assignments of overlapping data can differ,
so scores agree to a few hundredths, not bit for bit (``tests/test_mauve.py`` measures the agreement when
``mauve-text`` is installed). The divergence curve and the area are the same computation as the authors'.
Featurization is the caller's (:func:`features_from_model` for a causal LM's own hidden states, or the MiniLM
sentence embeddings of :mod:`lethe.audit.similarity`); the paper uses GPT-2 large's last-token hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import auc
from sklearn.preprocessing import normalize

from lethe.errors import LetheError

SCALING_FACTOR = 5.0
MODEL_FEATURIZER = "last-layer hidden state of {name} at each text's last token (as MAUVE's GPT-2 features)"


@dataclass
class MauveResult:
    mauve: float
    num_buckets: int
    pca_dims: int
    p_hist: list[float]
    q_hist: list[float]
    frontier: list[tuple[float, float]]  # (exp(-c KL(q||R)), exp(-c KL(p||R))), λ from 0 to 1

    def to_dict(self) -> dict[str, Any]:
        return {"mauve": self.mauve, "num_buckets": self.num_buckets, "pca_dims": self.pca_dims,
                "p_hist": self.p_hist, "q_hist": self.q_hist, "frontier": [list(p) for p in self.frontier]}


def kl_multinomial(a: np.ndarray, b: np.ndarray) -> float:
    """KL(a ‖ b) of two histograms; inf where b has no mass but a has."""
    if np.any((a > 0) & (b == 0)):
        return float("inf")
    keep = (a > 0) & (b > 0)
    return float(np.sum(a[keep] * np.log(a[keep] / b[keep])))


def divergence_frontier(p: np.ndarray, q: np.ndarray, *, discretization: int = 25,
                        scaling_factor: float = SCALING_FACTOR) -> np.ndarray:
    """[discretization + 2, 2]: (exp(−c KL(q‖R_λ)), exp(−c KL(p‖R_λ))), end points included."""
    weights = np.linspace(1e-6, 1 - 1e-6, discretization)
    kls = [[0.0, np.inf]]
    for lam in weights:
        r = lam * p + (1 - lam) * q
        kls.append([kl_multinomial(q, r), kl_multinomial(p, r)])
    kls.append([np.inf, 0.0])
    return np.exp(-scaling_factor * np.asarray(kls))


def mauve_from_histograms(p: np.ndarray, q: np.ndarray, *, discretization: int = 25,
                          scaling_factor: float = SCALING_FACTOR) -> tuple[float, np.ndarray]:
    """MAUVE of two histograms and its frontier: the area under the divergence curve (module docstring)."""
    curve = divergence_frontier(np.asarray(p, float), np.asarray(q, float), discretization=discretization,
                                scaling_factor=scaling_factor)
    x, y = curve.T
    by_x, by_y = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
    return float(0.5 * (auc(x[by_x], y[by_x]) + auc(y[by_y], x[by_y]))), curve


def quantize(p_features: np.ndarray, q_features: np.ndarray, num_buckets: int, *, explained_variance: float = 0.9,
             n_init: int = 5, max_iter: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Joint PCA + k-means quantization: (p̂, q̂, PCA dimensions kept)."""
    from sklearn.cluster import KMeans

    data = normalize(np.vstack([q_features, p_features]).astype(np.float64), norm="l2", axis=1)
    pca = PCA(n_components=None, random_state=seed + 1).fit(data)
    dims = int(np.argmax(np.cumsum(pca.explained_variance_ratio_) >= explained_variance)) + 1
    reduced = pca.transform(data)[:, :dims].astype(np.float32)
    kmeans = KMeans(n_clusters=num_buckets, n_init=n_init, max_iter=max_iter, random_state=seed + 2)
    labels = kmeans.fit_predict(reduced)
    q_labels, p_labels = labels[: len(q_features)], labels[len(q_features):]
    p_hist = np.bincount(p_labels, minlength=num_buckets) / len(p_labels)
    q_hist = np.bincount(q_labels, minlength=num_buckets) / len(q_labels)
    return p_hist, q_hist, dims


def compute_mauve(p_features: Any, q_features: Any, *, num_buckets: int | str = "auto",
                  explained_variance: float = 0.9, n_init: int = 5, max_iter: int = 500,
                  discretization: int = 25, scaling_factor: float = SCALING_FACTOR, seed: int = 0) -> MauveResult:
    """MAUVE between true-text features ``p_features`` [n, d] and generated-text features ``q_features`` [m, d]."""
    p, q = np.asarray(p_features, dtype=np.float64), np.asarray(q_features, dtype=np.float64)
    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1]:
        raise LetheError(f"MAUVE needs two [n, d] feature arrays of the same width, got {p.shape} and {q.shape}")
    if min(len(p), len(q)) < 2:
        raise LetheError(f"MAUVE needs at least 2 texts on each side, got {len(p)} and {len(q)}")
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise LetheError("MAUVE features must be finite")
    if not 0 < explained_variance < 1:
        raise LetheError(f"MAUVE explained_variance must be in (0, 1), got {explained_variance}")
    if num_buckets == "auto":
        buckets = max(2, int(round(min(len(p), len(q)) / 10)))
    elif isinstance(num_buckets, int) and 2 <= num_buckets <= len(p) + len(q):
        buckets = num_buckets
    else:
        raise LetheError(f"MAUVE num_buckets must be 'auto' or an integer in [2, {len(p) + len(q)}], "
                         f"got {num_buckets!r}")
    p_hist, q_hist, dims = quantize(p, q, buckets, explained_variance=explained_variance, n_init=n_init,
                                    max_iter=max_iter, seed=seed)
    score, curve = mauve_from_histograms(p_hist, q_hist, discretization=discretization,
                                         scaling_factor=scaling_factor)
    return MauveResult(mauve=score, num_buckets=buckets, pca_dims=dims, p_hist=p_hist.tolist(),
                       q_hist=q_hist.tolist(), frontier=[(float(a), float(b)) for a, b in curve])


def features_from_model(model: Any, token_lists: list[list[int]], *, pad_id: int, batch_size: int = 32) -> np.ndarray:
    """[n, hidden] features of token sequences: a causal LM's final hidden state (after the last norm) at each
    sequence's last token, the featurization of the MAUVE paper (there with GPT-2 large). Right-padded batches."""
    import torch

    if not token_lists or any(len(ids) == 0 for ids in token_lists):
        raise LetheError("MAUVE features need at least one non-empty token sequence")
    device = next(model.parameters()).device
    rows: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(token_lists), batch_size):
                chunk = token_lists[start:start + batch_size]
                width = max(len(ids) for ids in chunk)
                input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, ids in enumerate(chunk):
                    input_ids[i, : len(ids)] = torch.as_tensor(ids)
                    mask[i, : len(ids)] = 1
                out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
                last = torch.as_tensor([len(ids) - 1 for ids in chunk], device=device)
                hidden = out.hidden_states[-1][torch.arange(len(chunk), device=device), last]
                rows.append(hidden.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(rows)
