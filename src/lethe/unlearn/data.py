"""Forget/retain data for unlearning: validation, encoding and per-rank random pairing.

Each training item is forget sample i together with a retain sample r(i) (and, for IdkPO, the forget
question with a refusal answer k(i)). Per epoch e, r and k are drawn uniformly from a generator seeded by
(seed, rank, e): pairings differ between ranks and epochs, and a resumed run redraws the same ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from lethe.data.formatting import encode_qa, qa_prompt_and_answer
from lethe.data.text import parse_json_records, read_text_file
from lethe.data.tofu import load_split, split_path
from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.train.collator import CausalLMCollator

GROUPS = ("forget", "retain", "idk")


def qa_key(record: dict[str, Any]) -> tuple[str, str]:
    return " ".join(str(record["question"]).split()), " ".join(str(record["answer"]).split())


def load_qa_set(folder: str | Path, split: str, role: str) -> list[dict[str, Any]]:
    """The records of ``split`` (the ``role`` set: forget / retain); an empty file is an empty list
    (:func:`lethe.data.tofu.load_split` would call it "no records" without saying which set it is)."""
    path = split_path(folder, split)
    if not parse_json_records(path, read_text_file(path, f"{role} set")):
        return []
    return load_split(folder, split)


def split_exists(folder: str | Path, split: str) -> bool:
    try:
        split_path(folder, split)
    except LetheError:
        return False
    return True


def check_forget_retain(forget: list[dict[str, Any]], retain: list[dict[str, Any]], *,
                        forget_name: str = "forget", retain_name: str = "retain",
                        retain_required: bool = True) -> None:
    """LetheError when the forget set (or, if required, the retain set) is empty, or when a
    (question, answer) pair is in both."""
    if not forget:
        raise LetheError(f"forget set '{forget_name}' is empty: nothing to unlearn")
    if retain_required and not retain:
        raise LetheError(f"retain set '{retain_name}' is empty")
    retain_keys = {qa_key(r) for r in retain}
    shared = [r for r in forget if qa_key(r) in retain_keys]
    if shared:
        raise LetheError(
            f"forget set '{forget_name}' and retain set '{retain_name}' share {len(shared)} question/answer "
            f"pair(s), e.g. {shared[0]['question']!r}; a sample cannot be both forgotten and retained"
        )


def record_ids(records: list[dict[str, Any]], prefix: str) -> list[str]:
    return [str(r.get("id", f"{prefix}-{i}")) for i, r in enumerate(records)]


def encode_all(tokenizer: PreTrainedTokenizerBase, records: list[dict[str, Any]],
               max_length: int) -> list[dict[str, list[int]]]:
    return [encode_qa(tokenizer, r["question"], r["answer"], max_length) for r in records]


def answer_token_counts(features: list[dict[str, list[int]]]) -> list[int]:
    """Supervised (answer) tokens of each encoded item, after truncation."""
    return [sum(label != IGNORE_INDEX for label in f["labels"]) for f in features]


def check_answer_tokens(features: list[dict[str, list[int]]], ids: list[str], role: str,
                        max_length: int) -> None:
    """LetheError when truncation at ``data.max_length`` removed every answer token of some items: their
    loss would silently be 0 (no unlearning signal, GUARD score a_i = 0)."""
    empty = [i for i, n in enumerate(answer_token_counts(features)) if n == 0]
    if empty:
        raise LetheError(
            f"data.max_length={max_length} leaves no answer tokens in {len(empty)} of {len(features)} {role} "
            f"item(s) (the prompt fills the whole window; first: {ids[empty[0]]!r}); raise data.max_length"
        )


@dataclass
class Refusals:
    """Forget questions paired with refusal answers, built on demand: prompt ids per question, answer ids
    (EOS included) per refusal; item (i, k) is encoded exactly as ``encode_qa(question_i, refusal_k)``."""

    prompts: list[list[int]]
    answers: list[list[int]]
    max_length: int

    @classmethod
    def encode(cls, tokenizer: PreTrainedTokenizerBase, questions: list[str], refusals: list[str],
               max_length: int) -> Refusals:
        if not refusals:
            raise LetheError("IdkPO needs at least one refusal answer")
        prompts = [qa_prompt_and_answer(tokenizer, q, "x")[0] for q in questions]
        answers = [qa_prompt_and_answer(tokenizer, questions[0], r)[1] for r in refusals]
        return cls(prompts, answers, max_length)

    def __len__(self) -> int:
        return len(self.answers)

    def item(self, question: int, refusal: int) -> dict[str, list[int]]:
        prompt, answer = self.prompts[question], self.answers[refusal]
        ids = (prompt + answer)[: self.max_length]
        labels = ([IGNORE_INDEX] * len(prompt) + answer)[: self.max_length]
        return {"input_ids": ids, "labels": labels}


def seed_of(*parts: int) -> int:
    """A 63-bit generator seed from integers (stable across runs and platforms)."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class ForgetRetainDataset(Dataset):
    """Item i = forget sample i + a random retain sample (+ a refusal answer to forget question i)."""

    def __init__(self, forget: list[dict[str, list[int]]], retain: list[dict[str, list[int]]] | None, *,
                 seed: int = 0, rank: int = 0, idk: Refusals | None = None) -> None:
        """``idk``: the forget questions with refusal answers (IdkPO only)."""
        if not forget:
            raise LetheError("forget set is empty: nothing to unlearn")
        if retain is not None and not retain:
            raise LetheError("retain set is empty")
        self.forget, self.retain, self.idk = forget, retain, idk
        self.seed, self.rank = seed, rank
        self.epoch = 0
        self._choices: tuple[int, torch.Tensor | None, torch.Tensor | None] | None = None

    def __len__(self) -> int:
        return len(self.forget)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def pairing(self, epoch: int | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(retain index, refusal index) of every forget sample in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._choices is not None and self._choices[0] == epoch:
            return self._choices[1], self._choices[2]
        generator = torch.Generator().manual_seed(seed_of(self.seed, self.rank, epoch))
        n = len(self.forget)
        retain = torch.randint(len(self.retain), (n,), generator=generator) if self.retain else None
        idk = torch.randint(len(self.idk), (n,), generator=generator) if self.idk else None
        self._choices = (epoch, retain, idk)
        return retain, idk

    def __getitem__(self, index: int) -> dict[str, Any]:
        retain_index, idk_index = self.pairing()
        item: dict[str, Any] = {"forget_index": index}
        for key, value in self.forget[index].items():
            item[f"forget_{key}"] = value
        if retain_index is not None:
            for key, value in self.retain[int(retain_index[index])].items():
                item[f"retain_{key}"] = value
        if idk_index is not None:
            for key, value in self.idk.item(index, int(idk_index[index])).items():
                item[f"idk_{key}"] = value
        return item


@dataclass
class PairCollator:
    """Right-pads each group (forget / retain / idk) separately: ``<group>_input_ids``,
    ``<group>_attention_mask``, ``<group>_labels``; plus ``forget_index`` [B]."""

    pad_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = CausalLMCollator(pad_id=self.pad_id)
        batch: dict[str, torch.Tensor] = {
            "forget_index": torch.tensor([int(f["forget_index"]) for f in features], dtype=torch.long)
        }
        for group in GROUPS:
            if f"{group}_input_ids" not in features[0]:
                continue
            padded = pad([{"input_ids": f[f"{group}_input_ids"], "labels": f[f"{group}_labels"]}
                          for f in features])
            for key in ("input_ids", "attention_mask", "labels"):
                batch[f"{group}_{key}"] = padded[key]
        return batch


def group(inputs: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The model inputs of one group of a :class:`PairCollator` batch."""
    return {key: inputs[f"{name}_{key}"] for key in ("input_ids", "attention_mask", "labels")}


def batches(features: list[dict[str, list[int]]], batch_size: int,
            pad_id: int) -> list[dict[str, torch.Tensor]]:
    """Plain padded batches (``input_ids``, ``attention_mask``, ``labels``), in order."""
    pad = CausalLMCollator(pad_id=pad_id)
    out = []
    for start in range(0, len(features), batch_size):
        padded = pad(list(features[start:start + batch_size]))
        out.append({k: padded[k] for k in ("input_ids", "attention_mask", "labels")})
    return out
