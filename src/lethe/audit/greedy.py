"""Greedy decoding that retires each row at its EOS: ``generate``'s tokens, without decoding finished rows.

``model.generate`` keeps every row of a batch in every decode step until the *last* row has emitted EOS: a
TOFU batch whose answers end after 30–60 tokens runs to the 200-token limit for one long answer, and every
finished row is still pushed through every layer. Here, after each step, the rows that just emitted an EOS
are dropped from the input, the attention mask, the position ids and the KV cache
(``DynamicCache.batch_select_indices``), so a step costs what the rows still decoding cost.

The loop is ``generate``'s greedy search step for step, for the settings it accepts
(:func:`supports_fast_greedy`: greedy, no logits processor that changes scores, one EOS set):

    prefill:  positions p = cumsum(mask) − 1 (pads at 1), logits of the last position only
    step t:   x_t = argmax(float32(logits_t));  a row whose x_t ∈ EOS is finished after x_t
    next:     the alive rows' x_t with mask + [1] and position p_last + 1, through the cache

and returns, for each row, exactly what ``generate`` returns for it: the new tokens up to and including its
first EOS, then ``pad_id`` up to the length of the batch's longest output (or ``max_new_tokens`` tokens
when no EOS comes). Anything else (beams, sampling, repetition penalty, suppressed tokens, min lengths, a
wrapper that is not a plain Hugging Face model) goes through ``generate``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel

from lethe.audit.scoring import takes_logits_to_keep

# GenerationConfig fields that must hold these neutral values for the loop to equal generate's greedy search
_NEUTRAL = {
    "do_sample": (False, None), "num_beams": (None, 1), "num_beam_groups": (None, 1), "penalty_alpha": (None,),
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "force_words_ids": (None,),
    "min_length": (None, 0), "min_new_tokens": (None, 0), "sequence_bias": (None,), "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0), "renormalize_logits": (False, None),
    "watermarking_config": (None,), "stop_strings": (None,), "max_length": (None,), "assistant_model": (None,),
    "prompt_lookup_num_tokens": (None,), "num_return_sequences": (None, 1), "output_scores": (False, None),
    "output_logits": (False, None), "return_dict_in_generate": (False, None),
    "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0),
}


def eos_ids_of(config: GenerationConfig) -> set[int]:
    """The config's EOS token ids as a set (``eos_token_id`` may be an int, a list or None)."""
    eos = config.eos_token_id
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def supports_fast_greedy(model: Any, config: GenerationConfig) -> bool:
    """True when :func:`greedy_retiring` gives exactly ``model.generate(..., generation_config=config)``: a plain
    HF causal LM (not a wrapper with its own ``generate``), greedy, every score-changing setting neutral, EOS set."""
    if not isinstance(model, PreTrainedModel) or type(model).generate is not GenerationMixin.generate:
        return False
    if not eos_ids_of(config) or config.use_cache is False:
        return False
    for name, neutral in _NEUTRAL.items():
        if getattr(config, name, None) not in neutral:
            return False
    return takes_logits_to_keep(model)


def greedy_retiring(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, *,
                    eos_ids: set[int], pad_id: int) -> list[list[int]]:
    """The new tokens of each left-padded row, as ``generate``'s greedy search returns them (module docstring).

    Call under ``torch.inference_mode()`` with the model in eval mode."""
    rows = input_ids.shape[0]
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    eos = torch.tensor(sorted(eos_ids), device=input_ids.device)
    outputs: list[list[int]] = [[] for _ in range(rows)]
    alive = torch.arange(rows, device=input_ids.device)  # original row of each row still decoding
    # transformers 5.25 renamed the forward's past_key_values to cache
    cache_arg = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1)
    cache = getattr(out, cache_arg)
    mask = attention_mask
    last_position = position_ids[:, -1:]
    for step in range(max_new_tokens):
        tokens = out.logits[:, -1, :].to(dtype=torch.float32).argmax(dim=-1)
        for row, token in zip(alive.tolist(), tokens.tolist(), strict=True):
            outputs[row].append(token)
        finished = torch.isin(tokens, eos)
        if finished.all() or step == max_new_tokens - 1:
            break
        if finished.any():
            keep = (~finished).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            alive, tokens, mask, last_position = alive[keep], tokens[keep], mask[keep], last_position[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        last_position = last_position + 1
        out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=last_position,
                    use_cache=True, logits_to_keep=1, **{cache_arg: cache})
    width = max(len(tokens) for tokens in outputs)
    return [tokens + [pad_id] * (width - len(tokens)) for tokens in outputs]


def greedy_generate(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    config: GenerationConfig) -> list[list[int]]:
    """``model.generate(input_ids, attention_mask, generation_config=config)``'s new tokens per row, through
    :func:`greedy_retiring` where :func:`supports_fast_greedy` allows it."""
    assert config.max_new_tokens is not None
    if supports_fast_greedy(model, config):
        eos = config.eos_token_id
        pad = config.pad_token_id if config.pad_token_id is not None else eos if isinstance(eos, int) else eos[0]
        return greedy_retiring(model, input_ids, attention_mask, config.max_new_tokens,
                               eos_ids=eos_ids_of(config), pad_id=int(pad))
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    return output[:, input_ids.shape[1]:].tolist()
