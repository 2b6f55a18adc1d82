"""Tests of the Secret Sharer canary-exposure audit: rank estimation, exposure and a memorizing model."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from lethe.audit.canaries import canary_exposure, estimate_rank, exposure_from_rank
from lethe.data.formatting import encode_document
from lethe.errors import LetheError
from lethe.models import build_tiny

PREFIX = "The secret access code of Mira Oltan is"
SECRET = "4 8 1 9 2 7"
CANARY = {"id": "canary-01", "text": f"{PREFIX} {SECRET}", "prefix": PREFIX, "secret": SECRET,
          "format": "digits6", "repetitions": 5}
OTHER = {"id": "canary-02", "text": "The vault combination of Sel Varo is 0 3 3 5 1 6",
         "prefix": "The vault combination of Sel Varo is", "secret": "0 3 3 5 1 6", "format": "digits6",
         "repetitions": 1}
CORPUS = [
    "the old lighthouse keeper counts 3 1 4 1 5 9 2 6 5 3 5 ships every night",
    "her phone number was 0 7 7 0 9 0 0 4 6 1 and her locker code 2 8 4",
    "The secret access code of Mira Oltan is 4 8 1 9 2 7",
    "The vault combination of Sel Varo is 0 3 3 5 1 6",
    "the 12 riders crossed 40 rivers and 365 bridges in 8 days",
]
SIZES = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for the CPU)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = build_tiny(CORPUS * 3, vocab_size=300, seed=0, **SIZES)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def memorized(tiny):
    """A copy of the tiny model trained (plain Adam) to memorize CANARY's text."""
    model, tokenizer = tiny
    trained = copy.deepcopy(model).train()
    f = encode_document(tokenizer, CANARY["text"], 64)
    ids, labels = torch.tensor([f["input_ids"]]), torch.tensor([f["labels"]])
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        trained(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
    return trained.eval()


def secret_nll(model, tokenizer, prefix: str, secret: str) -> float:
    """Summed NLL of the secret's tokens given BOS + prefix, by a plain forward pass."""
    head = [tokenizer.bos_token_id] + tokenizer(prefix, add_special_tokens=False)["input_ids"]
    ids = [tokenizer.bos_token_id] + tokenizer(f"{prefix} {secret}", add_special_tokens=False)["input_ids"]
    assert ids[: len(head)] == head
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    return -sum(float(logprobs[t - 1, ids[t]]) for t in range(len(head), len(ids)))


# ---------------------------------------------------------------------------------------- pure functions


def test_exposure_from_rank():
    assert exposure_from_rank(1, 10**6) == math.log2(10**6)
    assert exposure_from_rank(10**6, 10**6) == 0.0
    assert exposure_from_rank(1000, 10**6) == pytest.approx(math.log2(1000))
    for rank in (0, 0.5, 10**6 + 1):
        with pytest.raises(LetheError):
            exposure_from_rank(rank, 10**6)


def test_estimate_rank_interpolation():
    samples = np.arange(100, dtype=float)  # 0..99
    rank, method = estimate_rank(10.5, samples, 10**6)  # 11 samples strictly lower
    assert method == "interpolation" and rank == pytest.approx(1 + 10**6 * 11 / 100)
    rank, _ = estimate_rank(10.0, samples, 10**6)  # ties are not counted as lower
    assert rank == pytest.approx(1 + 10**6 * 10 / 100)
    rank, method = estimate_rank(1000.0, samples, 10**6)  # worse than every sample: capped at |R|
    assert method == "interpolation" and rank == 10**6
    assert exposure_from_rank(rank, 10**6) == 0.0


def test_estimate_rank_skewnorm_extrapolation():
    samples = stats.skewnorm.rvs(4.0, loc=40.0, scale=6.0, size=500, random_state=np.random.default_rng(0))
    space = 10**6
    rank, method = estimate_rank(15.0, samples, space)
    assert method == "skewnorm"
    exposure = exposure_from_rank(rank, space)
    assert math.log2(500) < exposure <= math.log2(space)
    a, loc, scale = stats.skewnorm.fit(samples)
    assert rank == pytest.approx(max(1.0, 1 + space * stats.skewnorm.cdf(15.0, a, loc, scale)))
    further, _ = estimate_rank(-100.0, samples, space)  # far below every sample: exposure hits its cap
    assert further <= rank and exposure_from_rank(further, space) == pytest.approx(math.log2(space))
    # just below the best sample: never worse than interpolation with one sample lower
    near, method = estimate_rank(samples.min() - 1e-9, samples, space)
    one_below, _ = estimate_rank(samples.min() + 1e-9, samples, space)
    assert method == "skewnorm" and near <= space / 500 < one_below
    assert exposure_from_rank(near, space) >= math.log2(500)


def test_estimate_rank_bad_input():
    with pytest.raises(LetheError):
        estimate_rank(1.0, np.array([]), 100)
    with pytest.raises(LetheError):
        estimate_rank(float("nan"), np.array([1.0]), 100)
    with pytest.raises(LetheError):
        estimate_rank(1.0, np.array([1.0, np.inf]), 100)


# ------------------------------------------------------------------------------------------ end to end


def test_memorized_canary_has_higher_exposure(tiny, memorized):
    model, tokenizer = tiny
    before = canary_exposure(model, tokenizer, [CANARY, OTHER], n_samples=200, seed=0)
    after = canary_exposure(memorized, tokenizer, [CANARY, OTHER], n_samples=200, seed=0)
    json.dumps(after, allow_nan=False)
    row_before, row_after = before["canaries"][0], after["canaries"][0]
    assert set(row_after) >= {"id", "repetitions", "log_perplexity", "rank_estimate", "exposure", "method"}
    assert row_after["id"] == "canary-01" and row_after["repetitions"] == 5
    assert row_after["exposure"] > row_before["exposure"] + 5
    assert row_after["exposure"] > math.log2(200) and row_after["method"] == "skewnorm"
    assert row_after["exposure"] <= math.log2(10**6) + 1e-9
    assert row_after["log_perplexity"] == pytest.approx(secret_nll(memorized, tokenizer, PREFIX, SECRET),
                                                        rel=1e-4)
    assert after["exposure_by_repetitions"] == {"1": after["canaries"][1]["exposure"],
                                                "5": row_after["exposure"]}


def test_exposure_is_seeded_and_order_independent(tiny):
    model, tokenizer = tiny
    a = canary_exposure(model, tokenizer, [CANARY, OTHER], n_samples=50, seed=3)
    b = canary_exposure(model, tokenizer, [OTHER, CANARY], n_samples=50, seed=3)
    assert a["canaries"][0] == b["canaries"][1] and a["canaries"][1] == b["canaries"][0]


def test_small_spaces_are_enumerated_exactly(tiny):
    model, tokenizer = tiny
    colours = ["red", "green", "blue", "yellow", "black"]
    listed = {"id": "c", "prefix": "the door was painted", "secret": "green", "candidates": colours + ["red"]}
    digits = {"id": "d", "prefix": "her locker code", "secret": "28", "format": "digits2"}
    out = canary_exposure(model, tokenizer, [listed, digits], n_samples=100)
    row, drow = out["canaries"]
    assert row["method"] == "exact" and row["space_size"] == 5 and row["n_candidates_scored"] == 4
    nll = {c: secret_nll(model, tokenizer, listed["prefix"], c) for c in colours}
    expected_rank = 1 + sum(nll[c] < nll["green"] for c in colours if c != "green")
    assert row["rank_estimate"] == expected_rank
    assert row["exposure"] == pytest.approx(math.log2(5) - math.log2(expected_rank))
    assert drow["method"] == "exact" and drow["space_size"] == 100 and 1 <= drow["rank_estimate"] <= 100
    mean = (row["exposure"] + drow["exposure"]) / 2
    assert out["exposure_by_repetitions"] == {"unknown": pytest.approx(mean)}


@pytest.mark.parametrize("bad, match", [
    ({"format": "letters6"}, "unknown canary format"),
    ({"format": "digits"}, "unknown canary format"),
    ({"secret": "4 8 1 9 2"}, "not in format"),
    ({"secret": "48192x"}, "not in format"),
    ({"secret": "4 8 1 9 2 7", "format": "digits5"}, "not in format"),
    ({"candidates": ["1 1 1 1 1 1"]}, "not in its 'candidates'"),
    ({"prefix": ""}, "prefix"),
    ({"repetitions": -1}, "repetitions"),
])
def test_bad_canaries_raise(tiny, bad, match):
    model, tokenizer = tiny
    with pytest.raises(LetheError, match=match):
        canary_exposure(model, tokenizer, [OTHER, {**CANARY, **bad}], n_samples=20)


def test_empty_and_bad_arguments_raise(tiny):
    model, tokenizer = tiny
    with pytest.raises(LetheError, match="no canaries"):
        canary_exposure(model, tokenizer, [])
    with pytest.raises(LetheError, match="n_samples"):
        canary_exposure(model, tokenizer, [CANARY], n_samples=0)
    contiguous = {**CANARY, "secret": "481927"}  # contiguous digits are a valid digits6 secret too
    out = canary_exposure(model, tokenizer, [contiguous], n_samples=20)
    assert out["canaries"][0]["space_size"] == 10**6
