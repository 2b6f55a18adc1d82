"""Batched, deterministic continuation of token prefixes with a Hugging Face causal LM.

Used by the verbatim-extraction audit (Carlini et al. 2021, "Extracting Training Data from Large Language
Models"; Carlini et al. 2023, "Quantifying Memorization Across Neural Language Models"): each prefix is
continued by greedy decoding (or beam search) for a fixed number of tokens, to be compared with the true
suffix.

Protocol details that matter for correctness:

- Prefixes are sorted by length and cut into batches (length bucketing), LEFT-padded with an attention mask,
  and the outputs are returned in input order. ``generate`` derives position ids from the attention mask, so a
  left-padded row decodes exactly like the same prefix alone in a batch of one.
- Decoding settings are pinned: during the call the model's own ``generation_config`` (which may carry
  sampling, repetition-penalty, suppressed-token or forced-EOS settings from the Hub) is swapped for a clean
  one, because transformers 5.x fills every field an explicit ``GenerationConfig`` leaves ``None`` from
  ``model.generation_config``.
- EOS is an ordinary token unless ``stop_at_eos``: exactly ``max_new_tokens`` tokens come back, and EOS is
  never masked out (``min_new_tokens`` would suppress EOS and so change the greedy choice).
- Runs under ``torch.inference_mode()`` with the model in eval mode; the training flag is restored after.

:func:`generate_with_model_config` is the other protocol (open-unlearning's, DESIGN 3.6): the model's own
``generation_config`` stays in force (its EOS list, repetition penalty, ...) with only ``do_sample=False``,
``max_new_tokens``, ``use_cache`` and the pad id set, and each prompt carries its own attention mask (ids ≠
pad: EOS tokens inside a prompt are masked when pad = EOS; ``generate`` numbers positions by that mask).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers import GenerationConfig

from lethe.audit.greedy import greedy_generate
from lethe.errors import LetheError
from lethe.progress import progress


def _model_device(model: Any) -> torch.device:
    """The device the model's inputs must live on."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Put ``model`` in eval mode and restore every submodule's previous training flag afterwards."""
    modules = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    flags = [(m, m.training) for m in modules]
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextmanager
def _clean_generation_config(model: Any) -> Iterator[None]:
    """Swap every owned ``generation_config`` (model and, for PEFT wrappers, its base) for a clean one."""
    owners = [model]
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        base = get_base()
        if base is not model:
            owners.append(base)
    saved = []
    for owner in owners:
        if isinstance(getattr(owner, "__dict__", {}).get("generation_config"), GenerationConfig):
            saved.append((owner, owner.generation_config))
            owner.generation_config = GenerationConfig()
    try:
        yield
    finally:
        for owner, config in saved:
            owner.generation_config = config


def _decoding_config(max_new_tokens: int, *, pad_id: int, eos_id: int | None, num_beams: int,
                     num_return_sequences: int) -> GenerationConfig:
    """Deterministic decoding settings; every logits processor that could alter the argmax is neutral."""
    return GenerationConfig(
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=num_return_sequences,
        max_new_tokens=max_new_tokens,
        min_length=0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        length_penalty=1.0,
        early_stopping=False,
        use_cache=True,
        # greedy: a pre-allocated KV cache avoids re-concatenating the whole cache every step (~7% faster
        # on CPU, identical tokens; benchmarks/bench_extraction.py); beam search keeps the dynamic cache
        cache_implementation="static" if num_beams == 1 else None,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        return_dict_in_generate=False,
    )


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (longest first, stable), cut into batches of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _left_pad(prefixes: Sequence[Sequence[int]], pad_id: int,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and the matching ``attention_mask``."""
    width = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for row, prefix in enumerate(prefixes):
        if prefix:
            ids[row, width - len(prefix):] = torch.tensor(list(prefix), dtype=torch.long)
            mask[row, width - len(prefix):] = 1
    return ids.to(device), mask.to(device)


def _cut_at_eos(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


def _check_args(prefixes: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int) -> None:
    if max_new_tokens < 1:
        raise LetheError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise LetheError(f"batch_size must be at least 1, got {batch_size}")
    for i, prefix in enumerate(prefixes):
        if len(prefix) == 0:
            raise LetheError(f"prefix {i} is empty; generation needs at least one context token")


def _check_positions(model: Any, prefixes: Sequence[Sequence[int]], max_new_tokens: int) -> None:
    """Prompt + new tokens must fit the model's positions: past them GPT-2 fails with an IndexError and
    rotary models generate past their context without a word."""
    from lethe.models import model_positions

    positions = model_positions(model)
    longest = max(range(len(prefixes)), key=lambda i: len(prefixes[i]))
    if positions is not None and len(prefixes[longest]) + max_new_tokens > positions:
        raise LetheError(f"input {longest} has {len(prefixes[longest])} tokens: with {max_new_tokens} new tokens it "
                         f"exceeds the model's {positions} positions (fewer new tokens, or shorter inputs)")


def generate_continuations(model: Any, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *,
                           pad_id: int, batch_size: int = 32, num_beams: int = 1,
                           num_return_sequences: int = 1, eos_id: int | None = None,
                           stop_at_eos: bool = False) -> list[list[list[int]]]:
    """For each prefix, ``num_return_sequences`` continuations (new tokens only), in input order.

    ``num_beams == 1`` is greedy decoding; otherwise beam search, whose returned sequences are ordered best
    first. ``batch_size`` counts prefixes per ``generate`` call (a beam batch holds ``batch_size * num_beams``
    rows).
    """
    _check_args(prefixes, max_new_tokens, batch_size)
    if num_beams < 1:
        raise LetheError(f"num_beams must be at least 1, got {num_beams}")
    if not 1 <= num_return_sequences <= num_beams:
        raise LetheError(f"num_return_sequences must be between 1 and num_beams={num_beams}, "
                         f"got {num_return_sequences}")
    if stop_at_eos and eos_id is None:
        raise LetheError("stop_at_eos=True needs an eos_id")
    if not prefixes:
        return []
    _check_positions(model, prefixes, max_new_tokens)
    config = _decoding_config(max_new_tokens, pad_id=pad_id, eos_id=eos_id if stop_at_eos else None,
                              num_beams=num_beams, num_return_sequences=num_return_sequences)
    device = _model_device(model)
    results: list[list[list[int]]] = [[] for _ in prefixes]
    with _eval_mode(model), _clean_generation_config(model), torch.inference_mode():
        for batch in progress(_length_batches([len(p) for p in prefixes], batch_size), "generation",
                              total=len(prefixes), unit="prompts", size=len):
            input_ids, attention_mask = _left_pad([prefixes[i] for i in batch], pad_id, device)
            new = greedy_generate(model, input_ids, attention_mask, config)
            if not stop_at_eos and any(len(row) != max_new_tokens for row in new):
                raise LetheError(f"generate returned {len(new[0])} new tokens instead of {max_new_tokens}")
            for k, i in enumerate(batch):
                rows = new[k * num_return_sequences:(k + 1) * num_return_sequences]
                if stop_at_eos:
                    assert eos_id is not None
                    rows = [_cut_at_eos(row, eos_id) for row in rows]
                results[i] = rows
    return results


def greedy_continue(model: Any, prefixes: list[list[int]], max_new_tokens: int, *, pad_id: int,
                    batch_size: int = 32, eos_id: int | None = None,
                    stop_at_eos: bool = False) -> list[list[int]]:
    """Greedy continuation of each prefix: exactly ``max_new_tokens`` new tokens, in input order.

    With ``stop_at_eos`` each output is cut at its first ``eos_id`` (the EOS itself excluded).
    """
    outputs = generate_continuations(model, prefixes, max_new_tokens, pad_id=pad_id, batch_size=batch_size,
                                     eos_id=eos_id, stop_at_eos=stop_at_eos)
    return [rows[0] for rows in outputs]


def generate_with_model_config(model: Any, prompts: Sequence[Sequence[int]], masks: Sequence[Sequence[int]],
                               max_new_tokens: int, *, pad_id: int, batch_size: int = 32) -> list[list[int]]:
    """Greedy generation under the model's own ``generation_config``: the new tokens of each prompt, in input
    order, as ``generate`` returns them (stopped at the config's EOS, the rows of finished prompts padded).

    ``masks[i]`` is the attention mask of ``prompts[i]`` (left padding adds zeros). Batches are length-sorted.
    """
    _check_args(prompts, max_new_tokens, batch_size)
    _check_positions(model, prompts, max_new_tokens)
    if len(masks) != len(prompts) or any(len(m) != len(p) for m, p in zip(masks, prompts, strict=True)):
        raise LetheError("generate_with_model_config: one attention mask per prompt, of the prompt's length")
    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if isinstance(base, GenerationConfig) else GenerationConfig()
    config.update(do_sample=False, max_new_tokens=max_new_tokens, use_cache=True, pad_token_id=pad_id,
                  top_p=None, top_k=None, temperature=None, return_dict_in_generate=False)
    device = _model_device(model)
    results: list[list[int]] = [[] for _ in prompts]
    with _eval_mode(model), torch.inference_mode():
        for batch in progress(_length_batches([len(p) for p in prompts], batch_size), "generation",
                              total=len(prompts), unit="prompts", size=len):
            input_ids, attention_mask = _left_pad([prompts[i] for i in batch], pad_id, device)
            for row, i in enumerate(batch):
                width = len(prompts[i])
                attention_mask[row, attention_mask.shape[1] - width:] = torch.as_tensor(list(masks[i]))
            new = greedy_generate(model, input_ids, attention_mask, config)
            for row, i in enumerate(batch):
                results[i] = new[row]
    return results


def beam_continue(model: Any, prefixes: list[list[int]], max_new_tokens: int, *, pad_id: int,
                  num_beams: int, num_return_sequences: int | None = None,
                  batch_size: int = 8) -> list[list[list[int]]]:
    """Beam-search continuations of each prefix (``max_new_tokens`` tokens each), best beam first."""
    return generate_continuations(model, prefixes, max_new_tokens, pad_id=pad_id, batch_size=batch_size,
                                  num_beams=num_beams,
                                  num_return_sequences=num_beams if num_return_sequences is None
                                  else num_return_sequences)


def sample_continuations(model: Any, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *, pad_id: int,
                         seed: int = 0, batch_size: int = 32, temperature: float = 1.0,
                         top_p: float = 1.0) -> list[list[int]]:
    """Sampled continuations (ancestral sampling at ``temperature``, nucleus ``top_p``; no top-k), exactly
    ``max_new_tokens`` new tokens per prefix, in input order. Reproducible: the draws come from a torch
    generator state seeded with ``seed`` (the global RNG is restored afterwards), so the same model, prefixes
    and batching give the same text. For generation-quality metrics (MAUVE), not extraction."""
    _check_args(prefixes, max_new_tokens, batch_size)
    if temperature <= 0 or not 0 < top_p <= 1:
        raise LetheError(f"sampling needs temperature > 0 and top_p in (0, 1], got {temperature} and {top_p}")
    _check_positions(model, prefixes, max_new_tokens)
    config = GenerationConfig(do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                              max_new_tokens=max_new_tokens, min_length=0, repetition_penalty=1.0, use_cache=True,
                              pad_token_id=pad_id, eos_token_id=None, return_dict_in_generate=False)
    device = _model_device(model)
    results: list[list[int]] = [[] for _ in prefixes]
    with _eval_mode(model), _clean_generation_config(model), torch.inference_mode(), \
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in _length_batches([len(p) for p in prefixes], batch_size):
            input_ids, attention_mask = _left_pad([prefixes[i] for i in batch], pad_id, device)
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
            for row, i in enumerate(batch):
                results[i] = output[row, input_ids.shape[1]:].tolist()
    return results
