"""The input protocol of a membership-inference audit: which tokens a text becomes and which are scored.

Both protocols score plain text as the tokenizer encodes it by default (``tokenizer(text)``: its own special
tokens, e.g. BOS for LLaMA, none for GPT-2 or SmolLM2), never truncate, and score a text longer than the
window by MIMIR's sliding window (``mimir/models.py::get_probabilities``): with window W (default the
model's maximum positions) and stride S = W // 2, for i = 0, S, 2S, … the tokens [max(i + S − W, 0),
min(i + S, n)) are one forward pass of which the targets [i, min(i + S, n)) are scored; every token but the
first is scored exactly once, with up to W − S tokens of context. Windows that start at 0 are one pass.

- ``mimir``: exactly that, no appended EOS, and MIMIR's score rules (:mod:`lethe.audit.mia`): min-k over
  int(k·n) tokens (NaN when 0, the sample is dropped from that attack only), min-k++ z-scores without a
  variance floor, gradnorm with p = ∞ read MIMIR's way, TPR at FPR < x (strict), NaN dropped per attack.
- ``lethe`` (default): the same tokens, except that a leading BOS that is a chat-turn marker (its text
  appears literally in the chat template, e.g. SmolLM2's ``<|im_start|>``) is dropped, and EOS is appended
  only when asked (``add_eos``); min-k over max(1, ⌊k·n⌋), a 1e-6 variance floor, gradnorm p = 2 read as
  "smaller gradient = member", TPR at FPR ≤ x, and one set of samples for every attack.
"""

from __future__ import annotations

from typing import Any

from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX

PROTOCOLS = ("lethe", "mimir")
DEFAULT_PROTOCOL = "lethe"
DEFAULT_POSITIONS = 1024  # MIMIR's window when the config names no maximum


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise LetheError(f"unknown MIA protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    return protocol


def model_positions(model: Any) -> int:
    """The model's maximum positions (``max_position_embeddings`` / ``n_positions``), else 1024, as MIMIR."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_POSITIONS


def is_chat_marker(tokenizer: Any, token_id: int) -> bool:
    """True when the token's text appears literally in the tokenizer's chat template (a turn marker)."""
    template = getattr(tokenizer, "chat_template", None)
    text = tokenizer.convert_ids_to_tokens(int(token_id))
    return isinstance(template, str) and isinstance(text, str) and bool(text) and text in template


def encode_text(tokenizer: Any, text: str, protocol: str, add_eos: bool = False) -> list[int]:
    """The token ids a text is scored as under ``protocol`` (see the module docstring)."""
    ids = list(tokenizer(text)["input_ids"])
    if protocol == "mimir":
        return ids
    bos = tokenizer.bos_token_id
    if ids and bos is not None and ids[0] == bos and is_chat_marker(tokenizer, bos):
        ids = ids[1:]
    eos = tokenizer.eos_token_id
    if add_eos and eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids


def windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of MIMIR's sliding windows over n tokens; the leading windows
    that all begin at 0 are merged into one (the same tokens with the same context and positions)."""
    if window < 2 or not 1 <= stride <= window:
        raise LetheError(f"sliding window needs window >= 2 and 1 <= stride <= window, got {window}, {stride}")
    spans = [(max(i + stride - window, 0), min(i + stride, n), max(i, 1)) for i in range(0, n, stride)]
    head = [s for s in spans if s[0] == 0]
    rest = [s for s in spans if s[0] > 0]
    return ([(0, head[-1][1], 1)] if head else []) + rest


def window_features(ids: list[int], window: int, stride: int) -> list[dict[str, list[int]]]:
    """One feature (``input_ids``, ``labels``) per sliding window of ``ids``; at least one (maybe unscored)."""
    if len(ids) <= window:
        return [{"input_ids": ids, "labels": [IGNORE_INDEX] + ids[1:] if ids else []}]
    return [{"input_ids": ids[begin:end], "labels": [IGNORE_INDEX] * (first - begin) + ids[first:end]}
            for begin, end, first in windows(len(ids), window, stride)]
