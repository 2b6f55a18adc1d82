"""Greedy decoding that retires finished rows (lethe.audit.greedy) returns exactly what generate returns."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GenerationConfig

from lethe.audit.generation import generate_with_model_config, greedy_continue
from lethe.audit.greedy import NgramDrafter, greedy_generate, greedy_retiring, supports_fast_greedy


def _config(eos: int | list[int], max_new: int, pad: int = 0, **extra) -> GenerationConfig:
    settings = {"do_sample": False, "max_new_tokens": max_new, "eos_token_id": eos, "pad_token_id": pad,
                "use_cache": True, **extra}
    return GenerationConfig(**settings)


def _frequent_tokens(model, input_ids, mask, steps: int) -> list[int]:
    """Tokens the model emits within its first ``steps`` greedy steps (EOS candidates that end rows early)."""
    out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=_config(None, steps))
    new = out[:, input_ids.shape[1]:]
    counts = torch.bincount(new.flatten())
    return counts.argsort(descending=True)[:2].tolist()


@pytest.fixture
def model64(tiny_model):
    """float64: no argmax near-ties, so generate and the retiring loop must agree token for token."""
    return copy.deepcopy(tiny_model).double().eval()


def _batch(vocab: int, lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, width - length:] = torch.randint(3, vocab, (length,), generator=generator)
        mask[row, width - length:] = 1
    return ids, mask


def test_retiring_loop_equals_generate_with_rows_ending_at_different_steps(model64):
    ids, mask = _batch(model64.config.vocab_size, [9, 4, 12, 7, 12, 3, 10, 5])
    eos = _frequent_tokens(model64, ids, mask, 6)
    config = _config(eos, 24, pad=1)
    assert supports_fast_greedy(model64, config)
    with torch.inference_mode():
        expected = model64.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        expected = expected[:, ids.shape[1]:].tolist()
        got = greedy_generate(model64, ids, mask, config)
    assert got == expected
    ends = [next((t for t, token in enumerate(row) if token in eos), None) for row in expected]
    assert len({e for e in ends if e is not None}) >= 2, ends  # the batch really retires rows at several steps


def test_finished_rows_leave_the_batch(model64):
    ids, mask = _batch(model64.config.vocab_size, [6, 8, 5, 8, 7, 6], seed=1)
    eos = _frequent_tokens(model64, ids, mask, 5)
    rows_per_call: list[int] = []
    hook = model64.model.embed_tokens.register_forward_hook(lambda m, i, o: rows_per_call.append(o.shape[0]))
    try:
        with torch.inference_mode():
            out = greedy_retiring(model64, ids, mask, 20, eos_ids=set(eos), pad_id=1)
    finally:
        hook.remove()
    assert rows_per_call[0] == 6 and rows_per_call == sorted(rows_per_call, reverse=True)
    assert rows_per_call[-1] < 6  # rows that emitted EOS were no longer decoded
    ends = [next(t for t, token in enumerate(row) if token in eos) for row in out if set(row) & set(eos)]
    assert ends
    for row, end in zip((row for row in out if set(row) & set(eos)), ends, strict=True):
        assert row[end + 1:] == [1] * (len(row) - end - 1)  # pad after the first EOS, as generate pads


def test_without_an_eos_in_sight_every_row_gets_max_new_tokens(model64):
    ids, mask = _batch(model64.config.vocab_size, [5, 3, 6])
    config = _config(model64.config.vocab_size - 1, 7)  # a token the model does not emit first
    with torch.inference_mode():
        expected = model64.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        got = greedy_generate(model64, ids, mask, config)
    assert got == expected[:, ids.shape[1]:].tolist() and all(len(row) == 7 for row in got)


@pytest.mark.parametrize("setting", [{"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 2},
                                     {"min_new_tokens": 3}, {"suppress_tokens": [5]}, {"num_beams": 2},
                                     {"do_sample": True}])
def test_score_changing_settings_go_through_generate(model64, setting):
    assert not supports_fast_greedy(model64, _config(4, 8, **setting))


def test_no_eos_or_a_wrapper_goes_through_generate(model64):
    assert not supports_fast_greedy(model64, _config(None, 8))

    class Wrapper(torch.nn.Module):
        def generate(self, **kwargs):  # pragma: no cover - never called here
            raise AssertionError

    assert not supports_fast_greedy(Wrapper(), _config(4, 8))


def test_protocol_entry_points_give_generates_tokens(model64):
    prompts = [[5, 9, 3, 44, 12], [7, 7], [30, 31, 32, 33, 34, 35, 36], [100, 3]]
    ids, mask = _batch(model64.config.vocab_size, [len(p) for p in prompts])
    eos = _frequent_tokens(model64, ids, mask, 4)[0]
    model64.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos)
    with torch.inference_mode():
        fast = generate_with_model_config(model64, prompts, [[1] * len(p) for p in prompts], 16, pad_id=eos,
                                          batch_size=4)
        cut = greedy_continue(model64, prompts, 16, pad_id=0, batch_size=4, eos_id=eos, stop_at_eos=True)
    for prompt, got, short in zip(prompts, fast, cut, strict=True):
        alone = model64.generate(input_ids=torch.tensor([prompt]), generation_config=_config(eos, 16, pad=eos))
        alone = alone[0, len(prompt):].tolist()
        assert got[:len(alone)] == alone and set(got[len(alone):]) <= {eos}
        assert short == (alone[:alone.index(eos)] if eos in alone else alone)


def test_ngram_drafter_proposes_what_followed_the_latest_earlier_occurrence():
    drafter = NgramDrafter([1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 6, 1, 2, 3])
    assert drafter.draft(2) == [7, 8]  # (1, 2, 3) last followed by 7, 8 (not the older 9)
    drafter.extend([4])
    assert drafter.draft(3) == []  # (2, 3, 4), (3, 4) and (4,) never seen before
    drafter.extend([5])
    assert drafter.draft(3) == [6, 1, 2]  # only the 1-gram (5,) has a successor
    assert drafter.draft(0) == [] and NgramDrafter([]).draft(4) == []


def test_lookahead_accepts_drafts_and_keeps_generates_tokens(model64):
    """A random tiny model falls into loops: the drafts of its own history are accepted, so fewer forward
    passes than tokens; the tokens are generate's, and those of the one-token-a-step loop."""
    ids, mask = _batch(model64.config.vocab_size, [9, 4, 12, 7], seed=3)
    eos = model64.config.vocab_size - 1  # never emitted: every row runs to the limit
    calls: list[int] = []
    hook = model64.model.embed_tokens.register_forward_hook(lambda m, i, o: calls.append(o.shape[1]))
    try:
        with torch.inference_mode():
            fast = greedy_retiring(model64, ids, mask, 40, eos_ids={eos}, pad_id=1, lookahead=8)
    finally:
        hook.remove()
    with torch.inference_mode():
        plain = greedy_retiring(model64, ids, mask, 40, eos_ids={eos}, pad_id=1, lookahead=0)
        expected = model64.generate(input_ids=ids, attention_mask=mask, generation_config=_config(eos, 40))
    assert fast == plain == expected[:, ids.shape[1]:].tolist()
    assert max(calls[1:]) > 1 and len(calls) < 40  # drafts were fed, and accepted


def test_lookahead_rows_stop_at_eos_inside_accepted_drafts(model64):
    ids, mask = _batch(model64.config.vocab_size, [6, 8, 5, 8, 7, 6], seed=4)
    eos = _frequent_tokens(model64, ids, mask, 12)
    config = _config(eos, 30, pad=1)
    with torch.inference_mode():
        expected = model64.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        got = greedy_retiring(model64, ids, mask, 30, eos_ids=set(eos), pad_id=1, lookahead=8, step_tokens=64)
    assert got == expected[:, ids.shape[1]:].tolist()
