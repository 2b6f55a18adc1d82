"""MAUVE (lethe.audit.mauve): the divergence frontier and its area, the quantization, agreement with mauve-text."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from lethe.audit.mauve import compute_mauve, divergence_frontier, features_from_model, mauve_from_histograms
from lethe.errors import LetheError


def _blobs(centres: np.ndarray, n: int, rng: np.random.Generator, scale: float = 0.05) -> np.ndarray:
    picks = rng.integers(len(centres), size=n)
    return centres[picks] + scale * rng.standard_normal((n, centres.shape[1]))


def test_identical_histograms_give_one_and_disjoint_ones_zero():
    p = np.array([0.5, 0.3, 0.2, 0.0])
    score, curve = mauve_from_histograms(p, p)
    assert score == pytest.approx(1.0, abs=1e-6)
    assert curve.shape == (27, 2)
    disjoint, _ = mauve_from_histograms(np.array([0.5, 0.5, 0, 0]), np.array([0, 0, 0.5, 0.5]))
    assert disjoint < 0.02
    # a partial overlap lies strictly between, and more overlap scores higher
    half, _ = mauve_from_histograms(np.array([0.5, 0.5, 0, 0]), np.array([0, 0.5, 0.5, 0]))
    most, _ = mauve_from_histograms(np.array([0.5, 0.5, 0, 0]), np.array([0.4, 0.5, 0.1, 0]))
    assert disjoint < half < most < 1


def test_frontier_follows_the_equations():
    p, q = np.array([0.7, 0.3]), np.array([0.2, 0.8])
    curve = divergence_frontier(p, q, discretization=3)
    lam = 0.5  # the middle grid point of linspace(1e-6, 1 - 1e-6, 3)
    r = lam * p + (1 - lam) * q
    expected = (np.exp(-5 * np.sum(q * np.log(q / r))), np.exp(-5 * np.sum(p * np.log(p / r))))
    assert curve[0].tolist() == [1.0, 0.0] and curve[-1].tolist() == [0.0, 1.0]
    assert curve[2] == pytest.approx(expected)


def test_compute_mauve_on_features():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, 16)) * 3
    p = _blobs(centres, 400, rng)
    same = compute_mauve(p, _blobs(centres, 400, rng))
    assert same.mauve > 0.95 and same.num_buckets == 40
    other = compute_mauve(p, _blobs(rng.standard_normal((8, 16)) * 3 + 20, 400, rng))
    assert other.mauve < 0.05
    with pytest.raises(LetheError, match="same width"):
        compute_mauve(p, p[:, :3])
    with pytest.raises(LetheError, match="num_buckets"):
        compute_mauve(p, p, num_buckets=1)


def test_agrees_with_mauve_text():
    mauve = pytest.importorskip("mauve")
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((6, 12)) * 3
    p = _blobs(centres[:5], 200, rng)
    for q_centres in (centres[:5], centres[1:], centres[3:]):  # full, most and little overlap
        q = _blobs(q_centres, 200, rng)
        ours = compute_mauve(p, q).mauve
        theirs = mauve.compute_mauve(p_features=p, q_features=q, verbose=False).mauve
        assert ours == pytest.approx(theirs, abs=0.03)
    hist_p, hist_q = np.array([0.1, 0.4, 0.5, 0.0]), np.array([0.3, 0.3, 0.2, 0.2])
    reference = importlib.import_module("mauve.compute_mauve")  # the module (the package exports the function)
    expected = reference.get_divergence_curve_for_multinomials(hist_p, hist_q, np.linspace(1e-6, 1 - 1e-6, 25), 5)
    assert divergence_frontier(hist_p, hist_q) == pytest.approx(expected)


def test_features_from_model_take_the_last_real_token(tiny_model):
    model = tiny_model
    seqs = [[5, 6, 7, 8], [9, 10]]
    batched = features_from_model(model, seqs, pad_id=0)
    alone = features_from_model(model, seqs[1:], pad_id=0)
    assert batched.shape[0] == 2
    assert batched[1] == pytest.approx(alone[0], abs=1e-5)
