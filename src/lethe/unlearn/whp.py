"""Who's Harry Potter (WHP): generic labels from a reinforced model and an anchored-term dictionary.

Eldan & Russinovich, "Who's Harry Potter? Approximate Unlearning in LLMs", 2023, arXiv 2310.02238
(DESIGN 3.5). With v_b the baseline's logits and v_r those of the *reinforced* model (the baseline trained
further on the target text), the generic prediction at a position is

    v_generic = v_b − α · ReLU(v_r − v_b)                       (α = 5; the authors also used 2.5 and 10)

where v_b is computed on the *translated* text (every anchored term replaced by a generic alternative) and
mapped back to the original positions, and v_r on the original text. The generic **label** is the hard
argmax of v_generic; the baseline is then fine-tuned on (original text → generic labels).

Translation of one block (512 tokens of the tokenized target text), greedily, longest key first:

- every key is matched in each of its in-context tokenizations (with / without a leading space, after a
  newline, and every form it takes in the target text itself);
- a matched key is replaced by the tokens of the block's alternative for it (one per key and block, drawn
  from a seeded generator); the key's last token maps to the alternative's last token (its output predicts
  what follows the term); positions inside a key get no label (−100);
- from a key's second occurrence in the block on, the token before it gets no label either;
- the first token of every alternative used joins a forbidden list: at every later position v_b of those
  tokens is set to that position's mean logit (the model must not learn the generic name as a new fact).

Keys that split into other keys ("A B" when "A" and "B" are keys) are dropped: their parts are matched.

The inference-time variant (MUSE's WHP baseline, α = 1 there) uses v_b − α·ReLU(v_r − v_b) on the *same*
input as a model: :class:`WHPLogitsModel` scores and generates greedily like any model Lethe audits.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX

DEFAULT_ALPHA = 5.0
DEFAULT_BLOCK = 512


# --- the anchored-term dictionary ---------------------------------------------------------------------


def check_terms(terms: Any, where: str = "dictionary") -> dict[str, list[str]]:
    """A dictionary {expression: [generic alternative, ...]}; LetheError on any other shape."""
    if not isinstance(terms, dict) or not terms:
        raise LetheError(f"{where}: must be a non-empty JSON object {{term: [alternatives, ...]}}, "
                         f"got {type(terms).__name__}")
    for key, alternatives in terms.items():
        if not isinstance(key, str) or not key.strip():
            raise LetheError(f"{where}: every term must be a non-empty string, got {key!r}")
        if not isinstance(alternatives, list) or not all(isinstance(a, str) for a in alternatives):
            raise LetheError(f"{where}: term {key!r} must map to a list of strings, got {alternatives!r}")
        if not alternatives or not all(a.strip() for a in alternatives):
            raise LetheError(f"{where}: term {key!r} has an empty alternative list or an empty alternative")
    return {key: list(alternatives) for key, alternatives in terms.items()}


def load_terms(path: str | Path) -> dict[str, list[str]]:
    path = Path(path)
    if not path.is_file():
        raise LetheError(f"anchored-term dictionary not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LetheError(f"{path}: not valid JSON ({str(err).splitlines()[0]})") from None
    return check_terms(data, str(path))


def split_keys(terms: dict[str, list[str]]) -> list[str]:
    """Keys whose words split into two or more other keys ("A B" when "A" and "B" exist)."""
    keys = set(terms)

    def splits(words: list[str], parts: int) -> bool:
        if not words:
            return parts >= 2
        return any(" ".join(words[:n]) in keys and splits(words[n:], parts + 1)
                   for n in range(1, len(words) + 1) if not (parts == 0 and n == len(words)))

    return [key for key in terms if splits(key.split(), 0)]


def prune_terms(terms: dict[str, list[str]]) -> tuple[dict[str, list[str]], list[str]]:
    """(the dictionary without the keys that split into other keys, the dropped keys)."""
    dropped = split_keys(terms)
    return {k: v for k, v in terms.items() if k not in dropped}, dropped


def expand_first_words(terms: dict[str, list[str]], texts: Sequence[str]) -> dict[str, list[str]]:
    """The dictionary plus the first word of every multi-word key that the target also uses on its own
    (a character's given name: "Zeidus" of "Zeidus Drykask"), with the first words of the alternatives that
    are capitalized ("Tom Baker" -> "Tom"; "the boy" stays whole). Beyond the paper: what a person curating the
    dictionary would add (``lethe whp discover`` ranks such words high); keys already present are kept."""
    out = dict(terms)
    for key, alternatives in terms.items():
        words = key.split()
        first = words[0]
        if len(words) < 2 or not first[:1].isupper() or first in out:
            continue
        rests = [k.split(maxsplit=1)[1] for k in terms if k.split()[0] == first and " " in k]
        after = "".join(f"(?! {re.escape(rest)})" for rest in rests)  # not the start of any key
        alone = re.compile(rf"(?<!\w){re.escape(first)}(?!\w){after}")
        if any(alone.search(text) for text in texts):
            out[first] = list(dict.fromkeys(a.split()[0] if a[:1].isupper() else a for a in alternatives))
    return out


def missing_terms(terms: dict[str, list[str]], texts: Sequence[str]) -> list[str]:
    """Keys that occur nowhere in the target texts (they cannot be translated: a warning, not an error)."""
    return [key for key in terms if not any(key in text for text in texts)]


# --- token forms and translation -----------------------------------------------------------------------


@dataclass(frozen=True)
class Form:
    """One tokenization of a key: its token ids and the text prefix (``""`` or ``" "``) it was built with."""

    ids: tuple[int, ...]
    prefix: str


@dataclass
class TermTable:
    """Every key's token forms (longest first for matching) and each alternative's tokens per prefix."""

    keys: list[str]
    alternatives: list[list[str]]
    forms: dict[int, list[tuple[Form, int]]]  # first token id -> [(form, key index)], longest first
    alt_ids: dict[tuple[int, int, str], list[int]]  # (key, alternative, prefix) -> token ids
    first_tokens: dict[tuple[int, int], set[int]]  # (key, alternative) -> its first token in every prefix

    @property
    def term_tokens(self) -> list[int]:
        """The first token of every form of every key: the target-specific next tokens."""
        return sorted(self.forms)


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _context_forms(tokenizer: Any, key: str, texts: Sequence[str]) -> set[Form]:
    """The key's tokenizations: alone, after a space, after a newline, and as it occurs in ``texts``. A form's
    prefix is " " when its first token carries the space (so its alternative is tokenized after one too)."""
    candidates = {tuple(_tokens(tokenizer, key)), tuple(_tokens(tokenizer, " " + key))}
    newline = _tokens(tokenizer, "\n")
    after = _tokens(tokenizer, "\n" + key)
    if after[: len(newline)] == newline:
        candidates.add(tuple(after[len(newline):]))
    for text in texts:  # in context: the tokens whose characters are exactly the key (with its space)
        start = text.find(key)
        if start < 0:
            continue
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = encoded["offset_mapping"]
        while start >= 0:
            end = start + len(key)
            lo = start - 1 if start > 0 and text[start - 1] == " " else start
            covered = [i for i, (a, b) in enumerate(spans) if a >= lo and b <= end and b > a]
            if covered and covered == list(range(covered[0], covered[-1] + 1)) and spans[covered[0]][0] in (
                    lo, start) and spans[covered[-1]][1] == end:
                candidates.add(tuple(encoded["input_ids"][covered[0]:covered[-1] + 1]))
            start = text.find(key, start + 1)
    return {Form(ids, " " if tokenizer.decode([ids[0]]).startswith(" ") else "") for ids in candidates if ids}


def build_term_table(tokenizer: Any, terms: dict[str, list[str]], texts: Sequence[str] = ()) -> TermTable:
    """Token forms of every key of ``terms`` (already pruned) and the tokens of every alternative."""
    keys = list(terms)
    table = TermTable(keys=keys, alternatives=[list(terms[k]) for k in keys], forms={}, alt_ids={},
                      first_tokens={})
    for k, key in enumerate(keys):
        for form in _context_forms(tokenizer, key, texts):
            table.forms.setdefault(form.ids[0], []).append((form, k))
        for a, alternative in enumerate(terms[key]):
            firsts: set[int] = set()
            for prefix in ("", " "):
                ids = _tokens(tokenizer, prefix + alternative)
                table.alt_ids[(k, a, prefix)] = ids
                firsts.add(ids[0])
            table.first_tokens[(k, a)] = firsts
    for candidates in table.forms.values():
        candidates.sort(key=lambda item: (-len(item[0].ids), item[1]))
    return table


@dataclass
class Translation:
    """One translated block: ``ids`` (translated tokens), ``position_map[t]`` = the translated position
    whose output stands for original position t, ``labeled[t]`` = whether t gets a label at all, and
    ``forbidden[t]`` = tokens whose v_b is set to the mean logit at t."""

    ids: list[int]
    position_map: list[int]
    labeled: list[bool]
    forbidden: list[list[int]] = field(default_factory=list)
    matches: list[tuple[int, int, int]] = field(default_factory=list)  # (original start, length, key index)


def block_choices(table: TermTable, seed: int, block_index: int) -> list[int]:
    """The alternative of each key for one block (seeded: the same seed and block give the same choice)."""
    rng = random.Random(f"lethe-whp/{seed}/{block_index}")
    return [rng.randrange(len(alternatives)) for alternatives in table.alternatives]


def translate_block(ids: Sequence[int], table: TermTable, choices: Sequence[int],
                    forbid_terms: bool = False) -> Translation:
    """Translate one block of token ids (greedy longest match), with the position map and the no-label rules.

    ``forbid_terms`` (beyond the paper): at the position right before each key occurrence, the first tokens of
    every key join that position's forbidden list, so its generic label is never a target-specific term (a
    baseline that memorized the target predicts the term even on the translated text)."""
    ids = list(ids)
    out: list[int] = []
    position_map = [0] * len(ids)
    labeled = [True] * len(ids)
    forbidden_at: list[tuple[int, set[int]]] = []  # (translated position of the alternative's first token, ids)
    seen: set[int] = set()
    matches: list[tuple[int, int, int]] = []
    t = 0
    while t < len(ids):
        match = None
        for form, k in table.forms.get(ids[t], ()):
            n = len(form.ids)
            if tuple(ids[t:t + n]) == form.ids:
                match = (form, k)
                break
        if match is None:
            position_map[t] = len(out)
            out.append(ids[t])
            t += 1
            continue
        form, k = match
        n = len(form.ids)
        alternative = table.alt_ids[(k, choices[k], form.prefix)]
        if k in seen and t > 0:
            labeled[t - 1] = False  # a repeated key: the token before it gets no label
        seen.add(k)
        forbidden_at.append((len(out), table.first_tokens[(k, choices[k])]))
        out.extend(alternative)
        for j in range(n - 1):
            labeled[t + j] = False  # inside the key
            position_map[t + j] = len(out) - 1
        position_map[t + n - 1] = len(out) - 1  # the key's last token -> the alternative's last token
        matches.append((t, n, k))
        t += n
    forbidden: list[list[int]] = []
    before_key = {start - 1 for start, _, _ in matches} if forbid_terms else set()
    for t in range(len(ids)):
        p = position_map[t]
        tokens = {tok for start, toks in forbidden_at if start <= p for tok in toks}
        if t in before_key:
            tokens.update(table.term_tokens)
        forbidden.append(sorted(tokens))
    return Translation(ids=out, position_map=position_map, labeled=labeled, forbidden=forbidden, matches=matches)


def make_blocks(features: Sequence[Sequence[int]], block: int) -> list[list[int]]:
    """Non-overlapping chunks of at most ``block`` tokens of each tokenized document (in order)."""
    if block < 2:
        raise LetheError(f"whp.block must be >= 2, got {block}")
    return [list(ids[i:i + block]) for ids in features for i in range(0, len(ids), block) if len(ids[i:i + block]) > 1]


# --- generic labels ------------------------------------------------------------------------------------


def _check_alpha(alpha: float) -> None:
    if not alpha > 0:
        raise LetheError(f"whp.alpha must be > 0, got {alpha}")


SPACES = ("logits", "logprobs")


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise LetheError(f"whp.space must be one of {', '.join(SPACES)}, got {space!r}")


def in_space(v: torch.Tensor, space: str) -> torch.Tensor:
    """The vectors the formula compares: raw logits (the paper), or log-probabilities (log-softmax: invariant
    to a per-position shift of the logits, which further training on the target adds to the reinforced model)."""
    return v.float().log_softmax(-1) if space == "logprobs" else v.float()


def generic_logits(v_b: torch.Tensor, v_r: torch.Tensor, alpha: float) -> torch.Tensor:
    """v_b − α·ReLU(v_r − v_b)."""
    return v_b - alpha * torch.relu(v_r - v_b)


def _padded(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def generic_labels(baseline: Any, reinforced: Any, blocks: Sequence[Sequence[int]],
                   translations: Sequence[Translation], alpha: float = DEFAULT_ALPHA, *, batch_size: int = 8,
                   pad_id: int = 0, space: str = "logits") -> list[list[int]]:
    """Generic labels of each block, in the causal-LM layout of ``labels`` (labels[t + 1] is the target of
    the logits at t; −100 where there is none): label(t) = argmax(v_b' − α·ReLU(v_r − v_b')) with v_b' the
    baseline's logits on the translated block at position_map[t], forbidden tokens set to the row mean,
    and v_r the reinforced model's logits on the original block at t.

    Blocks are processed up to ``batch_size`` at a time, in batches of similar lengths (:func:`length_batches`:
    at most ``MAX_PADDING`` of a batch's positions are padding, which a single CPU thread would only pay for);
    only the labeled rows of each batch are kept, so the [T × V] logits of the whole corpus are never in
    memory at once. ``space="logprobs"`` compares log-softmax vectors instead of raw logits (:func:`in_space`)."""
    _check_alpha(alpha)
    _check_space(space)
    if len(blocks) != len(translations):
        raise LetheError(f"{len(blocks)} blocks but {len(translations)} translations")
    device = next(baseline.parameters()).device
    out: list[list[int] | None] = [None] * len(blocks)
    lengths = [max(len(b), len(tr.ids)) for b, tr in zip(blocks, translations, strict=True)]
    was = (baseline.training, reinforced.training)
    baseline.eval()
    reinforced.eval()
    try:
        for chunk in length_batches(lengths, batch_size):
            original, mask_o = _padded([blocks[i] for i in chunk], pad_id, device)
            translated, mask_t = _padded([translations[i].ids for i in chunk], pad_id, device)
            v_r_all = reinforced(input_ids=original, attention_mask=mask_o).logits
            v_b_all = baseline(input_ids=translated, attention_mask=mask_t).logits
            for row, i in enumerate(chunk):
                out[i] = _block_labels(v_b_all[row], v_r_all[row], blocks[i], translations[i], alpha, space)
            del v_r_all, v_b_all
    finally:
        baseline.train(was[0])
        reinforced.train(was[1])
    return out  # type: ignore[return-value]


MAX_PADDING = 0.05


def length_batches(lengths: Sequence[int], batch_size: int, max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Indices of ``lengths`` in batches of at most ``batch_size``, shortest first: a batch closes early when
    the next sequence would make more than ``max_padding`` of its padded positions padding."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        chunk = batches[-1] if batches else None
        if chunk is not None and len(chunk) < batch_size:
            width, tokens = lengths[i], sum(lengths[j] for j in chunk) + lengths[i]
            if 1 - tokens / (width * (len(chunk) + 1)) <= max_padding:
                chunk.append(i)
                continue
        batches.append([i])
    return batches


def _block_labels(v_b_translated: torch.Tensor, v_r: torch.Tensor, block: Sequence[int], tr: Translation,
                  alpha: float, space: str = "logits") -> list[int]:
    n = len(block)
    positions = [t for t in range(n - 1) if tr.labeled[t]]  # the last position predicts past the block
    labels = [IGNORE_INDEX] * n
    if not positions:
        return labels
    index = torch.as_tensor(positions, device=v_r.device)
    v_b = in_space(v_b_translated[torch.as_tensor([tr.position_map[t] for t in positions], device=v_r.device)], space)
    rows = [row for row, t in enumerate(positions) for _ in tr.forbidden[t]]
    if rows:  # forbidden tokens -> the row's mean (computed before any is replaced), in one scatter
        cols = [tok for t in positions for tok in tr.forbidden[t]]
        rows_t = torch.as_tensor(rows, device=v_b.device)
        v_b[rows_t, torch.as_tensor(cols, device=v_b.device)] = v_b.mean(-1)[rows_t]
    chosen = generic_logits(v_b, in_space(v_r[index], space), alpha).argmax(-1).tolist()
    for t, label in zip(positions, chosen, strict=True):
        labels[t + 1] = int(label)
    return labels


def label_statistics(blocks: Sequence[Sequence[int]], labels: Sequence[Sequence[int]],
                     translations: Sequence[Translation], table: TermTable) -> dict[str, Any]:
    """How much the generic labels differ from the original next tokens: overall, at the positions right
    before a key occurrence (where the target-specific token is replaced), and per key."""
    total = changed = 0
    per_key: dict[str, list[int]] = {key: [0, 0, 0] for key in table.keys}  # occurrences, labeled, changed
    for block, label, tr in zip(blocks, labels, translations, strict=True):
        for t in range(1, len(block)):
            if label[t] != IGNORE_INDEX:
                total += 1
                changed += int(label[t] != block[t])
        for start, _, k in tr.matches:
            stats = per_key[table.keys[k]]
            stats[0] += 1
            if start > 0 and label[start] != IGNORE_INDEX:
                stats[1] += 1
                stats[2] += int(label[start] != block[start])
    before_labeled = sum(s[1] for s in per_key.values())
    before_changed = sum(s[2] for s in per_key.values())
    return {
        "labeled_positions": total,
        "changed_fraction": changed / total if total else 0.0,
        "term_occurrences": sum(s[0] for s in per_key.values()),
        "before_term_labeled": before_labeled,
        "before_term_changed_fraction": before_changed / before_labeled if before_labeled else 0.0,
        "per_term": {key: {"occurrences": s[0], "labeled_before": s[1],
                           "changed_before": s[2] / s[1] if s[1] else None} for key, s in per_key.items()},
    }


# --- the inference-time variant ------------------------------------------------------------------------


def check_same_vocabulary(baseline_tokenizer: Any, reinforced_tokenizer: Any, baseline: Any = None,
                          reinforced: Any = None, where: str = "whp.reinforced") -> None:
    """The reinforced model must share the baseline's tokenizer and vocabulary (else v_r − v_b is meaningless)."""
    if baseline_tokenizer.get_vocab() != reinforced_tokenizer.get_vocab():
        raise LetheError(f"{where}: its tokenizer differs from the baseline's ({len(reinforced_tokenizer)} vs "
                         f"{len(baseline_tokenizer)} tokens, or other ids); WHP needs the same vocabulary")
    if baseline is not None and reinforced is not None:
        nb = baseline.get_output_embeddings().weight.shape[0]
        nr = reinforced.get_output_embeddings().weight.shape[0]
        if nb != nr:
            raise LetheError(f"{where}: its vocabulary has {nr} logits, the baseline's {nb}; WHP needs the same")


class WHPLogitsModel(torch.nn.Module):
    """The inference-time WHP model: logits = v_b − α·ReLU(v_r − v_b), both models on the same input.

    Scores like any causal LM (``model(input_ids, attention_mask).logits``) and generates greedily
    (``generate`` with left padding, position ids from the attention mask, no cache)."""

    def __init__(self, baseline: Any, reinforced: Any, alpha: float = 1.0, space: str = "logits") -> None:
        super().__init__()
        _check_alpha(alpha)
        _check_space(space)
        self.space = space
        nb = baseline.get_output_embeddings().weight.shape[0]
        nr = reinforced.get_output_embeddings().weight.shape[0]
        if nb != nr:
            raise LetheError(f"the reinforced model has {nr} logits, the baseline {nb}; WHP needs the same vocabulary")
        self.baseline, self.reinforced, self.alpha = baseline, reinforced, float(alpha)
        self.config = baseline.config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **_: Any) -> CausalLMOutputWithPast:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        v_b = self.baseline(**kwargs).logits
        v_r = self.reinforced(**kwargs).logits
        return CausalLMOutputWithPast(logits=generic_logits(in_space(v_b, self.space), in_space(v_r, self.space),
                                                            self.alpha))

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 generation_config: Any = None, max_new_tokens: int | None = None, **_: Any) -> torch.Tensor:
        """Greedy decoding only (beam search is refused); returns prompt + new tokens like HF ``generate``."""
        if generation_config is not None:
            if getattr(generation_config, "num_beams", 1) not in (1, None) or getattr(generation_config,
                                                                                     "do_sample", False):
                raise LetheError("the inference-time WHP model decodes greedily only (num_beams=1, no sampling)")
            max_new_tokens = max_new_tokens or generation_config.max_new_tokens
        if not max_new_tokens:
            raise LetheError("generate needs max_new_tokens")
        ids = input_ids
        mask = attention_mask if attention_mask is not None else torch.ones_like(ids)
        for _ in range(int(max_new_tokens)):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
            token = logits.argmax(-1, keepdim=True)
            ids = torch.cat([ids, token], dim=1)
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        return ids
