"""Anchored-term discovery for WHP (Eldan & Russinovich 2023, arXiv 2310.02238, DESIGN 3.5).

The terms a reinforced model v_r (the baseline trained further on the target) predicts much better than the
baseline v_b are the target's idiosyncratic expressions. For every token x_t of the target text,

    gap_t = v_r(x_t | x_<t) − v_b(x_t | x_<t)          (the logit of the true token, both on the original text)

A candidate (a word, or two or three consecutive words) scores the mean gap of its tokens, averaged over
its occurrences; candidates seen at least ``min_count`` times are ranked by score and written as JSON for a
person to curate: ``{"candidates": [{term, score, count}, ...], "dictionary": {term: []}}`` — fill each
list with generic alternatives (an empty list is refused when the dictionary is loaded).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lethe.errors import LetheError
from lethe.runs import atomic_write_json

WORD = re.compile(r"[\w'-]+")


@torch.inference_mode()
def token_gaps(baseline: Any, reinforced: Any, tokenizer: Any, text: str,
               block: int = 512) -> tuple[list[float], list[tuple[int, int]]]:
    """gap_t of every token of ``text`` (the first token of each block gets 0) and its character offsets."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    device = next(baseline.parameters()).device
    gaps = [0.0] * len(ids)
    for start in range(0, len(ids), block):
        chunk = torch.as_tensor(ids[start:start + block], device=device)[None]
        if chunk.shape[1] < 2:
            continue
        v_b = baseline(input_ids=chunk).logits[0, :-1].float()
        v_r = reinforced(input_ids=chunk).logits[0, :-1].float()
        target = chunk[0, 1:, None]
        gap = (v_r.gather(-1, target) - v_b.gather(-1, target)).squeeze(-1).tolist()
        gaps[start + 1:start + 1 + len(gap)] = gap
    return gaps, [tuple(o) for o in offsets]


def discover_terms(baseline: Any, reinforced: Any, tokenizer: Any, texts: Sequence[str], *, top_k: int = 50,
                   min_count: int = 2, max_words: int = 3, block: int = 512) -> list[dict[str, Any]]:
    """The ``top_k`` candidates (word n-grams, n ≤ ``max_words``) by mean reinforced-vs-baseline logit gap."""
    if not texts or not any(t.strip() for t in texts):
        raise LetheError("term discovery: empty target text")
    scores: dict[str, list[float]] = defaultdict(list)
    for text in texts:
        gaps, offsets = token_gaps(baseline, reinforced, tokenizer, text, block)
        words = [(m.start(), m.end()) for m in WORD.finditer(text)]
        word_gaps = []
        for start, end in words:
            inside = [g for g, (a, b) in zip(gaps, offsets, strict=True) if b > start and a < end]
            word_gaps.append(inside)
        for i in range(len(words)):
            for n in range(1, max_words + 1):
                if i + n > len(words):
                    break
                span_text = text[words[i][0]:words[i + n - 1][1]]
                if "\n" in span_text:
                    break
                values = [g for w in word_gaps[i:i + n] for g in w]
                if values:
                    scores[span_text].append(sum(values) / len(values))
    ranked = [{"term": term, "score": sum(v) / len(v), "count": len(v)} for term, v in scores.items()
              if len(v) >= min_count]
    ranked.sort(key=lambda c: (-c["score"], c["term"]))
    return ranked[:top_k]


def write_candidates(path: str | Path, candidates: list[dict[str, Any]]) -> Path:
    """Candidates and an editable dictionary skeleton ({term: []}: fill in generic alternatives)."""
    return atomic_write_json(path, {"candidates": candidates,
                                    "dictionary": {c["term"]: [] for c in candidates},
                                    "how_to": "keep the target-specific terms of 'dictionary', give each a list of "
                                              "generic alternatives, and pass the object as whp.terms"})
