"""Familiarity with a target text (WHP's evaluation, Eldan & Russinovich 2023, arXiv 2310.02238; DESIGN 3.5).

Each probe is a prompt whose continuation only a reader of the target would know, with its ``target``
expression (e.g. "The fox on the doorstep was named" → "Taevykis"). Two scores:

- **completion-based**: the greedy completion of the prompt (``max_new_tokens``) is *familiar* when it
  names a target-specific term absent from the prompt: the probe's target or, given the anchored-term
  dictionary, any of its keys. The paper has GPT-4 grade completions 0–3; this is the offline replacement
  (string matching on known terms), so it misses paraphrased knowledge and counts a name said in passing.
  Score = fraction of familiar completions.
- **probability-based**: p_i = P(target | prompt) = Π_j p(target token j | prompt, earlier target tokens),
  the probability of the probe's target-specific next tokens; score = mean_i p_i. The first target
  token's probability (where knowledge shows first) is reported per probe too.

Probes may carry a ``style`` (the embedded world's: ``question``, a paraphrased question about the saga, and
``saga-worded``, a passage of the saga the term follows there); both scores are then also given per style.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lethe.audit.generation import greedy_continue
from lethe.audit.scoring import score_sequences
from lethe.data.formatting import encode_document
from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX

COMPLETION_NOTE = ("completion familiarity is string matching of target-specific terms (the probe's target and "
                   "the anchored-term keys) absent from the prompt: an offline replacement of the paper's GPT-4 "
                   "judge (grades 0-3), blind to paraphrased knowledge")


def load_probes(path: str | Path) -> list[dict[str, Any]]:
    """Probes from JSON Lines (or a JSON array): each with ``prompt`` and ``target`` (non-empty strings)."""
    path = Path(path)
    if path.is_dir():
        path = path / "familiarity_probes.jsonl"
    if not path.is_file():
        raise LetheError(f"familiarity probes not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise LetheError(f"{path}: invalid JSON ({err.msg}, line {err.lineno})") from None
    return check_probes(rows, str(path))


def check_probes(rows: Any, where: str = "probes") -> list[dict[str, Any]]:
    if not isinstance(rows, list) or not rows:
        raise LetheError(f"{where}: no probes")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k].strip()
                                                for k in ("prompt", "target")):
            raise LetheError(f"{where}: probe {i + 1} needs non-empty string fields 'prompt' and 'target'")
    return [{"id": str(r.get("id", f"probe-{i + 1}")), **r} for i, r in enumerate(rows)]


def _mentions(text: str, term: str) -> bool:
    """``term`` as a whole word (or words) of ``text``, case-insensitive."""
    return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, flags=re.IGNORECASE) is not None


def familiar_terms(completion: str, prompt: str, target: str, terms: Sequence[str] = ()) -> list[str]:
    """The target-specific terms that ``completion`` names and ``prompt`` does not."""
    candidates = dict.fromkeys([target, *terms])
    return [t for t in candidates if _mentions(completion, t) and not _mentions(prompt, t)]


def _features(tokenizer: Any, probes: Sequence[dict[str, Any]], max_length: int) -> list[dict[str, list[int]]]:
    features = []
    for probe in probes:
        prompt = encode_document(tokenizer, probe["prompt"], max_length, add_eos=False)["input_ids"]
        target = tokenizer(" " + probe["target"].strip(), add_special_tokens=False)["input_ids"]
        features.append({"input_ids": prompt + target, "labels": [IGNORE_INDEX] * len(prompt) + target,
                         "prompt_ids": prompt})
    return features


def familiarity(model: Any, tokenizer: Any, probes: Sequence[dict[str, Any]], terms: Sequence[str] = (), *,
                max_new_tokens: int = 12, batch_size: int = 32, max_length: int = 512) -> dict[str, Any]:
    """Both familiarity scores of ``model`` on ``probes`` (``terms``: the anchored-term keys), per probe and
    summarized."""
    probes = check_probes(list(probes))
    features = _features(tokenizer, probes, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores = score_sequences(model, [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features],
                             batch_size=batch_size, pad_id=pad)
    completions = greedy_continue(model, [f["prompt_ids"] for f in features], max_new_tokens, pad_id=pad,
                                  batch_size=batch_size)
    items = []
    for probe, score, tokens in zip(probes, scores, completions, strict=True):
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        named = familiar_terms(text, probe["prompt"], probe["target"], terms)
        items.append({"id": probe["id"], "prompt": probe["prompt"], "target": probe["target"], "completion": text,
                      "familiar": bool(named), "named_terms": named,
                      "probability": math.exp(float(score.logp.sum())),
                      "first_token_probability": math.exp(float(score.logp[0])) if score.n else 0.0,
                      "target_tokens": score.n})
    styles = {}
    for probe, item in zip(probes, items, strict=True):
        styles.setdefault(probe.get("style"), []).append(item)
    by_style = {style: _scores(group) for style, group in styles.items() if style is not None}
    return {"n_probes": len(items), **_scores(items), **({"by_style": by_style} if by_style else {}),
            "max_new_tokens": max_new_tokens, "judge": COMPLETION_NOTE, "items": items}


def _scores(items: Sequence[dict[str, Any]]) -> dict[str, float]:
    n = len(items)
    return {"completion_familiarity": sum(i["familiar"] for i in items) / n,
            "probability_familiarity": sum(i["probability"] for i in items) / n,
            "first_token_probability": sum(i["first_token_probability"] for i in items) / n}


def familiarity_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "items"}
