"""Turn documents and question/answer pairs into model inputs (``input_ids`` + ``labels``).

- Documents: BOS (if the tokenizer has one) + text + EOS; every token after BOS is a target.
- QA (TOFU format, DESIGN 3.6): the tokenizer's chat template where it has one, else
  ``"Question: {q}\\nAnswer: {a}"``; labels are −100 over the prompt; EOS is appended and supervised.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from lethe.losses import IGNORE_INDEX

QA_TEMPLATE_PROMPT = "Question: {question}\nAnswer:"


def _bos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def _eos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def encode_document(tokenizer: PreTrainedTokenizerBase, text: str, max_length: int,
                    add_eos: bool = True) -> dict[str, list[int]]:
    ids = _bos(tokenizer) + tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = ids[: max_length - 1] + _eos(tokenizer) if add_eos else ids[:max_length]
    labels = list(ids)
    if tokenizer.bos_token_id is not None and ids and ids[0] == tokenizer.bos_token_id:
        labels[0] = IGNORE_INDEX
    return {"input_ids": ids, "labels": labels}


def qa_prompt_and_answer(tokenizer: PreTrainedTokenizerBase, question: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the answer (EOS appended), following DESIGN 3.6."""
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = _bos(tokenizer) + tokenizer(
            QA_TEMPLATE_PROMPT.format(question=question), add_special_tokens=False
        )["input_ids"]
        answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    return prompt_ids, answer_ids + _eos(tokenizer)


def encode_qa(tokenizer: PreTrainedTokenizerBase, question: str, answer: str,
              max_length: int) -> dict[str, list[int]]:
    prompt_ids, answer_ids = qa_prompt_and_answer(tokenizer, question, answer)
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    return {"input_ids": ids, "labels": labels}
