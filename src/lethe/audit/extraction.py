"""Verbatim-extraction audit: does the model reproduce a training document's suffix from its prefix?

Protocol (Carlini et al. 2021, "Extracting Training Data from Large Language Models"; Carlini et al. 2023,
"Quantifying Memorization Across Neural Language Models" -- a string is extractable if the model, prompted
with the tokens that precede it in training data, emits it by greedy decoding):

1. Tokenize each document as in training: BOS (if the tokenizer has one) + the text, no other special tokens.
2. Split it: the target is the last ``suffix_len`` tokens; the prefix is every token before the target, or
   only the ``prefix_len`` tokens immediately before it. Documents too short for the split are counted as
   skipped (``n_skipped`` / ``skipped_ids``), never dropped silently.
3. Continue every prefix by greedy decoding for exactly ``suffix_len`` tokens (EOS does not stop it), batched
   with left padding (:mod:`lethe.audit.generation`). Optionally beam search; ``any_of_beams`` then scores the
   best of the returned beams by token match -- an oracle-assisted upper bound, as for an attacker who can
   verify a candidate.
4. Per document: exact match (every target token reproduced), token match rate (fraction of the
   ``suffix_len`` positions that agree), and ROUGE-L F-measure between the decoded target and the decoded
   generation (special tokens skipped) with ``rouge_score`` and ``use_stemmer=False``, as in the goldfish-loss
   paper (Hans et al. 2024, "Be like a Goldfish, Don't Memorize!").
5. Overall: the mean of each per-document score over the documents that were not skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rouge_score import rouge_scorer

from lethe.audit.generation import generate_continuations
from lethe.errors import LetheError


def split_prefix_suffix(ids: list[int], suffix_len: int = 50,
                        prefix_len: int | None = None) -> tuple[list[int], list[int]] | None:
    """(prefix, suffix) of a token sequence, or None when it is too short.

    The suffix is the last ``suffix_len`` tokens; the prefix is everything before it (``prefix_len`` None) or
    the ``prefix_len`` tokens immediately before it. Too short: fewer than ``suffix_len + 1`` tokens, or fewer
    than ``suffix_len + prefix_len``.
    """
    if suffix_len < 1:
        raise LetheError(f"suffix_len must be at least 1, got {suffix_len}")
    if prefix_len is not None and prefix_len < 1:
        raise LetheError(f"prefix_len must be at least 1 (or None for the whole prefix), got {prefix_len}")
    needed = suffix_len + (1 if prefix_len is None else prefix_len)
    if len(ids) < needed:
        return None
    cut = len(ids) - suffix_len
    start = 0 if prefix_len is None else cut - prefix_len
    return list(ids[start:cut]), list(ids[cut:])


def rouge_l(target_text: str, generated_text: str, scorer: rouge_scorer.RougeScorer | None = None) -> float:
    """ROUGE-L F-measure (no stemming); two texts with no ROUGE tokens score 1 if equal, else 0."""
    scorer = scorer or rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    score = scorer.score(target_text, generated_text)["rougeL"].fmeasure
    if score == 0.0 and target_text == generated_text:
        return 1.0
    return float(score)


def token_match_rate(target_ids: Sequence[int], generated_ids: Sequence[int]) -> float:
    """Fraction of target positions that the generation reproduces (missing positions count as misses)."""
    if not target_ids:
        raise LetheError("cannot score an empty target")
    return sum(t == g for t, g in zip(target_ids, generated_ids, strict=False)) / len(target_ids)


@dataclass
class ExtractionItem:
    """One document's extraction attempt and its scores."""

    id: str
    prefix_ids: list[int]
    target_ids: list[int]
    generated_ids: list[int]
    exact_match: bool
    token_match_rate: float
    rougeL: float
    generated_text: str
    target_text: str
    target_tokens: list[str] = field(default_factory=list)  # each target token as text (the report marks
    generated_tokens: list[str] = field(default_factory=list)  # the positions where the two differ)
    prefix_tail: str = ""  # the last PREFIX_TAIL_TOKENS tokens of the prompt, as text

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "exact_match": self.exact_match,
            "token_match_rate": self.token_match_rate,
            "rougeL": self.rougeL,
            "generated_text": self.generated_text,
            "target_text": self.target_text,
            "target_tokens": list(self.target_tokens),
            "generated_tokens": list(self.generated_tokens),
            "prefix_tail": self.prefix_tail,
        }


@dataclass
class ExtractionResult:
    """Per-document items plus the corpus-level summary (means over the documents that were scored)."""

    items: list[ExtractionItem]
    n_documents: int
    n_skipped: int
    skipped_ids: list[str]
    suffix_len: int
    prefix_len: int | None
    exact_match_rate: float
    n_exact: int
    token_match_rate: float
    rougeL: float
    rougeL_all: list[float] = field(default_factory=list)
    num_beams: int = 1
    any_of_beams: bool = False
    n_prefix_truncated: int = 0  # prefixes cut (oldest tokens first) to fit the model's positions
    max_positions: int | None = None

    @property
    def n_scored(self) -> int:
        return len(self.items)

    def summary(self) -> dict[str, Any]:
        """Summary numbers only (no per-item list)."""
        return {
            "n_documents": self.n_documents,
            "n_scored": self.n_scored,
            "n_skipped": self.n_skipped,
            "skipped_ids": list(self.skipped_ids),
            "suffix_len": self.suffix_len,
            "prefix_len": self.prefix_len,
            "decoding": "greedy" if self.num_beams == 1 else f"beam{self.num_beams}",
            "any_of_beams": self.any_of_beams,
            "exact_match_rate": self.exact_match_rate,
            "n_exact": self.n_exact,
            "token_match_rate": self.token_match_rate,
            "rougeL": self.rougeL,
            "n_prefix_truncated": self.n_prefix_truncated,
            "max_positions": self.max_positions,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary, ``rougeL_all`` (for histograms) and ``items`` (one dict per document)."""
        return {**self.summary(), "rougeL_all": list(self.rougeL_all),
                "items": [item.to_dict() for item in self.items]}


PREFIX_TAIL_TOKENS = 24


def token_pieces(tokenizer: Any, ids: Sequence[int], before: int | None = None) -> list[str]:
    """The text of each token of ``ids`` as it reads in context (joined, they give the decoded text).

    A token's text is decode([previous, token]) minus decode([previous]) (the previous token is ``before``
    for the first one), so SentencePiece word-start spaces survive; the token decoded alone where the
    pair's text does not start with the previous token's (a byte split across tokens).
    """
    pieces, previous = [], before
    for token in (int(i) for i in ids):
        if previous is None:
            pieces.append(tokenizer.decode([token]))
        else:
            head, pair = tokenizer.decode([int(previous)]), tokenizer.decode([int(previous), token])
            pieces.append(pair[len(head):] if pair.startswith(head) else tokenizer.decode([token]))
        previous = token
    return pieces


def _pad_id(tokenizer: Any) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def _encode(tokenizer: Any, texts: list[str], add_bos: bool | None) -> list[list[int]]:
    bos = tokenizer.bos_token_id
    if add_bos is True and bos is None:
        raise LetheError("add_bos=True but the tokenizer defines no BOS token")
    prepend = [int(bos)] if bos is not None and add_bos in (None, True) else []
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [prepend + list(ids) for ids in encoded]


def run_extraction(model: Any, tokenizer: Any, documents: list[tuple[str, str]], *, suffix_len: int = 50,
                   prefix_len: int | None = None, batch_size: int = 32, add_bos: bool | None = None,
                   num_beams: int = 1, any_of_beams: bool = False,
                   max_positions: int | None = None) -> ExtractionResult:
    """Greedy (or beam) suffix extraction on ``documents`` ((id, text) pairs); see the module docstring.

    ``max_positions`` (the model's positions): a prefix + suffix longer than that has its prefix cut from
    the left to fit (counted in ``n_prefix_truncated``); a document whose suffix alone does not fit is skipped.
    Without it, generating past the positions fails (GPT-2) or runs past the context (rotary models)."""
    if not documents:
        raise LetheError("no documents to audit for extraction")
    if suffix_len < 1:
        raise LetheError(f"suffix_len must be at least 1, got {suffix_len}")
    if prefix_len is not None and prefix_len < 1:
        raise LetheError(f"prefix_len must be at least 1 (or None for the whole prefix), got {prefix_len}")
    if num_beams < 1:
        raise LetheError(f"num_beams must be at least 1, got {num_beams}")
    for doc_id, text in documents:
        if not isinstance(text, str):
            raise LetheError(f"document {doc_id!r}: text must be a string, got {type(text).__name__}")

    encoded = _encode(tokenizer, [text for _, text in documents], add_bos)
    kept: list[tuple[str, list[int], list[int]]] = []
    skipped_ids: list[str] = []
    truncated = 0
    for (doc_id, _), ids in zip(documents, encoded, strict=True):
        split = split_prefix_suffix(ids, suffix_len, prefix_len)
        if split is not None and max_positions is not None and len(split[0]) + suffix_len > max_positions:
            room = max_positions - suffix_len
            split = (split[0][-room:], split[1]) if room >= 1 else None
            truncated += split is not None
        if split is None:
            skipped_ids.append(doc_id)
        else:
            kept.append((doc_id, *split))
    if not kept:
        raise LetheError(
            f"no document is long enough for a {suffix_len}-token suffix ({len(skipped_ids)} skipped)"
        )

    n_return = num_beams if any_of_beams else 1
    candidates = generate_continuations(
        model, [prefix for _, prefix, _ in kept], suffix_len, pad_id=_pad_id(tokenizer),
        batch_size=batch_size, num_beams=num_beams, num_return_sequences=n_return,
    )

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    items: list[ExtractionItem] = []
    for (doc_id, prefix, target), rows in zip(kept, candidates, strict=True):
        # rows are ordered best-first; max() keeps the first of equally good candidates
        generated = max(rows, key=lambda row: token_match_rate(target, row))
        target_text = tokenizer.decode(target, skip_special_tokens=True)
        generated_text = tokenizer.decode(generated, skip_special_tokens=True)
        items.append(ExtractionItem(
            id=doc_id, prefix_ids=prefix, target_ids=target, generated_ids=list(generated),
            exact_match=list(generated) == target, token_match_rate=token_match_rate(target, generated),
            rougeL=rouge_l(target_text, generated_text, scorer),
            generated_text=generated_text, target_text=target_text,
            target_tokens=token_pieces(tokenizer, target, prefix[-1] if prefix else None),
            generated_tokens=token_pieces(tokenizer, generated, prefix[-1] if prefix else None),
            prefix_tail=tokenizer.decode(prefix[-PREFIX_TAIL_TOKENS:], skip_special_tokens=True),
        ))

    n = len(items)
    n_exact = sum(item.exact_match for item in items)
    rouge_all = [item.rougeL for item in items]
    return ExtractionResult(
        items=items, n_documents=len(documents), n_skipped=len(skipped_ids), skipped_ids=skipped_ids,
        suffix_len=suffix_len, prefix_len=prefix_len, exact_match_rate=n_exact / n, n_exact=n_exact,
        token_match_rate=sum(item.token_match_rate for item in items) / n, rougeL=sum(rouge_all) / n,
        rougeL_all=rouge_all, num_beams=num_beams, any_of_beams=any_of_beams, n_prefix_truncated=truncated,
        max_positions=max_positions,
    )
