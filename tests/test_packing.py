"""Prompt sharing (lethe.audit.packing): a packed row of one prompt and its continuations gives each
sequence's statistics as a batch-1 forward of that sequence alone does."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import FullLogitsOnly
from lethe.audit.packing import packed_batches, prompt_groups, prompt_length, supports_packing
from lethe.audit.scoring import score_sequences
from lethe.losses import IGNORE_INDEX

NAMES = ("targets", "logp", "mu", "var", "argmax", "rank")


@pytest.fixture
def model64(tiny_model):
    return copy.deepcopy(tiny_model).double().eval()


def _feature(prompt: list[int], answer: list[int], mask: list[int] | None = None) -> dict[str, list[int]]:
    feature = {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}
    if mask is not None:
        feature["attention_mask"] = mask
    return feature


def _features(vocab: int) -> list[dict[str, list[int]]]:
    """Three prompts (7, 4 and 11 tokens) with 6, 1 and 3 answers of 1-9 tokens; the third prompt's group
    masks a token inside the prompt and one inside an answer (open-unlearning's pad = EOS masking)."""
    g = torch.Generator().manual_seed(0)

    def tokens(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    features = []
    first, second, third = tokens(7), tokens(4), tokens(11)
    for n in (5, 1, 9, 3, 3, 6):
        features.append(_feature(first, tokens(n)))
    features.append(_feature(second, tokens(8)))
    for n in (2, 4, 7):
        answer = tokens(n)
        mask = [1] * len(third) + [1] * n
        mask[5] = 0  # inside the prompt: the same in every sequence of the group
        mask[len(third) + n // 2] = 0
        features.append(_feature(third, answer, mask))
    features.insert(3, _feature(second, tokens(5)))  # groups are found wherever their sequences are
    return features


def _alone(model, feature) -> dict[str, torch.Tensor]:
    """The statistics of one sequence, from a plain batch-1 forward (no packing, no padding)."""
    return {name: getattr(score_sequences(model, [feature], batch_size=1)[0], name) for name in NAMES}


@pytest.mark.parametrize("batch_size", [16, 4, 1])
def test_packed_rows_give_every_sequence_its_own_statistics(model64, batch_size):
    features = _features(model64.config.vocab_size)
    shared = score_sequences(model64, features, batch_size=batch_size, pack=True)
    for feature, got in zip(features, shared, strict=True):
        expected = _alone(model64, feature)
        assert torch.equal(got.targets, expected["targets"])
        for name in ("logp", "mu", "var"):
            torch.testing.assert_close(getattr(got, name), expected[name], rtol=1e-10, atol=1e-12)
        assert torch.equal(got.argmax, expected["argmax"]) and torch.equal(got.rank, expected["rank"])


def test_a_prompt_is_computed_once_per_row(model64):
    features = _features(model64.config.vocab_size)
    tokens: list[int] = []
    hook = model64.model.embed_tokens.register_forward_hook(lambda m, i, o: tokens.append(o.shape[0] * o.shape[1]))
    try:
        score_sequences(model64, features, batch_size=16, pack=True)
    finally:
        hook.remove()
    packed = 7 + 4 + 11 + sum(len(f["input_ids"]) - prompt_length(f["labels"]) - 1 for f in features)
    assert tokens == [packed]  # one forward of one row: each prompt once, no last tokens, no padding


def test_groups_are_cut_to_the_batch_size_and_batches_hold_at_most_that_many_sequences(model64):
    features = _features(model64.config.vocab_size)
    groups = prompt_groups(features, 4)
    assert sorted(len(g) for g in groups) == [2, 2, 3, 4]  # the 6-answer group in 4 + 2; 2 and 3 whole
    assert sorted(i for g in groups for i in g) == list(range(len(features)))
    batches = packed_batches(features, batch_size=4, max_tokens=None, pad_id=0, dtype=torch.float64)
    assert all(len(b.sequences) <= 4 for b in batches)
    assert sorted(i for b in batches for i, _ in b.sequences) == list(range(len(features)))


def test_prompt_length_is_the_tokens_before_the_first_target():
    assert prompt_length([IGNORE_INDEX, IGNORE_INDEX, 5, 6]) == 2
    assert prompt_length([4, 5, 6]) == 1  # token 0 is never a target
    assert prompt_length([IGNORE_INDEX] * 3) == 3


def test_a_sequence_without_targets_gets_empty_statistics(model64):
    features = _features(model64.config.vocab_size)[:2] + [{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX] * 3}]
    scores = score_sequences(model64, features, pack=True)
    assert scores[2].n == 0 and scores[0].n == 5


def test_models_whose_attention_a_packed_mask_would_change_are_scored_alone(model64):
    assert supports_packing(model64)
    sliding = copy.deepcopy(model64)
    sliding.config.sliding_window = 4
    assert not supports_packing(sliding)

    wrapped = FullLogitsOnly(model64)
    assert not supports_packing(wrapped)
    features = _features(model64.config.vocab_size)
    for got, expected in zip(score_sequences(wrapped, features, pack=True),
                             score_sequences(model64, features), strict=True):
        torch.testing.assert_close(got.logp, expected.logp, rtol=1e-10, atol=1e-12)


def test_a_masked_first_token_falls_back_to_scoring_alone(model64):
    feature = _feature([5, 6, 7], [8, 9], mask=[0, 1, 1, 1, 1])
    other = _feature([5, 6, 7], [10], mask=[0, 1, 1, 1])
    shared = score_sequences(model64, [feature, other], pack=True)
    alone = score_sequences(model64, [feature, other])
    for got, expected in zip(shared, alone, strict=True):
        assert torch.equal(got.logp, expected.logp)


def test_unrelated_texts_fill_rows_instead_of_padding(model64, monkeypatch):
    """MIA texts (every token after the first a target, no common prompt) share rows of at most ROW_TOKENS;
    a longer text gets a row of its own; every text keeps its own statistics."""
    import lethe.audit.packing as packing

    monkeypatch.setattr(packing, "ROW_TOKENS", 24)
    g = torch.Generator().manual_seed(1)
    lengths = (5, 9, 3, 12, 30, 7, 7, 2, 11, 6)
    features = []
    for n in lengths:
        ids = torch.randint(3, model64.config.vocab_size, (n,), generator=g).tolist()
        features.append({"input_ids": ids, "labels": ids})
    batches = packed_batches(features, batch_size=16, max_tokens=None, pad_id=0, dtype=torch.float64)
    widths = [int(b.input_ids.shape[1]) for b in batches]
    assert sum(int(b.input_ids.shape[0]) for b in batches) < len(features) and max(widths) == 29  # 30 − last
    assert sum(int(b.input_ids.numel()) for b in batches) <= len(lengths) * max(lengths) // 2  # padded: 300
    for feature, got in zip(features, score_sequences(model64, features, pack=True), strict=True):
        expected = _alone(model64, feature)
        torch.testing.assert_close(got.logp, expected["logp"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got.var, expected["var"], rtol=1e-10, atol=1e-12)
        assert torch.equal(got.rank, expected["rank"])


def test_long_sequences_and_long_groups_stay_out_of_big_rows(model64, monkeypatch):
    """A sequence longer than MAX_ROW_TOKENS is scored alone (no [L, L] mask); a group whose row would pass
    it is cut into pieces that each repeat the prompt."""
    import lethe.audit.packing as packing

    monkeypatch.setattr(packing, "MAX_ROW_TOKENS", 20)
    prompt = list(range(10, 16))
    features = [_feature(prompt, list(range(30, 30 + n))) for n in (6, 6, 6)]
    features.append({"input_ids": list(range(40, 64)), "labels": list(range(40, 64))})  # 24 > 20 tokens
    assert [len(g) for g in prompt_groups(features[:3], 16)] == [2, 1]  # 6 + 6 + 6 = 18 fits, 6 + 18 does not
    for feature, got in zip(features, score_sequences(model64, features, pack=True), strict=True):
        torch.testing.assert_close(got.logp, _alone(model64, feature)["logp"], rtol=1e-10, atol=1e-12)


def test_alibi_models_are_not_packed(model64):
    alibi = copy.deepcopy(model64)
    alibi.config.attn_config = {"alibi": True}  # MPT keeps it nested
    assert not supports_packing(alibi)


def test_a_gpt2_packs_as_it_scores_alone():
    """Learned position embeddings read the packed row's own position ids."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=120, n_positions=64, bos_token_id=0,
                        eos_token_id=0)
    model = GPT2LMHeadModel(config).double().eval()
    assert supports_packing(model)
    features = _features(120)
    for feature, got in zip(features, score_sequences(model, features, pack=True), strict=True):
        torch.testing.assert_close(got.logp, _alone(model, feature)["logp"], rtol=1e-10, atol=1e-12)
