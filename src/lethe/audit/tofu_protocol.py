"""The input protocol of a TOFU evaluation: which tokens a question/answer pair becomes, which are scored,
which are masked, and how a generation is read back. The formulas of :mod:`lethe.audit.tofu_metrics` are the
same under both protocols; the tokens they see are not.

``open-unlearning`` (the default; numbers comparable with its leaderboard) reproduces
``src/data/utils.py::preprocess_chat_instance`` and ``DataCollatorForSupervisedDataset`` of
github.com/locuslab/open-unlearning:

- prompt P and full sequence C are tokenized **separately**: with a chat template,
  P = apply_chat_template([system?, user], add_generation_prompt=True) and
  C = apply_chat_template([system?, user, assistant]); without one,
  P = tok("Question: {q}\\nAnswer: ") and C = tok("Question: {q}\\nAnswer: {a}"), both with the tokenizer's
  special tokens and truncated at 512 tokens. EOS is appended to C unless C already ends in it.
- labels = −100 over the first |P| positions, C[|P|:] after. So (D1) the trailing space of "Answer: " is a
  token of P that overlaps the first answer token of C, which is never scored; and (D2) with a chat
  template everything after the generation prompt is scored: answer, end-of-turn, newline and the appended
  EOS.
- attention mask = (ids ≠ pad), pad = the tokenizer's pad (EOS when it has none): (D3) when pad = EOS every
  EOS inside the prompt (and the answer's end-of-turn) is masked, in scoring and in generation; position ids
  are the model's defaults in scoring (0..T−1) and follow the mask in ``generate``.
- ES / EM / min-k drop the last scored token (whatever it is); (D5) generation keeps the model's own
  ``generation_config`` (its EOS list, repetition penalty, ...) with ``do_sample=False``, decodes with special
  tokens skipped and clean-up on, cuts at the EOS text, strips; the ROUGE reference is the decoded full
  sequence with the decoded prompt removed.

``lethe`` (the clean protocol): P = the chat template's generation prompt, or BOS + "Question: {q}\\nAnswer:",
the answer tokenized on its own (" " + a without a template) + EOS; every answer token and one EOS are scored
once, nothing inside the prompt is masked, ES / EM / min-k drop the final EOS only, generation uses pinned
greedy settings (:mod:`lethe.audit.generation`) cut at EOS, and the ROUGE reference is the answer text.

Both take an optional system prompt (open-unlearning's instruct-model configs use "You are a helpful
assistant."): a system message with a chat template; without one it is prefixed literally, as
open-unlearning's ``system_prompt_with_special_tokens``. ``date_string`` feeds templates that print a date
(Llama 3.x).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX

PROTOCOLS = ("open-unlearning", "lethe")
DEFAULT_PROTOCOL = "open-unlearning"
OU_MAX_LENGTH = 512  # open-unlearning's QADataset max_length (truncates the non-chat path only)
QA_USER_START, QA_USER_END, QA_ASSISTANT_START = "Question: ", "\n", "Answer: "


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise LetheError(f"unknown TOFU protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    return protocol


@dataclass
class QAItem:
    """One (question, answer) pair under a protocol: the scored sequence and the generation prompt."""

    input_ids: list[int]
    labels: list[int]
    attention_mask: list[int]
    prompt_ids: list[int]
    prompt_mask: list[int]
    reference: str = ""  # the text ROUGE compares the generation with
    extra: dict[str, Any] = field(default_factory=dict)

    def feature(self) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids, "labels": self.labels, "attention_mask": self.attention_mask}


def pad_id_of(tokenizer: Any) -> int:
    """The pad id a collator uses: the tokenizer's pad, else EOS (as open-unlearning sets it), else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _ids(encoded: Any) -> list[int]:
    """``apply_chat_template(tokenize=True)`` returns a list (transformers 4) or a BatchEncoding (5)."""
    return list(encoded if isinstance(encoded, list) else encoded["input_ids"])


def _chat(question: str, system_prompt: str) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": question}]


def _template_kwargs(date_string: str) -> dict[str, str]:
    return {"date_string": date_string} if date_string else {}


def encode_open_unlearning(tokenizer: Any, question: str, answer: str, *, system_prompt: str = "",
                           date_string: str = "", max_length: int = OU_MAX_LENGTH) -> QAItem:
    """open-unlearning's tokens, labels and attention mask for one pair (see the module docstring)."""
    eos = tokenizer.eos_token_id
    if getattr(tokenizer, "chat_template", None):
        chat, kwargs = _chat(question, system_prompt), _template_kwargs(date_string)
        full = _ids(tokenizer.apply_chat_template(chat + [{"role": "assistant", "content": answer}],
                                                  tokenize=True, add_generation_prompt=False, **kwargs))
        prompt = _ids(tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=True, **kwargs))
    else:
        wrapped = f"{system_prompt}{QA_USER_START}{question}{QA_USER_END}{QA_ASSISTANT_START}"
        full = tokenizer(wrapped + answer, add_special_tokens=True, max_length=max_length,
                         truncation=True)["input_ids"]
        prompt = tokenizer(wrapped, add_special_tokens=True, max_length=max_length, truncation=True)["input_ids"]
    if eos is not None and (not full or full[-1] != eos):
        full = full + [eos]
    pad = pad_id_of(tokenizer)
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt):]
    return QAItem(input_ids=full, labels=labels[: len(full)], attention_mask=[int(t != pad) for t in full],
                  prompt_ids=prompt, prompt_mask=[int(t != pad) for t in prompt],
                  reference=ou_reference(tokenizer, full, prompt))


def ou_decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)


def ou_reference(tokenizer: Any, full: list[int], prompt: list[int]) -> str:
    """open-unlearning's ROUGE ground truth: decoded conversation minus the decoded prompt, stripped."""
    return ou_decode(tokenizer, full).replace(ou_decode(tokenizer, prompt), "").strip()


def ou_generation_text(tokenizer: Any, new_tokens: list[int]) -> str:
    """open-unlearning's reading of a generation: decoded (special tokens skipped), cut at the EOS text."""
    text = ou_decode(tokenizer, new_tokens)
    if tokenizer.eos_token_id is not None:
        stop = tokenizer.decode([tokenizer.eos_token_id])
        if stop and stop in text:
            text = text.split(stop)[0]
    return text.strip()


def lethe_prompt_and_answer(tokenizer: Any, question: str, answer: str, *,
                            system_prompt: str = "", date_string: str = "") -> tuple[list[int], list[int]]:
    """Lethe's prompt ids and answer ids (EOS appended): every answer token is a target exactly once."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(_chat(question, system_prompt), tokenize=False,
                                             add_generation_prompt=True, **_template_kwargs(date_string))
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    else:
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        prompt = bos + tokenizer(f"{system_prompt}Question: {question}\nAnswer:", add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    return prompt, answer_ids + eos


def encode_lethe(tokenizer: Any, question: str, answer: str, *, system_prompt: str = "",
                 date_string: str = "") -> QAItem:
    prompt, answer_ids = lethe_prompt_and_answer(tokenizer, question, answer, system_prompt=system_prompt,
                                                 date_string=date_string)
    ids = prompt + answer_ids
    return QAItem(input_ids=ids, labels=[IGNORE_INDEX] * len(prompt) + answer_ids, attention_mask=[1] * len(ids),
                  prompt_ids=prompt, prompt_mask=[1] * len(prompt), reference=answer)


def encode_item(tokenizer: Any, question: str, answer: str, protocol: str, *, system_prompt: str = "",
                date_string: str = "") -> QAItem:
    """The :class:`QAItem` of one pair under ``protocol``."""
    if check_protocol(protocol) == "open-unlearning":
        return encode_open_unlearning(tokenizer, question, answer, system_prompt=system_prompt,
                                      date_string=date_string)
    return encode_lethe(tokenizer, question, answer, system_prompt=system_prompt, date_string=date_string)


def answer_slice(n: int, last_target: int | None, eos_id: int | None, protocol: str) -> int:
    """How many leading scored tokens ES / EM / min-k use: open-unlearning drops the last scored token
    (``tokenwise_logprobs``' ``[:-1]``), Lethe drops it only when it is the EOS it appended."""
    if n == 0:
        return 0
    if protocol == "open-unlearning":
        return n - 1
    return n - 1 if eos_id is not None and last_target == eos_id else n


def describe(protocol: str, tokenizer: Any, system_prompt: str = "") -> str:
    """One line naming the protocol and what it scores, for notes and reports."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    form = "chat template" if chat else "Question/Answer template"
    system = f", system prompt {system_prompt!r}" if system_prompt else ", no system prompt"
    if protocol == "open-unlearning":
        return (f"protocol open-unlearning ({form}{system}): prompt and conversation tokenized separately, "
                "every token after the prompt scored (EOS appended), attention mask = ids != pad, "
                "ES/EM/min-k without the last scored token, the model's own generation config")
    return (f"protocol lethe ({form}{system}): every answer token scored once plus one EOS, nothing masked in "
            "the prompt, ES/EM/min-k without the final EOS, pinned greedy generation cut at EOS")
