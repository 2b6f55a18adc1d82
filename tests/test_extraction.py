"""Tests of the verbatim-extraction audit: batched greedy/beam generation, prefix/suffix split, scoring."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from conftest import PLAIN_SENTENCES
from lethe.audit.extraction import (
    ExtractionResult,
    rouge_l,
    run_extraction,
    split_prefix_suffix,
)
from lethe.audit.generation import beam_continue, generate_continuations, greedy_continue
from lethe.errors import LetheError

SENTENCES = PLAIN_SENTENCES[:6]
PAD, BOS, EOS = "<pad>", "<s>", "</s>"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (~300 tokens) trained on SENTENCES, with pad/bos/eos tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(SENTENCES * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS)


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A random-init tiny LLaMA (hidden 32, 2 layers, 4 heads); eval mode, fixed seed."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         initializer_range=0.2, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config).eval()


def long_text(start: int, n_sentences: int = 6) -> str:
    return " ".join(SENTENCES[(start + k) % len(SENTENCES)] for k in range(n_sentences))


def encode(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    return [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]


def random_prefixes(vocab: int, lengths: list[int], seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


def manual_greedy(model: LlamaForCausalLM, prefix: list[int], n: int) -> list[int]:
    """Reference greedy decoding: a full forward pass per step, no cache, no padding, no ``generate``."""
    ids = list(prefix)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prefix):]


def sequence_logprob(model: LlamaForCausalLM, prefix: list[int], continuation: list[int]) -> float:
    ids = torch.tensor([prefix + continuation])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    return float(logp[torch.arange(len(targets)), targets][len(prefix) - 1:].sum())


class ScriptedModel(torch.nn.Module):
    """A stand-in for a causal LM whose ``generate`` returns scripted continuations of known prefixes.

    ``script`` maps an unpadded prefix to a list of candidate continuations (best first); the returned rows
    follow ``generation_config.num_return_sequences``. Every call's settings are recorded for inspection.
    """

    def __init__(self, script: dict[tuple[int, ...], list[list[int]]]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = GenerationConfig(do_sample=True, temperature=0.3)
        self.script = script
        self.calls: list[dict] = []

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 generation_config: GenerationConfig) -> torch.Tensor:
        n_ret = generation_config.num_return_sequences
        self.calls.append({"rows": input_ids.shape[0], "do_sample": generation_config.do_sample,
                           "max_new_tokens": generation_config.max_new_tokens, "n_ret": n_ret,
                           "num_beams": generation_config.num_beams, "training": self.training,
                           "left_padded": bool((attention_mask[:, -1] == 1).all())})
        out = []
        for row, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            prefix = tuple(t for t, m in zip(row, mask, strict=True) if m)
            for continuation in self.script[prefix][:n_ret]:
                out.append(row + continuation)
        return torch.tensor(out)


def memorizer_script(tokenizer, documents, suffix_len, corrupt=None, extra_beams=()):
    """Script the true continuation of every long-enough document; ``corrupt(doc_index, suffix)`` edits it."""
    script = {}
    for k, (_, text) in enumerate(documents):
        ids = encode(tokenizer, text)
        if len(ids) <= suffix_len:
            continue
        prefix, suffix = ids[:-suffix_len], ids[-suffix_len:]
        generated = corrupt(k, list(suffix)) if corrupt else list(suffix)
        script[tuple(prefix)] = [generated] + [list(beam) for beam in extra_beams]
    return script


# ---------------------------------------------------------------------------------------------- generation


def test_batched_left_padded_greedy_matches_batch_of_one(model, tokenizer):
    lengths = [5, 1, 12, 7, 3, 12, 9]
    prefixes = random_prefixes(len(tokenizer), lengths)
    batched = greedy_continue(model, prefixes, 10, pad_id=tokenizer.pad_token_id, batch_size=3)
    pad = tokenizer.pad_token_id
    singles = [greedy_continue(model, [p], 10, pad_id=pad, batch_size=1)[0] for p in prefixes]
    reference = [manual_greedy(model, p, 10) for p in prefixes]
    assert all(len(row) == 10 for row in batched)
    assert batched == singles == reference
    # the continuations differ between prefixes, so a permuted output order would be caught
    assert len({tuple(row) for row in batched}) > 3


def test_pad_value_does_not_matter(model, tokenizer):
    prefixes = random_prefixes(len(tokenizer), [2, 8, 4], seed=3)
    a = greedy_continue(model, prefixes, 6, pad_id=tokenizer.pad_token_id, batch_size=3)
    b = greedy_continue(model, prefixes, 6, pad_id=57, batch_size=3)
    assert a == b


def test_model_generation_config_and_training_flag_do_not_leak(model, tokenizer):
    prefixes = random_prefixes(len(tokenizer), [4, 9, 6], seed=2)
    reference = [manual_greedy(model, p, 8) for p in prefixes]
    saved = model.generation_config
    leaky = GenerationConfig(**saved.to_dict())
    leaky.update(do_sample=True, temperature=0.5, top_k=3, repetition_penalty=5.0, no_repeat_ngram_size=1,
                 suppress_tokens=[reference[0][0]], forced_eos_token_id=tokenizer.eos_token_id)
    model.generation_config = leaky
    model.train()
    try:
        out = greedy_continue(model, prefixes, 8, pad_id=tokenizer.pad_token_id, batch_size=2)
        assert out == reference
        assert model.generation_config is leaky
        assert model.training
    finally:
        model.generation_config = saved
        model.eval()


def test_eos_is_an_ordinary_token_unless_stop_at_eos(model, tokenizer):
    prefixes = random_prefixes(len(tokenizer), [3, 10, 6, 1], seed=4)
    full = greedy_continue(model, prefixes, 12, pad_id=0, batch_size=4)
    eos = full[0][4]  # pretend the token greedy emits at step 5 of the first prefix is EOS
    again = greedy_continue(model, prefixes, 12, pad_id=0, batch_size=4, eos_id=eos)
    assert again == full and all(len(row) == 12 for row in again)
    cut = greedy_continue(model, prefixes, 12, pad_id=0, batch_size=4, eos_id=eos, stop_at_eos=True)
    assert cut == [row[: row.index(eos)] if eos in row else row for row in full]
    assert len(cut[0]) <= 4
    with pytest.raises(LetheError):
        greedy_continue(model, prefixes, 12, pad_id=0, stop_at_eos=True)


def test_generation_rejects_bad_input(model):
    with pytest.raises(LetheError):
        greedy_continue(model, [[5, 6], []], 4, pad_id=0)
    with pytest.raises(LetheError):
        greedy_continue(model, [[5, 6]], 0, pad_id=0)
    assert greedy_continue(model, [], 4, pad_id=0) == []


def test_beam_search_returns_ranked_beams_batch_invariant(model, tokenizer):
    prefixes = random_prefixes(len(tokenizer), [6, 2, 9], seed=5)
    beams = beam_continue(model, prefixes, 5, pad_id=0, num_beams=3, batch_size=2)
    singles = [beam_continue(model, [p], 5, pad_id=0, num_beams=3, batch_size=1)[0] for p in prefixes]
    assert beams == singles
    for prefix, rows in zip(prefixes, beams, strict=True):
        assert len(rows) == 3 and all(len(r) == 5 for r in rows)
        assert len({tuple(r) for r in rows}) == 3
        scores = [sequence_logprob(model, prefix, r) for r in rows]
        assert scores == sorted(scores, reverse=True)
    with pytest.raises(LetheError):
        generate_continuations(model, prefixes, 5, pad_id=0, num_beams=2, num_return_sequences=3)


# ----------------------------------------------------------------------------------------------- splitting


def test_split_prefix_suffix_edge_cases():
    ids = list(range(51))
    prefix, suffix = split_prefix_suffix(ids, 50)
    assert prefix == [0] and suffix == list(range(1, 51))
    assert split_prefix_suffix(list(range(50)), 50) is None
    assert split_prefix_suffix([], 1) is None

    ids = list(range(100))
    prefix, suffix = split_prefix_suffix(ids, 30, prefix_len=20)
    assert prefix == list(range(50, 70)) and suffix == list(range(70, 100))
    prefix, suffix = split_prefix_suffix(list(range(50)), 30, prefix_len=20)
    assert prefix == list(range(20)) and suffix == list(range(20, 50))
    assert split_prefix_suffix(list(range(49)), 30, prefix_len=20) is None

    with pytest.raises(LetheError):
        split_prefix_suffix(ids, 0)
    with pytest.raises(LetheError):
        split_prefix_suffix(ids, 10, prefix_len=0)


# ---------------------------------------------------------------------------------------------- extraction


def test_perfect_memorizer_scores_one(tokenizer):
    documents = [(f"doc{k}", long_text(k)) for k in range(5)]
    assert all(len(encode(tokenizer, text)) > 60 for _, text in documents)
    stub = ScriptedModel(memorizer_script(tokenizer, documents, 50))
    stub.train()
    result = run_extraction(stub, tokenizer, documents, suffix_len=50, batch_size=2)
    assert isinstance(result, ExtractionResult)
    assert result.exact_match_rate == 1.0 and result.n_exact == 5
    assert result.token_match_rate == 1.0 and result.rougeL == 1.0
    assert result.rougeL_all == [1.0] * 5
    assert [item.id for item in result.items] == [d for d, _ in documents]
    for item, (_, text) in zip(result.items, documents, strict=True):
        assert text.endswith(item.target_text) and item.generated_text == item.target_text
        assert item.prefix_ids + item.target_ids == encode(tokenizer, text)
    # the decoding settings handed to generate: greedy, exactly suffix_len tokens, batched, left padded, eval
    assert [c["rows"] for c in stub.calls] == [2, 2, 1]
    assert all(c["do_sample"] is False and c["max_new_tokens"] == 50 for c in stub.calls)
    assert all(c["num_beams"] == 1 and c["n_ret"] == 1 for c in stub.calls)
    assert all(c["left_padded"] and not c["training"] for c in stub.calls)
    assert stub.training and stub.generation_config.do_sample is True


def test_one_wrong_token_breaks_exact_match(tokenizer):
    documents = [(f"doc{k}", long_text(k)) for k in range(3)]
    wrong = tokenizer.convert_tokens_to_ids("z")

    def corrupt(k: int, suffix: list[int]) -> list[int]:
        if k == 1:
            suffix[20] = wrong if suffix[20] != wrong else wrong + 1
        return suffix

    stub = ScriptedModel(memorizer_script(tokenizer, documents, 50, corrupt))
    result = run_extraction(stub, tokenizer, documents, suffix_len=50)
    bad = result.items[1]
    assert not bad.exact_match
    assert bad.token_match_rate == pytest.approx(49 / 50)
    assert bad.rougeL < 1.0
    assert result.n_exact == 2 and result.exact_match_rate == pytest.approx(2 / 3)
    assert result.token_match_rate == pytest.approx((1 + 49 / 50 + 1) / 3)
    assert result.rougeL == pytest.approx((2 + bad.rougeL) / 3)


def test_short_documents_are_counted_not_dropped(tokenizer):
    documents = [("long0", long_text(0)), ("tiny", "the dog"), ("long1", long_text(1)), ("mid", SENTENCES[0])]
    stub = ScriptedModel(memorizer_script(tokenizer, documents, 50))
    result = run_extraction(stub, tokenizer, documents, suffix_len=50)
    assert result.n_documents == 4 and result.n_skipped == 2
    assert result.skipped_ids == ["tiny", "mid"]
    assert [item.id for item in result.items] == ["long0", "long1"]
    report = result.to_dict()
    assert report["n_skipped"] == 2 and report["skipped_ids"] == ["tiny", "mid"] and report["n_scored"] == 2
    assert [row["id"] for row in report["items"]] == ["long0", "long1"]
    assert set(report["items"][0]) == {"id", "exact_match", "token_match_rate", "rougeL", "generated_text",
                                       "target_text", "generated_tokens", "target_tokens", "prefix_tail"}

    with pytest.raises(LetheError, match=r"no document is long enough for a 50-token suffix \(2 skipped\)"):
        run_extraction(stub, tokenizer, [("a", "the dog"), ("b", SENTENCES[1])], suffix_len=50)
    with pytest.raises(LetheError):
        run_extraction(stub, tokenizer, [], suffix_len=50)
    with pytest.raises(LetheError):
        run_extraction(stub, tokenizer, documents, suffix_len=0)


def test_rouge_l_does_not_stem(tokenizer):
    assert rouge_l("the dog is running", "the dog is runs") == pytest.approx(0.75)
    assert rouge_l("the dog is running", "the dog is running") == 1.0
    # end to end: the suffix " running" is replaced by " runs" (same number of tokens)
    target_words = tokenizer(" running", add_special_tokens=False)["input_ids"]
    generated_words = tokenizer(" runs", add_special_tokens=False)["input_ids"]
    if len(generated_words) < len(target_words):  # pad with a token of its own word to keep lengths equal
        generated_words += tokenizer(" tea", add_special_tokens=False)["input_ids"][: len(target_words)
                                                                                   - len(generated_words)]
    assert len(generated_words) == len(target_words)
    text = "the dog is running"
    suffix_len = len(encode(tokenizer, text)) - 2
    documents = [("d", text)]

    def corrupt(_: int, suffix: list[int]) -> list[int]:
        return suffix[: -len(target_words)] + generated_words

    stub = ScriptedModel(memorizer_script(tokenizer, documents, suffix_len, corrupt))
    item = run_extraction(stub, tokenizer, documents, suffix_len=suffix_len).items[0]
    assert item.target_text.endswith("is running") and "is runs" in item.generated_text
    n_words = len(item.target_text.split())
    assert item.rougeL < 1.0
    assert item.rougeL == pytest.approx(rouge_l(item.target_text, item.generated_text))
    assert item.rougeL <= (n_words - 1) / n_words + 1e-9


def test_any_of_beams_picks_the_matching_beam(tokenizer):
    documents = [("a", long_text(2)), ("b", long_text(3))]
    decoy = [tokenizer.eos_token_id] * 50

    def corrupt(_: int, suffix: list[int]) -> list[int]:
        return decoy

    # best beam is a decoy; the true suffix is the second beam
    script = memorizer_script(tokenizer, documents, 50)
    script = {prefix: [decoy, rows[0], decoy] for prefix, rows in script.items()}
    stub = ScriptedModel(script)
    top = run_extraction(stub, tokenizer, documents, suffix_len=50, num_beams=3)
    assert top.n_exact == 0 and stub.calls[-1]["n_ret"] == 1 and stub.calls[-1]["num_beams"] == 3
    best = run_extraction(stub, tokenizer, documents, suffix_len=50, num_beams=3, any_of_beams=True)
    assert best.n_exact == 2 and best.rougeL == 1.0 and stub.calls[-1]["n_ret"] == 3
    assert best.to_dict()["decoding"] == "beam3" and best.to_dict()["any_of_beams"] is True


def test_run_extraction_with_real_model(model, tokenizer):
    documents = [(f"doc{k}", long_text(k, n_sentences=2)) for k in range(4)]
    result = run_extraction(model, tokenizer, documents, suffix_len=8, batch_size=3)
    prefixes = [encode(tokenizer, text)[:-8] for _, text in documents]
    expected = greedy_continue(model, prefixes, 8, pad_id=tokenizer.pad_token_id, batch_size=1)
    assert [item.generated_ids for item in result.items] == expected
    for item, (_, text) in zip(result.items, documents, strict=True):
        assert item.prefix_ids[0] == tokenizer.bos_token_id
        assert item.target_ids == encode(tokenizer, text)[-8:]
        matches = sum(a == b for a, b in zip(item.generated_ids, item.target_ids, strict=True))
        assert item.token_match_rate == pytest.approx(matches / 8)
        assert item.exact_match == (matches == 8)
        assert item.generated_text == tokenizer.decode(item.generated_ids, skip_special_tokens=True)
    assert result.token_match_rate == pytest.approx(sum(i.token_match_rate for i in result.items) / 4)

    fixed = run_extraction(model, tokenizer, documents, suffix_len=8, prefix_len=5, add_bos=False)
    for item, (_, text) in zip(fixed.items, documents, strict=True):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert item.prefix_ids == ids[-13:-8] and item.target_ids == ids[-8:]
        assert item.generated_ids == manual_greedy(model, ids[-13:-8], 8)
    no_bos = run_extraction(model, tokenizer, documents[:1], suffix_len=8, add_bos=False)
    plain = tokenizer(documents[0][1], add_special_tokens=False)["input_ids"]
    assert no_bos.items[0].prefix_ids == plain[:-8]
