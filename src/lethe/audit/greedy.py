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
when no EOS comes).

Prompt-lookup drafts (Saxena 2023; ``generate``'s ``prompt_lookup_num_tokens``, here batched): a decode step
of a few rows costs what streaming the weights costs, so a row can also feed d_1..d_m, the tokens that
followed the latest earlier occurrence of its last 3 (else 2, else 1) tokens in its prompt and output
(:class:`NgramDrafter`). One forward gives the greedy choice g_j after each fed token; the row keeps
d_1..d_a for the longest a with d_j = g_{j−1} for all j ≤ a, then g_a: exactly the tokens a one-token step
would have chosen, since each g_j sees the same tokens. The rejected drafts' cache slots get a 0 in the
attention mask. Drafts are fed only while a step stays small (:data:`STEP_TOKENS`): on SmolLM2 / CPU the
TOFU generation (20 prompts, 200 tokens) takes 121 forward passes instead of 200, 11.2 s instead of 14.3 s,
the same tokens. In float32 a verified token comes from a forward of several positions instead of one, so
a near-tie in the logits (a gap below ~1e-6) can in principle resolve differently, as it can between two
batch sizes of ``generate``; in float64 the tests find them identical.

Anything else (beams, sampling, repetition penalty, suppressed tokens, min lengths, a wrapper that is not a
plain Hugging Face model) goes through ``generate``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel

from lethe.audit.scoring import takes_logits_to_keep

LOOKAHEAD = 8  # most prompt-lookup draft tokens per row and step (0: one token per step)
# most tokens a step feeds with drafts: a decode step of a few rows costs what reading the weights costs, so a
# few more tokens per row are nearly free, but 20 rows x 5 tokens cost twice a step of 20 x 1 (SmolLM2, CPU)
STEP_TOKENS = 32

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


class NgramDrafter:
    """Prompt-lookup drafts for one row: the tokens that followed the latest earlier occurrence of the row's
    last ``n`` tokens (n = ``longest`` down to ``shortest``), in its prompt and output so far."""

    def __init__(self, tokens: list[int], longest: int = 3, shortest: int = 1):
        self.tokens: list[int] = []
        self.sizes = range(longest, shortest - 1, -1)
        self.seen: dict[tuple[int, ...], int] = {}  # n-gram -> the index after its latest occurrence with a successor
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            self.tokens.append(token)
            end = len(self.tokens) - 1  # the n-grams ending just before the new token now have a successor
            for n in self.sizes:
                if end >= n:
                    self.seen[tuple(self.tokens[end - n:end])] = end

    def draft(self, most: int) -> list[int]:
        if most <= 0:
            return []
        for n in self.sizes:
            if len(self.tokens) >= n:
                start = self.seen.get(tuple(self.tokens[-n:]))
                if start is not None:
                    return self.tokens[start:start + most]
        return []


def greedy_retiring(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, *,
                    eos_ids: set[int], pad_id: int, lookahead: int = LOOKAHEAD,
                    step_tokens: int = STEP_TOKENS) -> list[list[int]]:
    """The new tokens of each left-padded row, as ``generate``'s greedy search returns them (module docstring).

    ``lookahead`` > 0: each step also feeds up to that many prompt-lookup draft tokens per row
    (:class:`NgramDrafter`) and keeps the longest prefix of them that the step's own greedy choices
    confirm, plus the next greedy token; rejected drafts stay in the cache behind a 0 in the attention mask.
    Call under ``torch.inference_mode()`` with the model in eval mode."""
    rows = input_ids.shape[0]
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    outputs: list[list[int]] = [[] for _ in range(rows)]
    drafters = [NgramDrafter(input_ids[r][attention_mask[r].bool()].tolist()) for r in range(rows)] \
        if lookahead > 0 else []
    # transformers 5.25 renamed the forward's past_key_values to cache
    cache_arg = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1)
    cache = getattr(out, cache_arg)
    mask = attention_mask
    alive = list(range(rows))  # original row of each row still decoding
    last_position = position_ids[:, -1:]  # of the last token in the cache, per alive row
    proposals = out.logits[:, -1:, :].to(dtype=torch.float32).argmax(dim=-1).tolist()  # each row's new tokens
    while True:
        feed, done = [], []
        for k, row in enumerate(alive):  # append each row's new tokens, up to its first EOS and the limit
            new = proposals[k][: max_new_tokens - len(outputs[row])]
            stop = next((i for i, token in enumerate(new) if token in eos_ids), None)
            new = new if stop is None else new[: stop + 1]
            outputs[row].extend(new)
            done.append(stop is not None or len(outputs[row]) >= max_new_tokens)
            if drafters:
                drafters[row].extend(new)
            feed.append(new[-1])  # the last new token is not in the cache yet
        if all(done):
            break
        if any(done):
            kept = [k for k, finished in enumerate(done) if not finished]
            keep = torch.tensor(kept, device=mask.device)
            cache.batch_select_indices(keep)
            alive, feed, mask, last_position = [alive[k] for k in kept], [feed[k] for k in kept], mask[keep], \
                last_position[keep]
        most = min(lookahead, step_tokens // len(alive) - 1)  # drafts only while the step stays cheap
        drafts = [drafters[row].draft(min(most, max_new_tokens - len(outputs[row]) - 1)) if drafters else []
                  for row in alive]
        width = 1 + max(len(d) for d in drafts)
        step_ids = torch.full((len(alive), width), pad_id, dtype=input_ids.dtype, device=input_ids.device)
        step_mask = torch.zeros((len(alive), width), dtype=mask.dtype, device=mask.device)
        for k, (token, draft) in enumerate(zip(feed, drafts, strict=True)):
            step_ids[k, : 1 + len(draft)] = torch.tensor([token, *draft])
            step_mask[k, : 1 + len(draft)] = 1
        mask = torch.cat([mask, step_mask], dim=-1)
        out = model(input_ids=step_ids, attention_mask=mask, use_cache=True, logits_to_keep=width,
                    position_ids=last_position + 1 + torch.arange(width, device=mask.device)[None, :],
                    **{cache_arg: cache})
        greedy = out.logits.to(dtype=torch.float32).argmax(dim=-1).tolist()  # the choice after each fed token
        proposals = []
        for k, draft in enumerate(drafts):  # draft j stands while it is the greedy choice after draft j − 1
            a = 0
            while a < len(draft) and draft[a] == greedy[k][a]:
                a += 1
            proposals.append(draft[:a] + [greedy[k][a]])
        fed = torch.tensor([len(p) for p in proposals], device=mask.device)[:, None]  # the feed + kept drafts
        mask[:, -width:] = (torch.arange(width, device=mask.device)[None, :] < fed).to(mask.dtype)
        last_position = last_position + fed
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
