"""Tests for lethe.train.goldfish (goldfish loss masks, Hans et al. 2024)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lethe.config import GoldfishSettings
from lethe.errors import LetheError
from lethe.train.goldfish import (
    STRATEGIES,
    apply_goldfish,
    canonical_id_table,
    goldfish_mask,
    reference_hash_table,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")
M64 = (1 << 64) - 1
HASHES = ("hash", "hash-table")


def rand_ids(shape: tuple[int, ...], seed: int, low: int = 2, high: int = 50_000) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=torch.Generator().manual_seed(seed))


# --- independent re-implementations -------------------------------------------------------------------


def reference_goldfish_loop(input_ids: torch.Tensor, k: int, h: int) -> torch.Tensor:
    """Slow copy of the reference ``hash-table`` loop on shifted targets, lifted back to input positions."""
    table = torch.rand(1_000_003, generator=torch.Generator("cpu").manual_seed(2971215073))
    targets = input_ids[:, 1:]
    dropout = torch.zeros_like(targets, dtype=torch.bool)
    for b in range(targets.shape[0]):
        for s in range(h - 1, targets.shape[1]):
            key = torch.prod(targets[b, s - h + 1 : s + 1]) % 1_000_003
            dropout[b, s] = table[key] < 1 / k
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    mask[:, 1:] = dropout
    return mask


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def python_hash_drop(ids: list[int], k: int, h: int) -> list[bool]:
    """The documented ``hash`` formula with Python big ints (no specials, no canonicalization)."""
    mixed = [_mix((y + 0x9E3779B97F4A7C15) & M64) for y in ids]
    out = [False] * len(ids)
    for t in range(h, len(ids)):
        acc = 0
        for m in mixed[t - h + 1 : t + 1]:
            acc = (acc * 0xC2B2AE3D27D4EB4F + m) & M64
        out[t] = (_mix(acc) >> 11) * k < (1 << 53)  # u < 1/k exactly
    return out


# --- reference compatibility --------------------------------------------------------------------------


def test_reference_table_fingerprint() -> None:
    table = reference_hash_table()
    assert table.dtype == torch.float32 and table.shape == (1_000_003,) and table.device.type == "cpu"
    expected = torch.tensor([0.23368388, 0.44126403, 0.74114770, 0.90927190])
    assert torch.allclose(table[:4], expected, atol=1e-7, rtol=0)
    assert abs((table < 0.25).double().mean().item() - 0.24953) < 1e-5
    assert reference_hash_table() is table  # cached


@pytest.mark.parametrize("k,h", [(4, 13), (3, 5), (2, 1)])
def test_hash_table_matches_reference_loop(k: int, h: int) -> None:
    ids = rand_ids((3, 70), seed=k * 100 + h)
    ids[0, 30] = 0  # a zero in the window collapses the reference key to 0
    ids[1, 10:40:3] = 0
    ids[2] = rand_ids((70,), seed=7, low=1 << 35, high=1 << 40)  # products overflow int64
    ids[2, 50] = 1
    prod = 1
    for v in ids[2, 1 : 1 + h].tolist():
        prod *= v
    assert h == 1 or prod > (1 << 63)
    expected = reference_goldfish_loop(ids, k, h)
    got = goldfish_mask(ids, k=k, h=h, strategy="hash-table")
    assert torch.equal(got, expected)
    assert expected.any() and not expected[:, 1:].all()


def test_hash_matches_documented_formula() -> None:
    ids = rand_ids((4, 50), seed=3)
    ids[1] = rand_ids((50,), seed=4, low=0, high=1 << 62)  # large ids
    ids[2, ::2] = 0
    ids[3, :25] = -rand_ids((25,), seed=5, low=1, high=1 << 40)  # negative ids still hash
    for k, h in [(4, 13), (3, 1), (2, 7), (7, 4)]:
        got = goldfish_mask(ids, k=k, h=h, strategy="hash")
        expected = torch.tensor([python_hash_drop(row, k, h) for row in ids.tolist()])
        assert torch.equal(got, expected), (k, h)
        assert torch.equal(goldfish_mask(ids, k=k, h=h, special_ids=[123]), expected)  # absent special


def test_hash_with_specials_matches_formula_on_remaining_tokens() -> None:
    specials = {0, 1, 2}
    ids = rand_ids((6, 80), seed=6, low=0, high=12)  # a third of the tokens are special
    for k, h in [(2, 1), (3, 4), (4, 13)]:
        got = goldfish_mask(ids, k=k, h=h, special_ids=specials)
        for row, mask in zip(ids.tolist(), got.tolist(), strict=True):
            kept = [i for i, v in enumerate(row) if v not in specials]
            expected = [False] * len(row)
            for i, drop in zip(kept, python_hash_drop([row[i] for i in kept], k, h), strict=True):
                expected[i] = drop
            assert mask == expected, (k, h)


# --- statistics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_drop_rate_is_one_over_k(strategy: str, k: int) -> None:
    batch, length, h = 64, 512, 13
    ids = rand_ids((batch, length), seed=k)
    mask = goldfish_mask(ids, k=k, h=h, strategy=strategy, seed=k)
    if strategy == "static":
        assert mask.sum().item() == batch * len(range(1, length, k))
        return
    first = h if strategy in HASHES else 1
    rate = mask[:, first:].double().mean().item()
    n = batch * (length - first)
    sigma = ((1 / k) * (1 - 1 / k) / n) ** 0.5
    assert abs(rate - 1 / k) < 5 * sigma + 1e-3, rate
    assert not mask[:, :first].any()


def test_static_positions() -> None:
    mask = goldfish_mask(torch.arange(10), k=3, strategy="static")
    assert mask.nonzero().flatten().tolist() == [1, 4, 7]


def test_random_is_seeded() -> None:
    ids = rand_ids((4, 100), seed=0)
    a = goldfish_mask(ids, k=4, strategy="random", seed=5)
    assert torch.equal(a, goldfish_mask(ids, k=4, strategy="random", seed=5))
    assert not torch.equal(a, goldfish_mask(ids, k=4, strategy="random", seed=6))
    zeros = torch.zeros(4, 100, dtype=torch.long)
    assert torch.equal(a, goldfish_mask(zeros, k=4, strategy="random", seed=5))  # independent of the ids


# --- locality: the same passage drops the same tokens --------------------------------------------------


@pytest.mark.parametrize("strategy", HASHES)
def test_same_passage_same_mask_in_any_context(strategy: str) -> None:
    h, length = 13, 200
    passage = rand_ids((60,), seed=11)
    offsets = [0, 5, 37, 100, 140]
    ids = rand_ids((len(offsets), length), seed=12)
    for row, off in enumerate(offsets):
        ids[row, off : off + 60] = passage
    mask = goldfish_mask(ids, k=4, h=h, strategy=strategy)
    windows = torch.stack([mask[row, off + h : off + 60] for row, off in enumerate(offsets)])
    assert windows.any()
    assert (windows == windows[0]).all()
    alone = goldfish_mask(passage, k=4, h=h, strategy=strategy)  # 1-D input, 1-D output
    assert alone.shape == passage.shape
    assert torch.equal(alone[h:], windows[0])
    # the surroundings themselves differ between rows: masks there are not all the same
    assert not torch.equal(mask[1, 70:], mask[2, 70:])


def test_hash_ignores_inserted_specials_and_padding() -> None:
    h, bos, eos, pad = 6, 0, 1, 2
    passage = rand_ids((80,), seed=21, low=10)
    plain = goldfish_mask(passage, k=3, h=h, special_ids=[bos, eos, pad])
    marked = torch.cat([torch.tensor([pad, pad, bos]), passage[:30], torch.tensor([eos, bos]), passage[30:]])
    got = goldfish_mask(marked, k=3, h=h, special_ids={bos, eos, pad})
    real = marked >= 10
    assert torch.equal(got[real], plain)
    assert not got[~real].any()
    # without telling it they are special, the inserted tokens change the windows
    assert not torch.equal(goldfish_mask(marked, k=3, h=h)[real], plain)


def test_hash_is_order_sensitive_unlike_hash_table() -> None:
    h = 13
    ids = rand_ids((300, h + 1), seed=31)
    permuted = ids.clone()
    permuted[:, 1:] = ids[:, 1:].flip(1)  # same window contents, reversed order
    assert torch.equal(goldfish_mask(ids, h=h, strategy="hash-table"),
                       goldfish_mask(permuted, h=h, strategy="hash-table"))
    a = goldfish_mask(ids, h=h, strategy="hash")[:, h]
    b = goldfish_mask(permuted, h=h, strategy="hash")[:, h]
    assert (a != b).sum() > 30


def test_hash_not_collapsed_by_zero_unlike_hash_table() -> None:
    h = 13
    ids = rand_ids((400, 40), seed=41)
    ids[:, 20] = 0
    covered = slice(20, 20 + h)  # every window ending here contains the 0
    table_mask = goldfish_mask(ids, k=4, h=h, strategy="hash-table")[:, covered]
    assert table_mask.all()  # key 0 -> table[0] = 0.2337 < 1/4: always dropped
    rate = goldfish_mask(ids, k=4, h=h, strategy="hash")[:, covered].double().mean().item()
    assert 0.2 < rate < 0.3


def test_id_one_invisible_to_hash_table_but_not_hash() -> None:
    h = 5
    base = rand_ids((500, h), seed=51)  # column 0 is position 0 (never hashed); 1..4 are window tokens
    one = torch.ones(500, 1, dtype=torch.long)
    a = torch.cat([base[:, :3], one, base[:, 3:]], 1)  # window x1 x2 1 x3 x4
    b = torch.cat([base, one], 1)  # window x1 x2 x3 x4 1: same product
    table_a, table_b = (goldfish_mask(x, h=h, strategy="hash-table") for x in (a, b))
    assert torch.equal(table_a, table_b)
    hash_a, hash_b = (goldfish_mask(x, h=h, strategy="hash")[:, h] for x in (a, b))
    assert (hash_a != hash_b).sum() > 50


# --- determinism ----------------------------------------------------------------------------------------


def test_deterministic_across_processes() -> None:
    code = (
        "import torch; from lethe.train.goldfish import goldfish_mask as g\n"
        "ids = torch.randint(0, 1 << 40, (3, 64), generator=torch.Generator().manual_seed(9))\n"
        "print([g(ids, k=3, h=7, strategy=s, special_ids={5, 7}, seed=4).int().tolist()"
        " for s in ('static', 'random', 'hash-table', 'hash')])\n"
    )
    ids = torch.randint(0, 1 << 40, (3, 64), generator=torch.Generator().manual_seed(9))
    local = str([goldfish_mask(ids, k=3, h=7, strategy=s, special_ids={5, 7}, seed=4).int().tolist()
                 for s in ("static", "random", "hash-table", "hash")])
    procs = []
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": SRC}
        cmd = [sys.executable, "-c", code]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        assert out.strip() == local


# --- edge cases -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("length", [0, 1, 2, 12, 13])
def test_short_sequences(strategy: str, length: int) -> None:
    ids = rand_ids((3, length), seed=length)
    mask = goldfish_mask(ids, k=2, h=13, strategy=strategy)
    assert mask.shape == (3, length) and mask.dtype == torch.bool
    one_d = goldfish_mask(ids[0], k=2, h=13, strategy=strategy)
    assert one_d.shape == (length,)
    if strategy in HASHES or length <= 1:
        assert not mask.any() and not one_d.any()
    assert goldfish_mask(torch.zeros(0, length, dtype=torch.long), strategy=strategy).shape == (0, length)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("h", [1, 2, 13])
def test_position_zero_never_dropped(strategy: str, h: int) -> None:
    ids = rand_ids((256, 20), seed=h)
    ids[:, 0] = 0
    mask = goldfish_mask(ids, k=2, h=h, strategy=strategy, seed=h)
    assert not mask[:, 0].any()
    assert mask[:, 1:].any()


def test_special_tokens_never_dropped() -> None:
    ids = rand_ids((16, 300), seed=61, low=0, high=20)  # ids 0..3 are very frequent
    special = [0, 1, 2, 3]
    is_special = ids < 4
    for strategy in STRATEGIES:
        mask = goldfish_mask(ids, k=2, h=3, strategy=strategy, special_ids=special)
        assert not mask[is_special].any(), strategy
        assert mask[~is_special].any(), strategy
    assert goldfish_mask(ids, k=2, h=3, strategy="hash")[is_special].any()  # would be dropped otherwise


def test_prompt_masking_does_not_change_answer_drops() -> None:
    ids = rand_ids((8, 120), seed=71)
    full = ids.clone()
    prompt = ids.clone()
    prompt[:, :40] = -100
    for strategy in STRATEGIES:
        a = apply_goldfish(full, ids, 4, 13, strategy, seed=1)
        b = apply_goldfish(prompt, ids, 4, 13, strategy, seed=1)
        assert torch.equal(a[:, 40:], b[:, 40:]), strategy
        assert (b[:, :40] == -100).all()
        assert (a[:, 40:] == -100).any() and (a[:, 40:] != -100).any()
        assert torch.equal(a == -100, goldfish_mask(ids, 4, 13, strategy, seed=1))
    assert torch.equal(full, ids)  # labels are not modified in place
    with pytest.raises(LetheError, match="labels"):
        apply_goldfish(full[:, :10], ids, 4, 13, "hash")


@pytest.mark.parametrize(
    "kwargs,word",
    [({"k": 1}, "k"), ({"k": 0}, "k"), ({"k": 2.5}, "k"), ({"k": True}, "k"), ({"h": 0}, "h"),
     ({"h": -3}, "h"), ({"strategy": "hash_table"}, "strategy")],
)
def test_bad_parameters_raise(kwargs: dict, word: str) -> None:
    with pytest.raises(LetheError, match=rf"\b{word} must") as info:
        goldfish_mask(torch.arange(20), **kwargs)
    if word == "strategy":
        assert all(name in str(info.value) for name in STRATEGIES)
    assert "\n" not in str(info.value)
    settings = GoldfishSettings(**kwargs)  # the user-facing settings get the same checks, enabled or not
    with pytest.raises(LetheError, match=rf"train\.goldfish\.{word} must") as info:
        settings.validate()
    assert "\n" not in str(info.value)


def test_settings_defaults_validate() -> None:
    settings = GoldfishSettings()
    settings.validate()
    assert (settings.k, settings.h, settings.strategy, settings.seed, settings.normalize) == (4, 13, "hash", 0, False)


def test_bad_input_ids_raise() -> None:
    with pytest.raises(LetheError, match="input_ids"):
        goldfish_mask(torch.rand(3, 4))
    with pytest.raises(LetheError, match="input_ids"):
        goldfish_mask(torch.zeros(2, 3, 4, dtype=torch.long))


# --- normalization --------------------------------------------------------------------------------------


class FakeTokenizer:
    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab

    def __len__(self) -> int:
        return len(self.vocab)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)


def test_canonical_id_table() -> None:
    vocab = ["a", "-", "\u2013", "b", " ", "\u00a0", "\ufb01", "fi", "\ufffd", "\ufffd", "", "\u2014x", "-x",
             "\n", "A", "\u2212", " a"]
    table = canonical_id_table(FakeTokenizer(vocab))
    assert table.dtype == torch.long
    assert table.tolist() == [0, 1, 1, 3, 4, 4, 6, 6, 8, 9, 10, 11, 11, 4, 14, 1, 16]


def test_canonical_ids_make_dash_variants_share_a_mask() -> None:
    vocab = [f"w{i}" for i in range(997)] + ["-", "\u2013", "\u2014"]
    hyphen, en_dash, em_dash = 997, 998, 999
    canonical = canonical_id_table(FakeTokenizer(vocab))
    a = rand_ids((300,), seed=81, low=0, high=997)
    a[::7] = hyphen
    b = a.clone()
    b[::14] = en_dash
    b[7::28] = em_dash
    assert not torch.equal(goldfish_mask(a, h=6), goldfish_mask(b, h=6))
    mask_a, mask_b = (goldfish_mask(x, h=6, canonical_ids=canonical) for x in (a, b))
    assert torch.equal(mask_a, mask_b) and mask_a.any()
    with pytest.raises(LetheError, match="canonical_ids"):
        goldfish_mask(torch.tensor([1, 2, 5000]), canonical_ids=canonical)
