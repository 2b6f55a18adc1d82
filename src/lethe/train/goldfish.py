r"""Goldfish loss: keep a pseudo-random 1/k of the tokens out of the loss so no passage is learned verbatim.

Hans et al., "Be like a Goldfish, Don't Memorize! Mitigating Memorization in Generative LLMs",
NeurIPS 2024, arXiv:2406.10209 (reference code: github.com/ahans30/goldfish-loss, ``lit_gpt/utils.py``).

For a sequence x_0 … x_{T−1} the standard causal-LM loss is the mean NLL of every target x_t (t ≥ 1). The
goldfish loss keeps only the targets whose goldfish mask G_t is 1:

    L(θ) = −1/|G| · Σ_{t : G_t = 1} log p_θ(x_t | x_{<t}),       G_t = 1 − drop_t,   |G| = Σ_t G_t.

drop_t is a deterministic function of the *local context* of t: for the hash strategies

    drop_t = [t ≥ h] · [u(x_{t−h+1}, …, x_t) < 1/k],

where u maps a window of h token ids to a pseudo-uniform value in [0, 1). Because u sees nothing but the
window, the same passage drops the same tokens wherever it occurs (other documents, other batch rows,
other epochs, other processes), so the model never sees some of its tokens as targets and cannot
reproduce it verbatim; about 1/k of all targets are dropped.

:func:`goldfish_mask` returns ``drop`` as a bool tensor (``True`` = label of token t, i.e. the target of the
logits at t−1, is excluded; position 0 is never ``True``); :func:`apply_goldfish` sets those labels to −100.

Strategies (``STRATEGIES``):

* ``static``     drop t = 1, k+1, 2k+1, … (the reference's ``targets[:, 0::k]`` on shifted targets).
* ``random``     drop each t ≥ 1 with probability 1/k, ``torch.Generator("cpu").manual_seed(seed)``.
* ``hash-table`` bit-compatible with the reference: u = T[(Π_{i=t−h+1}^{t} x_i mod 2^64, as signed int64)
                 mod 1 000 003], T = ``torch.rand(1_000_003)`` seeded with 2971215073 on the CPU
                 (:func:`reference_hash_table`). Flaws: the product ignores order, any id 0 makes the key 0
                 and id 1 is invisible.
* ``hash``       (default) an ordered, avalanche-mixed 64-bit hash. All arithmetic is mod 2^64, ``mix`` is
                 the splitmix64 finalizer and γ = 0x9E3779B97F4A7C15:

                     m_i = mix(y_i + γ)                        (y = ``canonical_ids[x]`` if given, else x)
                     H_t = Σ_{j=0}^{h−1} m_{t−h+1+j} · P^{h−1−j},  P = 0xC2B2AE3D27D4EB4F (odd)
                     u_t = (mix(H_t) >> 11) / 2^53              (top 53 bits; drop iff u_t < 1/k exactly)

                 Special tokens (``special_ids``) are never dropped and are *removed* from the window: the
                 window of a token is the h non-special tokens ending at it, and a token is eligible once at
                 least h non-special tokens precede it in its row. So inserting BOS/EOS/chat markers or
                 padding (left or right) into a passage does not change which of its tokens are dropped.

``special_ids`` also protects special tokens under ``static``/``random``/``hash-table`` (their other
decisions are unchanged); ``canonical_ids`` is used by ``hash`` only. The user-facing settings (k, h,
strategy, seed, normalize) and their validation live in :class:`lethe.config.GoldfishSettings`; the
training collator (:mod:`lethe.train.collator`) seeds ``random`` per sequence from its content.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import torch

from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX

STRATEGIES = ("static", "random", "hash-table", "hash")

REFERENCE_TABLE_SIZE = 1_000_003
REFERENCE_TABLE_SEED = 2971215073

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GAMMA = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)
_POLY = _signed(0xC2B2AE3D27D4EB4F)
_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"))


def _check_params(k: Any, h: Any, strategy: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise LetheError(f"goldfish: k must be an integer >= 2, got {k!r}")
    if isinstance(h, bool) or not isinstance(h, int) or h < 1:
        raise LetheError(f"goldfish: h must be an integer >= 1, got {h!r}")
    if strategy not in STRATEGIES:
        raise LetheError(f"goldfish: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


@lru_cache(maxsize=1)
def reference_hash_table() -> torch.Tensor:
    """The reference's lookup table: ``torch.rand(1_000_003)`` (float32, CPU) seeded with 2971215073."""
    generator = torch.Generator("cpu").manual_seed(REFERENCE_TABLE_SEED)
    return torch.rand(REFERENCE_TABLE_SIZE, generator=generator)


@lru_cache(maxsize=8)
def _table_on(device: torch.device) -> torch.Tensor:
    return reference_hash_table().to(device)


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64 finalizer on int64 tensors (wrap-around multiplication)."""
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    return z ^ _srl(z, 31)


def _as_ids(input_ids: Any) -> torch.Tensor:
    ids = input_ids if isinstance(input_ids, torch.Tensor) else torch.as_tensor(input_ids)
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise LetheError(f"goldfish: input_ids must be an integer tensor, got dtype {ids.dtype}")
    if ids.dim() not in (1, 2):
        raise LetheError(f"goldfish: input_ids must have shape [T] or [B, T], got {list(ids.shape)}")
    return ids.long()


def _special_mask(ids: torch.Tensor, special_ids: Iterable[int] | None) -> torch.Tensor | None:
    if special_ids is None:
        return None
    specials = sorted({int(i) for i in special_ids})
    if not specials:
        return None
    return torch.isin(ids, torch.tensor(specials, dtype=torch.long, device=ids.device))


def _hash_table_drop(ids: torch.Tensor, k: int, h: int) -> torch.Tensor:
    """Reference ``hash-table``: window product mod 1_000_003 indexes the seeded table."""
    batch, length = ids.shape
    drop = torch.zeros_like(ids, dtype=torch.bool)
    n = length - h  # windows ending at t = h … T−1 start at 1 … T−h
    if n <= 0:
        return drop
    prod = ids[:, 1 : 1 + n].clone()
    for j in range(1, h):
        prod *= ids[:, 1 + j : 1 + j + n]  # int64 wrap-around, same ring as torch.prod
    keys = torch.remainder(prod, REFERENCE_TABLE_SIZE)
    drop[:, h:] = _table_on(ids.device)[keys] < 1 / k
    return drop


def _hash_drop(ids: torch.Tensor, k: int, h: int, special: torch.Tensor | None) -> torch.Tensor:
    """``hash``: ordered polynomial hash of splitmix-mixed ids over the h non-special tokens ending at t."""
    batch, length = ids.shape
    mixed = _mix64(ids + _GAMMA)
    if special is None:
        compact, keep, index = mixed, None, None
    else:
        keep = ~special
        index = torch.cumsum(keep, dim=1) - 1  # position of each kept token among the kept tokens
        slot = torch.where(keep, index, torch.full_like(index, length))  # specials go to a dummy column
        compact = torch.zeros((batch, length + 1), dtype=torch.long, device=ids.device)
        compact.scatter_(1, slot, mixed)
    n = length - h
    if n <= 0:
        return torch.zeros_like(ids, dtype=torch.bool)
    acc = compact[:, 1 : 1 + n].clone()
    for j in range(1, h):
        acc = acc * _POLY + compact[:, 1 + j : 1 + j + n]
    top53 = _srl(_mix64(acc), 11)
    threshold = -(-(1 << 53) // k)  # u < 1/k  <=>  top53 < 2^53/k  <=>  top53 < ceil(2^53/k)
    drop_compact = top53 < threshold  # [B, n]: windows ending at compact index h … T−1
    if keep is None:
        drop = torch.zeros_like(ids, dtype=torch.bool)
        drop[:, h:] = drop_compact
        return drop
    eligible = keep & (index >= h)
    picked = torch.gather(drop_compact, 1, (index - h).clamp(0, n - 1))
    return eligible & picked


def goldfish_mask(
    input_ids: torch.Tensor,
    k: int = 4,
    h: int = 13,
    strategy: str = "hash",
    special_ids: Iterable[int] | None = None,
    *,
    seed: int = 0,
    canonical_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bool mask, same shape/device as ``input_ids`` ([T] or [B, T]): True = drop the label of token t."""
    _check_params(k, h, strategy)
    ids = _as_ids(input_ids)
    squeeze = ids.dim() == 1
    if squeeze:
        ids = ids.unsqueeze(0)
    special = _special_mask(ids, special_ids)
    batch, length = ids.shape
    if strategy == "static":
        drop = torch.zeros_like(ids, dtype=torch.bool)
        drop[:, 1::k] = True
    elif strategy == "random":
        generator = torch.Generator("cpu").manual_seed(seed)
        drop = (torch.rand((batch, length), generator=generator) < 1 / k).to(ids.device)
        drop[:, :1] = False
    elif strategy == "hash-table":
        drop = _hash_table_drop(ids, k, h)
    else:
        if canonical_ids is not None:
            ids = _canonicalize(ids, canonical_ids)
        drop = _hash_drop(ids, k, h, special)
    if special is not None:
        drop &= ~special
    return drop.squeeze(0) if squeeze else drop


def _canonicalize(ids: torch.Tensor, canonical_ids: torch.Tensor) -> torch.Tensor:
    if (not isinstance(canonical_ids, torch.Tensor) or canonical_ids.dim() != 1
            or canonical_ids.is_floating_point() or canonical_ids.dtype == torch.bool):
        raise LetheError("goldfish: canonical_ids must be a 1-D integer tensor (vocab id -> canonical id)")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= canonical_ids.numel()):
        raise LetheError(
            f"goldfish: input_ids outside canonical_ids range [0, {canonical_ids.numel()}): "
            f"min {int(ids.min())}, max {int(ids.max())}"
        )
    return canonical_ids.to(device=ids.device, dtype=torch.long)[ids]


def apply_goldfish(
    labels: torch.Tensor,
    input_ids: torch.Tensor,
    k: int = 4,
    h: int = 13,
    strategy: str = "hash",
    special_ids: Iterable[int] | None = None,
    *,
    seed: int = 0,
    canonical_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Copy of ``labels`` with goldfish-dropped positions set to −100 (mask computed from ``input_ids``)."""
    ids_shape = list(torch.as_tensor(input_ids).shape)
    if not isinstance(labels, torch.Tensor) or list(labels.shape) != ids_shape:
        got = list(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise LetheError(f"goldfish: labels must be a tensor shaped like input_ids {ids_shape}, got {got}")
    mask = goldfish_mask(input_ids, k, h, strategy, special_ids, seed=seed, canonical_ids=canonical_ids)
    return labels.masked_fill(mask.to(labels.device), IGNORE_INDEX)


def normalize_token_text(text: str) -> str:
    """NFKC, every whitespace character → ' ', dash variants (‐‑‒–—―−) → '-'; nothing stripped."""
    text = unicodedata.normalize("NFKC", text).translate(_DASHES)
    return "".join(" " if ch.isspace() else ch for ch in text)


def canonical_id_table(tokenizer: Any) -> torch.Tensor:
    """LongTensor [len(tokenizer)]: id → smallest id whose decoded, normalized text is equal.

    Uses ``tokenizer.decode([i])``. Tokens that decode to '' or contain U+FFFD (partial UTF-8 byte tokens,
    which would otherwise all collapse into one) keep their own id.
    """
    if not hasattr(tokenizer, "decode") or not hasattr(tokenizer, "__len__"):
        raise LetheError(f"goldfish: canonical_id_table needs a tokenizer with decode() and len(), "
                         f"got {type(tokenizer).__name__}")
    first: dict[str, int] = {}
    table = list(range(len(tokenizer)))
    for i in table:
        text = normalize_token_text(tokenizer.decode([i]))
        if not text or "\ufffd" in text:
            continue
        table[i] = first.setdefault(text, i)
    return torch.tensor(table, dtype=torch.long)
