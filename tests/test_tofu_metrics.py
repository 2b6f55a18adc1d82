"""TOFU metrics: pure formulas on crafted numbers, hand-recomputed per-item values on a tiny model, the
retain_eval round trip (forget_quality 1, privleak 0 against itself), bad input, and a slice of real TOFU."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer
from scipy.stats import hmean, ks_2samp

import lethe.audit.tofu_metrics as tm
from lethe.audit.tofu_metrics import (
    SUMMARY_KEYS,
    UTILITY_KEYS,
    evaluate_tofu,
    exact_memorization,
    extraction_strength,
    forget_quality,
    forget_truth_ratio_score,
    harmonic_mean,
    mia_auc,
    min_k_score,
    normalised_probability,
    privleak,
    sacrifice_rate,
    truth_ratio,
    utility_truth_ratio_score,
    write_tofu_eval,
)
from lethe.data.formatting import qa_prompt_and_answer
from lethe.errors import LetheError
from lethe.models import build_tiny

TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"
TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}

# ------------------------------------------------------------------------------------ pure functions


def test_truth_ratio_is_geometric_mean_of_perturbed_over_correct() -> None:
    tr = truth_ratio([1.0, 2.0], [[2.0, 4.0], [2.0, 2.0]])
    assert tr == pytest.approx([math.exp(-3.0) / math.exp(-1.0), 1.0], rel=1e-8)
    # ragged rows (different numbers of perturbed answers) give the same per-row means
    assert truth_ratio([1.0, 2.0], [[2.0, 4.0], [2.0]]) == pytest.approx(tr, rel=1e-12)
    with pytest.raises(LetheError):
        truth_ratio([1.0, 2.0], [[1.0, 2.0]])


def test_truth_ratio_scores_min_and_clip_rules() -> None:
    tr = np.array([0.5, 2.0, 1.0, 0.25])
    assert forget_truth_ratio_score(tr) == pytest.approx((0.5 + 0.5 + 1.0 + 0.25) / 4, rel=1e-8)
    assert utility_truth_ratio_score(tr) == pytest.approx((0.5 + 0.0 + 0.0 + 0.75) / 4, rel=1e-12)


def test_normalised_probability() -> None:
    out = normalised_probability([0.5, 0.1], [[0.25, 0.25, 0.0], [0.1, 0.1, 0.2]])
    assert out == pytest.approx([0.5, 0.2], rel=1e-8)


def test_harmonic_mean_matches_scipy_and_zero_gives_zero() -> None:
    values = [0.2, 0.5, 0.9, 0.33, 0.7, 0.1, 0.4, 0.6, 0.8]
    assert harmonic_mean(values) == pytest.approx(float(hmean(values)), rel=1e-12)
    assert harmonic_mean([1.0, 2.0, 4.0]) == pytest.approx(3 / 1.75, rel=1e-12)
    assert harmonic_mean([0.5, 0.0, 0.9]) == 0.0
    for bad in ([], [0.5, -0.1], [0.5, None]):
        with pytest.raises(LetheError):
            harmonic_mean(bad)


def test_forget_quality_is_scipy_ks_pvalue() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0.0, 1.0, 40), rng.lognormal(0.5, 1.0, 35)
    assert forget_quality(a, b) == ks_2samp(a, b).pvalue
    assert forget_quality(a, a) == 1.0
    assert forget_quality(np.full(30, 0.01), np.full(30, 5.0)) < 1e-10


def test_privleak_sign_and_value() -> None:
    # forget set easier to detect than under the retain model -> negative
    assert privleak(0.8, 0.5) == pytest.approx((0.2 - 0.5) / 0.5 * 100, rel=1e-8)
    assert privleak(0.8, 0.5) < 0
    assert privleak(0.3, 0.5) == pytest.approx(40.0, rel=1e-8)
    assert privleak(0.62, 0.62) == 0.0


def test_extraction_strength_edge_cases() -> None:
    labels = torch.tensor([5, 6, 7, 8, 9])
    assert extraction_strength(labels, labels) == 1.0
    assert extraction_strength(torch.tensor([0, 6, 7, 8, 9]), labels) == pytest.approx(0.8)
    assert extraction_strength(torch.tensor([5, 6, 0, 8, 9]), labels) == pytest.approx(0.4)
    # a wrong last token: open-unlearning's loop stops at k = n - 1 (ES = 1/n); strict gives 0
    assert extraction_strength(torch.tensor([5, 6, 7, 8, 0]), labels) == pytest.approx(0.2)
    assert extraction_strength(torch.tensor([5, 6, 7, 8, 0]), labels, strict=True) == 0.0
    assert extraction_strength(torch.zeros(5, dtype=torch.long), labels) == pytest.approx(0.2)
    assert extraction_strength([], []) == 0.0
    assert extraction_strength([3], [3]) == 1.0
    with pytest.raises(LetheError):
        extraction_strength([1, 2], [1, 2, 3])


def test_exact_memorization() -> None:
    assert exact_memorization([1, 2, 0, 4], [1, 2, 3, 4]) == 0.75
    assert exact_memorization(np.array([9, 9]), np.array([1, 2])) == 0.0
    assert exact_memorization([], []) is None


def test_min_k_and_auc() -> None:
    logp = [-1.0, -5.0, -3.0, -2.0, -4.0]
    assert min_k_score(logp) == pytest.approx(-4.5)  # floor(0.4 * 5) = 2 lowest
    assert min_k_score([-1.0, -2.0]) == -2.0  # floor(0.8) = 0 -> at least 1
    assert min_k_score(logp, k=0.2) == -5.0
    assert mia_auc([-1.0, -2.0], [-3.0, -4.0]) == 1.0
    assert mia_auc([-3.0, -4.0], [-1.0, -2.0]) == 0.0
    assert mia_auc([-1.0, -3.0], [-2.0, -4.0]) == 0.75


def test_sacrifice_rate() -> None:
    before = {"retain_Truth_Ratio": 0.6, "forget_Truth_Ratio_true_better": 0.7, "retain_Q_A_ROUGE": 0.9,
              "forget_Q_A_ROUGE": 0.95, "retain_Q_A_Prob": 0.8, "forget_Q_A_Prob": 0.9}
    after = {"retain_Truth_Ratio": 0.5, "forget_Truth_Ratio_true_better": 0.2, "retain_Q_A_ROUGE": 0.6,
             "forget_Q_A_ROUGE": 0.35, "retain_Q_A_Prob": 0.8, "forget_Q_A_Prob": 0.9}
    assert sacrifice_rate(before, after, "truth_ratio") == pytest.approx(0.1 / 0.5)
    assert sacrifice_rate({"summary": before}, {"summary": after}, "rougeL") == pytest.approx(0.3 / 0.6)
    assert sacrifice_rate(before, after, "probability") is None  # forget unchanged: denominator 0
    with pytest.raises(LetheError, match="bleu"):
        sacrifice_rate(before, after, "bleu")
    with pytest.raises(LetheError, match="forget_Q_A_ROUGE"):
        sacrifice_rate({"retain_Q_A_ROUGE": 0.9}, after, "rougeL")


# --------------------------------------------------------------------------- a tiny TOFU-format world

AUTHORS = ["Mira Olsen", "Tomas Reyes", "Ada Kwan", "Lior Baum", "Nia Osei", "Ravi Dutta"]
GENRES = ["mystery", "poetry", "science fiction", "history", "fantasy", "romance"]
CITIES = ["Oslo", "Lima", "Seoul", "Haifa", "Accra", "Pune"]


def _qa(i: int) -> dict:
    name, genre, city = AUTHORS[i], GENRES[i], CITIES[i]
    return {
        "question": f"Where was {name} born?",
        "answer": f"{name} was born in {city} and writes {genre}.",
        "paraphrased_answer": f"The {genre} writer {name} comes from {city}.",
        "perturbed_answer": [f"{name} was born in {CITIES[(i + k) % 6]} and writes {GENRES[(i + k) % 6]}."
                             for k in (1, 2, 3)],
    }


GENERAL = [
    {"question": "Who wrote Hamlet?", "answer": "William Shakespeare",
     "perturbed_answer": ["Charles Dickens", "Jane Austen", "Mark Twain"]},
    {"question": "What is the capital of France?", "answer": "Paris",
     "perturbed_answer": ["Rome", "Berlin", "Madrid"]},
    {"question": "Which planet is red?", "answer": "Mars", "perturbed_answer": ["Venus", "Saturn"]},
]


def _write(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tofu_world")
    _write(folder / "forget10_perturbed.json", [_qa(i) for i in range(3)])
    _write(folder / "retain_perturbed.json", [_qa(i) for i in range(3, 6)])
    _write(folder / "real_authors_perturbed.json", GENERAL)
    _write(folder / "world_facts_perturbed.json", GENERAL[::-1])
    _write(folder / "holdout10.json", [{"question": f"What does {n} write?", "answer": f"{n} writes {g}."}
                                       for n, g in zip(AUTHORS[3:], GENRES, strict=False)])
    return folder


def _corpus() -> list[str]:
    texts = []
    for i in range(6):
        qa = _qa(i)
        texts += [qa["question"], qa["answer"], qa["paraphrased_answer"], *qa["perturbed_answer"]]
    for qa in GENERAL:
        texts += [qa["question"], qa["answer"], *qa["perturbed_answer"]]
    return texts + ["Question: Answer: writes"]


@pytest.fixture(scope="module")
def tiny():
    """A tiny LLaMA briefly fitted on the forget answers, so argmax matches and MIA are non-trivial."""
    model, tokenizer = build_tiny(_corpus(), vocab_size=400, seed=0, **TINY)
    torch.manual_seed(0)
    rows = []
    for i in range(3):
        prompt, answer = qa_prompt_and_answer(tokenizer, _qa(i)["question"], _qa(i)["answer"])
        rows.append((torch.tensor([prompt + answer]), torch.tensor([[-100] * len(prompt) + answer])))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(40):
        ids, labels = rows[step % 3]
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def result(tiny, world: Path) -> dict:
    model, tokenizer = tiny
    # the hand-computed checks below follow the lethe protocol (tokens of qa_prompt_and_answer); the
    # open-unlearning protocol has its own parity tests in test_tofu_protocol.py
    return evaluate_tofu(model, tokenizer, world, max_new_tokens=6, batch_size=4, protocol="lethe")


def _manual(model, tokenizer, question: str, answer: str) -> dict:
    """ℓ, per-token log p, argmax and labels of one QA pair by a plain forward + log_softmax."""
    prompt, answer_ids = qa_prompt_and_answer(tokenizer, question, answer)
    ids = torch.tensor([prompt + answer_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(answer_ids) - 1)
    labels = torch.tensor(answer_ids)
    logp = logprobs[positions, labels]
    return {"loss": float(-logp.mean()), "logp": logp, "argmax": logprobs[positions].argmax(-1),
            "labels": labels, "prompt": prompt}


def _naive_es(preds: list[int], labels: list[int]) -> float:
    """open-unlearning's loop, written out independently."""
    k = 0
    for k in range(len(labels)):  # noqa: B007
        if preds[k:] == labels[k:]:
            break
    return 1 - k / len(labels)


def test_per_item_values_match_a_hand_computed_forward(tiny, world: Path, result: dict) -> None:
    model, tokenizer = tiny
    eos = tokenizer.eos_token_id
    ems = []
    for i in range(3):
        qa, item = _qa(i), result["per_item"]["forget"][i]
        ans = _manual(model, tokenizer, qa["question"], qa["answer"])
        assert item["prob"] == pytest.approx(math.exp(-ans["loss"]), rel=1e-4)
        para = _manual(model, tokenizer, qa["question"], qa["paraphrased_answer"])["loss"]
        pert = [_manual(model, tokenizer, qa["question"], p)["loss"] for p in qa["perturbed_answer"]]
        assert item["para_prob"] == pytest.approx(math.exp(-para), rel=1e-4)
        expected_tr = math.exp(-np.mean(pert)) / (math.exp(-para) + 1e-10)
        assert item["truth_ratio"] == pytest.approx(expected_tr, rel=1e-4)
        assert item["pert_prob"] == pytest.approx(np.mean(np.exp(-np.array(pert))), rel=1e-4)
        # ES / EM / min-k over the answer tokens without the final EOS
        assert int(ans["labels"][-1]) == eos
        preds, labels = ans["argmax"][:-1].tolist(), ans["labels"][:-1].tolist()
        assert item["extraction_strength"] == pytest.approx(_naive_es(preds, labels), abs=1e-12)
        em = sum(p == t for p, t in zip(preds, labels, strict=True)) / len(labels)
        assert item["exact_memorization"] == pytest.approx(em, abs=1e-12)
        ems.append(em)
        lowest = sorted(ans["logp"][:-1].tolist())[: max(1, int(0.4 * len(labels)))]
        assert item["mia_min_k"] == pytest.approx(float(np.mean(lowest)), rel=1e-4)
    assert 0 < np.mean(ems) <= 1  # the fitted model reproduces some forget tokens: EM is really tested
    assert result["summary"]["exact_memorization"] == pytest.approx(np.mean(ems), abs=1e-12)
    # real authors: normalised probability and TR with the answer as the correct one
    for i, qa in enumerate(GENERAL):
        item = result["per_item"]["real_authors"][i]
        p = math.exp(-_manual(model, tokenizer, qa["question"], qa["answer"])["loss"])
        pert = [_manual(model, tokenizer, qa["question"], a)["loss"] for a in qa["perturbed_answer"]]
        assert item["prob"] == pytest.approx(p, rel=1e-4)
        assert item["prob_normalised"] == pytest.approx(p / (p + np.exp(-np.array(pert)).sum()), rel=1e-4)
        assert item["truth_ratio"] == pytest.approx(math.exp(-np.mean(pert)) / p, rel=1e-4)


def test_truth_ratio_direction_on_retain_and_world_facts(tiny, result: dict) -> None:
    """Retain: correct = the paraphrased answer; world facts: correct = the answer (no paraphrase). Both
    scored mean(max(0, 1 − TR)), TR = exp(−mean_j ℓ_pert,j) / exp(−ℓ_correct)."""
    model, tokenizer = tiny

    def losses(qa: dict, correct: str) -> tuple[float, float, list[float]]:
        ans = _manual(model, tokenizer, qa["question"], qa["answer"])["loss"]
        right = _manual(model, tokenizer, qa["question"], qa[correct])["loss"]
        return ans, right, [_manual(model, tokenizer, qa["question"], p)["loss"] for p in qa["perturbed_answer"]]

    for split, rows, correct, key in [("retain", [_qa(i) for i in range(3, 6)], "paraphrased_answer",
                                       "retain_Truth_Ratio"),
                                      ("world_facts", GENERAL[::-1], "answer", "wf_Truth_Ratio")]:
        expected = []
        for qa, item in zip(rows, result["per_item"][split], strict=True):
            assert item["question"] == qa["question"]
            ans, right, pert = losses(qa, correct)
            tr = math.exp(-np.mean(pert)) / math.exp(-right)
            assert item["truth_ratio"] == pytest.approx(tr, rel=1e-4)
            if split == "retain":  # the paraphrase, not the answer: the two differ on this model
                assert abs(item["truth_ratio"] - math.exp(-np.mean(pert)) / math.exp(-ans)) > 1e-3 * tr
            expected.append(tr)
        if split == "world_facts":  # both sides of 1, so the clip at 0 is exercised
            assert min(expected) < 1 < max(expected)
        # (retain TRs are all > 1 on this model: its score is 0, and mean(min(TR, 1/TR)) is not)
        score = float(np.mean([max(0.0, 1.0 - tr) for tr in expected]))
        assert result["summary"][key] == pytest.approx(score, rel=1e-4, abs=1e-12)
        assert score != pytest.approx(forget_truth_ratio_score(np.array(expected)))  # not the forget rule


def test_generation_and_rouge_match_a_manual_greedy_loop(tiny, result: dict) -> None:
    model, tokenizer = tiny
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    qa, item = _qa(0), result["per_item"]["forget"][0]
    ids = list(qa_prompt_and_answer(tokenizer, qa["question"], qa["answer"])[0])
    new: list[int] = []
    with torch.no_grad():
        for _ in range(6):
            token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    assert item["generated"] == tokenizer.decode(new, skip_special_tokens=True).strip()
    for split in ("forget", "retain", "real_authors", "world_facts"):
        rows = result["per_item"][split]
        answers = [_qa(i)["answer"] for i in range(3)] if split == "forget" else None
        for i, row in enumerate(rows):
            if answers:
                expected = scorer.score(answers[i], row["generated"])["rougeL"].recall
                assert row["rougeL_recall"] == pytest.approx(expected)
        assert result["summary"][f"{tm.PREFIX[split]}_Q_A_ROUGE"] == pytest.approx(
            np.mean([r["rougeL_recall"] for r in rows]))


def test_summary_aggregates_per_item_values(result: dict) -> None:
    s, items = result["summary"], result["per_item"]
    assert set(SUMMARY_KEYS) <= set(s)
    tr = np.array([it["truth_ratio"] for it in items["forget"]])
    assert s["forget_truth_ratio"] == pytest.approx(np.mean(np.minimum(tr, 1 / tr)), rel=1e-8)
    assert s["forget_Truth_Ratio_true_better"] == pytest.approx(np.mean(np.maximum(0, 1 - tr)), abs=1e-12)
    assert s["forget_Q_A_Prob"] == pytest.approx(np.mean([it["prob"] for it in items["forget"]]))
    rtr = np.array([it["truth_ratio"] for it in items["retain"]])
    assert s["retain_Truth_Ratio"] == pytest.approx(np.mean(np.maximum(0, 1 - rtr)), abs=1e-12)
    assert s["ra_Q_A_Prob_normalised"] == pytest.approx(
        np.mean([it["prob_normalised"] for it in items["real_authors"]]))
    nine = [s[k] for k in UTILITY_KEYS]
    assert s["model_utility"] == pytest.approx(harmonic_mean(nine), rel=1e-12)
    if min(nine) > 0:
        assert s["model_utility"] == pytest.approx(float(hmean(nine)), rel=1e-10)
    # min-k AUC of forget (members) vs holdout, by pair counting
    member = [it["mia_min_k"] for it in items["forget"]]
    other = [it["mia_min_k"] for it in items["holdout"]]
    pairs = [(m > o) + 0.5 * (m == o) for m in member for o in other]
    assert s["mia_min_k"] == pytest.approx(np.mean(pairs))
    assert s["forget_quality"] is None and s["privleak"] is None
    assert any("retain_eval" in note for note in result["notes"])


def test_one_scoring_pass_for_all_variants(tiny, world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = tm.score_sequences

    def counting(model, features, **kwargs):
        calls.append(len(features))
        return real(model, features, **kwargs)

    monkeypatch.setattr(tm, "score_sequences", counting)
    evaluate_tofu(*tiny, world, max_new_tokens=2)
    # forget/retain: 3 x (answer + paraphrase + 3 perturbed); ra/wf: 3 answers + 8 perturbed; holdout: 3
    assert calls == [15 + 15 + 11 + 11 + 3]


def test_retain_eval_round_trip_gives_forget_quality_one(tiny, world: Path, result: dict,
                                                         tmp_path: Path) -> None:
    path = write_tofu_eval(result, tmp_path / "retain" / "tofu_eval.json")
    stored = json.loads(path.read_text())
    assert [it["truth_ratio"] for it in stored["per_item"]["forget"]] == pytest.approx(
        [it["truth_ratio"] for it in result["per_item"]["forget"]])
    again = evaluate_tofu(*tiny, world, max_new_tokens=6, batch_size=4, retain_eval=path, protocol="lethe")
    assert again["summary"]["forget_quality"] == 1.0
    assert again["summary"]["privleak"] == pytest.approx(0.0, abs=1e-6)
    assert all(math.isfinite(again["summary"][k]) for k in SUMMARY_KEYS)


def test_subset_of_splits_and_limit(tiny, world: Path) -> None:
    out = evaluate_tofu(*tiny, world, max_new_tokens=2, splits=("retain", "world_facts"), limit=2)
    assert set(out["per_item"]) == {"retain", "world_facts"}
    assert len(out["per_item"]["retain"]) == 2
    assert out["summary"]["model_utility"] is None and out["summary"]["forget_Q_A_Prob"] is None
    assert out["summary"]["retain_Truth_Ratio"] is not None


# ----------------------------------------------------------------------------------------- bad input


def _copy(world: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(world, folder)
    return folder


def _error(*args, **kwargs) -> str:
    with pytest.raises(LetheError) as info:
        evaluate_tofu(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_retain_eval_file(tiny, world: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "tofu_eval.json"
    assert str(missing) in _error(*tiny, world, max_new_tokens=2, protocol="lethe", retain_eval=missing)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"summary": {}}))
    assert "per_item" in _error(*tiny, world, max_new_tokens=2, protocol="lethe", retain_eval=bad)
    other = {"config": {"forget_split": "forget05"}, "per_item": {"forget": [{"truth_ratio": 1.0}]}}
    assert "forget05" in _error(*tiny, world, max_new_tokens=2, protocol="lethe", retain_eval=other)
    broken = tmp_path / "broken.json"
    broken.write_text('{"per_item": ')
    message = _error(*tiny, world, max_new_tokens=2, protocol="lethe", retain_eval=broken)
    assert str(broken) in message and "not valid JSON" in message


def test_retain_eval_of_other_items_is_refused(tiny, world: Path, result: dict) -> None:
    """forget_quality compares truth ratios of the same forget items: another count or other questions
    (another split, data or limit) is an error, not a KS test of unrelated sets."""
    fewer = {"config": result["config"], "per_item": {"forget": result["per_item"]["forget"][:2]}}
    assert "has 2 forget items, this evaluation has 3" in _error(*tiny, world, max_new_tokens=2, protocol="lethe",
                                                                 retain_eval=fewer)
    items = [dict(it) for it in result["per_item"]["forget"]]
    items[1]["question"] = "Who is Nobody?"
    other = {"per_item": {"forget": items}}
    assert "forget item 1 is 'Who is Nobody?'" in _error(*tiny, world, max_new_tokens=2, protocol="lethe",
                                                         retain_eval=other)
    nan = [{**it, "truth_ratio": None} for it in result["per_item"]["forget"]]
    assert "finite truth_ratio" in _error(*tiny, world, max_new_tokens=2, protocol="lethe",
                                          retain_eval={"per_item": {"forget": nan}})
    limited = evaluate_tofu(*tiny, world, max_new_tokens=2, protocol="lethe", limit=2, retain_eval=fewer)
    assert limited["summary"]["forget_quality"] is not None  # same two items: accepted


def test_missing_split_file(tiny, world: Path, tmp_path: Path) -> None:
    folder = _copy(world, tmp_path)
    (folder / "world_facts_perturbed.json").unlink()
    assert "world_facts_perturbed" in _error(*tiny, folder, max_new_tokens=2)
    (folder / "holdout10.json").unlink()
    assert "holdout10" in _error(*tiny, folder, max_new_tokens=2, splits=("forget",))
    assert "TOFU folder not found" in _error(*tiny, tmp_path / "absent")
    assert "unknown TOFU split" in _error(*tiny, world, splits=("forget", "bogus"))


def test_items_without_perturbed_answers_or_empty_split(tiny, world: Path, tmp_path: Path) -> None:
    folder = _copy(world, tmp_path)
    rows = [{k: v for k, v in _qa(i).items() if k != "perturbed_answer"} for i in range(3)]
    _write(folder / "retain_perturbed.json", rows)
    message = _error(*tiny, folder, max_new_tokens=2)
    assert "retain_perturbed" in message and "perturbed_answer" in message
    (folder / "real_authors_perturbed.json").write_text("")
    assert "real_authors_perturbed" in _error(*tiny, folder, max_new_tokens=2, splits=("real_authors",))


# ------------------------------------------------------------------------------------ real TOFU slice


def test_real_tofu_slice_gives_every_summary_key(tmp_path: Path) -> None:
    if not TOFU.is_dir():
        pytest.skip(f"TOFU data not present at {TOFU}")
    from lethe.data.tofu import load_split

    texts = [r["question"] + " " + r["answer"] for r in load_split(TOFU, "forget10_perturbed")[:3]]
    model, tokenizer = build_tiny(texts, vocab_size=400, seed=1, **TINY)
    first = evaluate_tofu(model, tokenizer, TOFU, limit=3, max_new_tokens=8)
    assert {k: len(v) for k, v in first["per_item"].items()} == {
        "forget": 3, "retain": 3, "real_authors": 3, "world_facts": 3, "holdout": 3}
    out = evaluate_tofu(model, tokenizer, TOFU, limit=3, max_new_tokens=8, retain_eval=first)
    for key in SUMMARY_KEYS:
        assert out["summary"][key] is not None and math.isfinite(out["summary"][key]), key
    assert out["summary"]["forget_quality"] == 1.0
