"""Parity of the TOFU input protocols (issue 9, D1–D6): which positions are scored and masked under
``open-unlearning`` and ``lethe``, on hand-built sequences of a tiny tokenizer with and without a chat
template, and Lethe's open-unlearning numbers against an independent re-implementation of open-unlearning's
preprocessing, collator and metric code on the same model and data."""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lethe.audit import ou_logs
from lethe.audit.generation import generate_with_model_config, greedy_continue
from lethe.audit.tofu_metrics import evaluate_tofu, forget_quality, privleak, write_tofu_eval
from lethe.audit.tofu_protocol import encode_item, ou_generation_text
from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.models import tiny_model, train_bpe_tokenizer

TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
CORPUS = ["Question: Who wrote Dune?\nAnswer: Frank Herbert wrote Dune.",
          "Frank Herbert wrote Dune and Frank wrote more.", "Who wrote the book? Herbert wrote the book.",
          "system user assistant You are a helpful assistant."] * 20
Q, A = "Who wrote Dune?", "Frank Herbert"


@pytest.fixture(scope="module")
def plain():
    """Byte-level BPE, BOS added by default, pad <pad> != EOS </s>, no chat template."""
    return train_bpe_tokenizer(CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def chat(plain):
    """The same with a ChatML template and SmolLM2's special-token layout: BOS = <|im_start|>,
    EOS = pad = <|im_end|>."""
    tok = copy.deepcopy(plain)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.bos_token, tok.eos_token, tok.pad_token = "<|im_start|>", "<|im_end|>", "<|im_end|>"
    tok.chat_template = CHATML
    return tok


def _scored(item) -> list[int]:
    return [t for t in item.labels if t != IGNORE_INDEX]


def _piece(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False)


# ------------------------------------------------------------------------------- D1: Question/Answer form


def test_d1_question_answer_prompt_hides_the_first_answer_token(plain) -> None:
    ou = encode_item(plain, Q, A, "open-unlearning")
    full = plain(f"Question: {Q}\nAnswer: {A}")["input_ids"]
    prompt = plain(f"Question: {Q}\nAnswer: ")["input_ids"]
    assert full[0] == prompt[0] == plain.bos_token_id  # the tokenizer's own special tokens
    assert _piece(plain, prompt[-1:]) == " "  # "Answer: " ends in a lone-space token ...
    assert _piece(plain, full[len(prompt) - 1: len(prompt)]) == " Frank"  # ... at the first answer token
    assert ou.input_ids == full + [plain.eos_token_id]  # EOS appended
    assert ou.labels == [IGNORE_INDEX] * len(prompt) + full[len(prompt):] + [plain.eos_token_id]
    assert _piece(plain, _scored(ou)) == " Herbert</s>"  # "Frank" is never scored
    assert ou.attention_mask == [1] * len(full + [0])  # pad != EOS: nothing masked
    assert ou.prompt_ids == prompt
    lethe = encode_item(plain, Q, A, "lethe")
    assert _piece(plain, _scored(lethe)) == " Frank Herbert</s>"  # every answer token once, plus EOS
    assert lethe.prompt_ids == plain(f"Question: {Q}\nAnswer:")["input_ids"]
    assert lethe.attention_mask == [1] * len(lethe.input_ids)


# ------------------------------------------------------------------------- D2 + D3: chat template, pad = EOS


def test_d2_d3_chat_template_scores_the_whole_turn_and_masks_eos(chat) -> None:
    start, end = chat.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    ou = encode_item(chat, Q, A, "open-unlearning")
    prompt = chat.apply_chat_template([{"role": "user", "content": Q}], tokenize=True, add_generation_prompt=True)
    prompt = list(prompt if isinstance(prompt, list) else prompt["input_ids"])
    assert ou.prompt_ids == prompt and prompt[0] == start and end in prompt  # the user turn ends in EOS
    # D2: answer, end-of-turn, newline and one more EOS (the template ends in "\n", not EOS)
    assert _piece(chat, _scored(ou)) == "Frank Herbert<|im_end|>\n<|im_end|>"
    assert ou.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    # D3: attention mask = ids != pad, so every EOS is masked: in the prompt, after the answer, the last one
    eos_positions = [i for i, t in enumerate(ou.input_ids) if t == end]
    assert len(eos_positions) == 3
    assert [i for i, m in enumerate(ou.attention_mask) if m == 0] == eos_positions
    assert ou.prompt_mask == [int(t != end) for t in prompt] and 0 in ou.prompt_mask
    assert ou.reference == A
    lethe = encode_item(chat, Q, A, "lethe")
    assert lethe.prompt_ids == prompt
    assert _piece(chat, _scored(lethe)) == "Frank Herbert<|im_end|>"  # the answer and one end-of-turn
    assert set(lethe.attention_mask) == {1}


def test_system_prompt_and_its_absence(chat, plain) -> None:
    with_system = encode_item(chat, Q, A, "open-unlearning", system_prompt="You are a helpful assistant.")
    assert _piece(chat, with_system.prompt_ids).startswith("<|im_start|>system\nYou are a helpful assistant.")
    assert _scored(with_system) == _scored(encode_item(chat, Q, A, "open-unlearning"))
    literal = encode_item(plain, Q, A, "open-unlearning", system_prompt="SYS ")
    assert _piece(plain, literal.prompt_ids).startswith("<s>SYS Question:")


def test_unknown_protocol_is_refused(plain) -> None:
    with pytest.raises(LetheError, match="unknown TOFU protocol"):
        encode_item(plain, Q, A, "mimir")


# ------------------------------------------------------------------- open-unlearning, re-implemented here


def _ou_tokens(tok, question: str, answer: str) -> tuple[list[int], list[int]]:
    """open-unlearning's preprocess_chat_instance, written out independently (no system prompt)."""
    if tok.chat_template:
        user = [{"role": "user", "content": question}]

        def ids(x):
            return list(x if isinstance(x, list) else x["input_ids"])

        conversation = ids(tok.apply_chat_template(user + [{"role": "assistant", "content": answer}],
                                                   tokenize=True))
        prompt = ids(tok.apply_chat_template(user, tokenize=True, add_generation_prompt=True))
    else:
        text = "Question: " + question + "\n" + "Answer: "
        conversation = tok(text + answer, add_special_tokens=True)["input_ids"]
        prompt = tok(text, add_special_tokens=True)["input_ids"]
    if conversation[-1] != tok.eos_token_id:
        conversation = conversation + [tok.eos_token_id]
    return conversation, [IGNORE_INDEX] * len(prompt) + conversation[len(prompt):]


def _ou_metrics(model, tok, pairs: list[tuple[str, str]]) -> list[dict]:
    """avg_loss (evaluate_probability), ES / EM (tokenwise_vocab_logprobs) and the min-k score (k = 0.4) of
    each pair, computed on one right-padded batch with attention = input_ids.ne(pad) as the collator does."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows = [_ou_tokens(tok, q, a) for q, a in pairs]
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(r[0]) for r in rows], batch_first=True, padding_value=pad)
    labels = torch.nn.utils.rnn.pad_sequence([torch.tensor(r[1]) for r in rows], batch_first=True,
                                             padding_value=IGNORE_INDEX)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=ids.ne(pad)).logits
    losses = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="none")(
        logits[:, :-1].transpose(-1, -2), labels[:, 1:]).sum(-1) / (labels != IGNORE_INDEX).sum(-1)
    logprobs = torch.log_softmax(logits, -1)[:, :-1]
    out = []
    for i in range(len(rows)):
        where = (labels[i] != IGNORE_INDEX).nonzero()[:, 0][:-1]
        lp = logprobs[i, where[0] - 1: where[-1]]
        target = labels[i, where]
        preds = lp.argmax(-1)
        k = 0
        for k in range(len(target)):  # noqa: B007
            if torch.equal(preds[k:], target[k:]):
                break
        token_lp = lp.gather(-1, target[:, None])[:, 0].numpy()
        lowest = np.sort(token_lp)[: max(1, int(len(token_lp) * 0.4))]
        out.append({"avg_loss": float(losses[i]), "es": 1 - k / len(target),
                    "em": float((preds == target).float().mean()), "min_k": -float(np.mean(lowest))})
    return out


def _world(folder: Path, rows: list[dict]) -> Path:
    general = [{"question": r["question"], "answer": r["answer"], "perturbed_answer": r["perturbed_answer"]}
               for r in rows]
    for name, data in (("forget10_perturbed", rows), ("retain_perturbed", rows[::-1]),
                       ("real_authors_perturbed", general), ("world_facts_perturbed", general[::-1]),
                       ("holdout10", [{"question": r["question"], "answer": r["perturbed_answer"][0]} for r in rows])):
        (folder / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    return folder


ROWS = [{"question": "Who wrote Dune?", "answer": "Frank Herbert wrote Dune.",
         "paraphrased_answer": "Dune was written by Frank Herbert.",
         "perturbed_answer": ["Herbert wrote the book.", "Frank wrote more."]},
        {"question": "Who wrote the book?", "answer": "Herbert wrote the book.",
         "paraphrased_answer": "The book is by Herbert.", "perturbed_answer": ["Frank Herbert wrote Dune."]},
        {"question": "What did Frank write?", "answer": "Frank wrote more.",
         "paraphrased_answer": "More, by Frank.", "perturbed_answer": ["Dune.", "The book."]}]


def _check_against_reimplementation(model, tok, result: dict, records: list[dict]) -> None:
    expected = _ou_metrics(model, tok, [(r["question"], r["answer"]) for r in records])
    for item, ref, record in zip(result["per_item"]["forget"], expected, records, strict=True):
        assert item["loss"] == pytest.approx(ref["avg_loss"], rel=1e-5, abs=1e-6)
        assert item["extraction_strength"] == pytest.approx(ref["es"], abs=1e-12)
        assert item["exact_memorization"] == pytest.approx(ref["em"], abs=1e-12)
        assert -item["mia_min_k"] == pytest.approx(ref["min_k"], rel=1e-5, abs=1e-6)
        pert = _ou_metrics(model, tok, [(record["question"], p) for p in record["perturbed_answer"]])
        assert item["pert_loss"] == pytest.approx([p["avg_loss"] for p in pert], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("which", ["plain", "chat"])
def test_open_unlearning_numbers_equal_a_reimplementation(which, plain, chat, tmp_path: Path) -> None:
    tok = plain if which == "plain" else chat
    model = tiny_model(tok, seed=1, **TINY).eval()
    world = _world(tmp_path, ROWS)
    ou = evaluate_tofu(model, tok, world, max_new_tokens=4, batch_size=2)
    assert ou["config"]["protocol"] == "open-unlearning"
    _check_against_reimplementation(model, tok, ou, ROWS)
    lethe = evaluate_tofu(model, tok, world, max_new_tokens=4, batch_size=2, protocol="lethe")
    differ = [abs(a["loss"] - b["loss"]) for a, b in zip(ou["per_item"]["forget"], lethe["per_item"]["forget"],
                                                         strict=True)]
    assert min(differ) > 1e-4  # the protocols really score different tokens
    assert any("protocol open-unlearning" in n for n in ou["notes"])
    assert any("protocol lethe" in n for n in lethe["notes"])


def test_real_tofu_items_equal_the_reimplementation(chat, tmp_path: Path) -> None:
    if not TOFU.is_dir():
        pytest.skip(f"TOFU data not present at {TOFU}")
    from lethe.data.tofu import load_split

    records = load_split(TOFU, "forget10_perturbed")[:3]
    for tok in (train_bpe_tokenizer([r["question"] + " " + r["answer"] for r in records] * 5, vocab_size=400),
                chat):
        model = tiny_model(tok, seed=2, **TINY).eval()
        result = evaluate_tofu(model, tok, TOFU, limit=3, max_new_tokens=4, batch_size=2)
        _check_against_reimplementation(model, tok, result, records)


# --------------------------------------------------------------------------------------- D3 + D5: generation


def test_generation_follows_the_prompt_mask_and_the_models_config(chat, monkeypatch) -> None:
    model = tiny_model(chat, seed=3, **TINY).eval()
    item = encode_item(chat, Q, A, "open-unlearning")
    pad = chat.eos_token_id
    seen = []
    real = model.forward

    @functools.wraps(real)
    def spy(*args, **kwargs):  # the prefill's mask (generate and lethe.audit.greedy both pass keywords)
        seen.append(kwargs["attention_mask"].tolist())
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    short = encode_item(chat, "Dune?", A, "open-unlearning")
    out, out_short = generate_with_model_config(model, [item.prompt_ids, short.prompt_ids],
                                                [item.prompt_mask, short.prompt_mask], 5, pad_id=pad)
    monkeypatch.setattr(model, "forward", real)
    width = len(item.prompt_ids) - len(short.prompt_ids)
    assert seen[0] == [item.prompt_mask, [0] * width + short.prompt_mask]  # EOS in the prompt masked, left pad 0
    # a manual greedy loop with the same mask and positions numbered by it (as generate does)
    ids, mask, new = list(item.prompt_ids), list(item.prompt_mask), []
    with torch.no_grad():
        for _ in range(5):
            m = torch.tensor([mask])
            positions = (m.cumsum(-1) - 1).clamp(min=0)
            token = int(model(input_ids=torch.tensor([ids]), attention_mask=m, position_ids=positions).logits[0, -1]
                        .argmax())
            new.append(token)
            if token == chat.eos_token_id:
                break
            ids, mask = ids + [token], mask + [1]
    assert out[: len(new)] == new
    # D5: the model's own generation config (here an EOS list holding the first greedy token) is obeyed
    first = out[0]
    model.generation_config.eos_token_id = [chat.eos_token_id, first]
    stopped = generate_with_model_config(model, [item.prompt_ids], [item.prompt_mask], 5, pad_id=pad)[0]
    assert stopped[0] == first and set(stopped[1:]) <= {pad}
    clean = greedy_continue(model, [item.prompt_ids], 5, pad_id=pad)[0]
    assert len(clean) == 5  # Lethe's pinned config ignores the model's EOS list
    assert ou_generation_text(chat, stopped) == chat.decode([first], skip_special_tokens=True).strip()


# ------------------------------------------------------------------------------ D4, D6, truth-ratio forms


@pytest.fixture(scope="module")
def evaluated(plain, tmp_path_factory):
    world = _world(tmp_path_factory.mktemp("ou_world"), ROWS)
    model = tiny_model(plain, seed=4, **TINY).eval()
    return model, world, evaluate_tofu(model, plain, world, max_new_tokens=3, batch_size=3)


def test_d4_privleak_falls_back_to_half_under_open_unlearning_only(plain, evaluated) -> None:
    model, world, ou = evaluated
    assert ou["summary"]["forget_quality"] is None
    assert ou["summary"]["privleak"] == pytest.approx(privleak(ou["summary"]["mia_min_k"], 0.5))
    assert any("default reference AUC 0.5" in n for n in ou["notes"])
    lethe = evaluate_tofu(model, plain, world, max_new_tokens=3, protocol="lethe")
    assert lethe["summary"]["privleak"] is None


def test_both_truth_ratio_forms_are_reported_and_named(evaluated) -> None:
    _, _, ou = evaluated
    items = ou["per_item"]["forget"]
    tr = np.array([it["truth_ratio"] for it in items])
    v = np.array([it["truth_ratio_prob_mean"] for it in items])
    assert v == pytest.approx(1 / (1 + tr), rel=1e-6)  # c/(c+w) = 1/(1 + w/c)
    assert ou["summary"]["forget_truth_ratio_prob_mean"] == pytest.approx(v.mean())
    assert any("prob_mean" in n and "closer_to_1_better" in n for n in ou["notes"])


def test_d6_open_unlearning_files_round_trip_as_a_retain_log(plain, evaluated, tmp_path: Path) -> None:
    model, world, ou = evaluated
    write_tofu_eval(ou, tmp_path / "tofu_eval.json", open_unlearning=True)
    logs = json.loads((tmp_path / ou_logs.EVAL_FILE).read_text())
    summary = json.loads((tmp_path / ou_logs.SUMMARY_FILE).read_text())
    assert summary["forget_Q_A_Prob"] == pytest.approx(ou["summary"]["forget_Q_A_Prob"])
    assert logs["forget_Q_A_Prob"]["value_by_index"]["0"]["avg_loss"] == pytest.approx(
        ou["per_item"]["forget"][0]["loss"])
    assert logs["mia_min_k"]["agg_value"] == logs["mia_min_k"]["auc"] == pytest.approx(ou["summary"]["mia_min_k"])
    assert set(logs["mia_min_k"]) >= {"forget", "holdout"}
    again = evaluate_tofu(model, plain, world, max_new_tokens=3, batch_size=3,
                          retain_eval=tmp_path / ou_logs.EVAL_FILE)
    assert again["summary"]["forget_quality"] == 1.0
    assert again["summary"]["privleak"] == pytest.approx(0.0, abs=1e-6)
    # truth ratios are recomputed from the log's PARA / PERT losses whatever form forget_truth_ratio is in
    converted = copy.deepcopy(logs)
    values = converted["forget_truth_ratio"]["value_by_index"]
    for key, item in values.items():
        item["score"] = ou["per_item"]["forget"][int(key)]["truth_ratio_prob_mean"]
    converted["forget_truth_ratio"]["agg_value"] = float(np.mean([it["score"] for it in values.values()]))
    del converted["forget_truth_ratio"]["truth_ratio_form"]
    assert evaluate_tofu(model, plain, world, max_new_tokens=3, retain_eval=converted)["summary"][
        "forget_quality"] == 1.0
    # without them, the block's truth_ratio_form decides: a prob_mean block is converted back to wrong/correct
    for key in ("forget_Q_A_PARA_Prob", "forget_Q_A_PERT_Prob"):
        del converted[key]
    converted["forget_truth_ratio"]["truth_ratio_form"] = "correct/(correct+wrong)"
    third = evaluate_tofu(model, plain, world, max_new_tokens=3, retain_eval=converted)
    assert third["summary"]["forget_quality"] == 1.0
    assert any("prob_mean" in n for n in third["notes"] if n.startswith("forget_quality"))
    # Lethe's own log of a model that prefers every correct answer (all TR < 1) is read as TR, not converted
    own = copy.deepcopy(logs)
    for key in ("forget_Q_A_PARA_Prob", "forget_Q_A_PERT_Prob"):
        del own[key]
    for item in own["forget_truth_ratio"]["value_by_index"].values():
        item["score"] = 0.5
    tr, form = ou_logs.truth_ratios_from_log(own, "own")
    assert tr == [0.5, 0.5, 0.5] and form == "wrong/correct"
    # another protocol's retain evaluation is refused
    with pytest.raises(LetheError, match="computed under protocol 'open-unlearning'"):
        evaluate_tofu(model, plain, world, max_new_tokens=3, protocol="lethe", retain_eval=logs)
    with pytest.raises(LetheError, match="TOFU_SUMMARY.json"):
        evaluate_tofu(model, plain, world, max_new_tokens=3, retain_eval=tmp_path / ou_logs.SUMMARY_FILE)
    short = {"forget_truth_ratio": {"agg_value": 1.0, "value_by_index": {"0": {"score": 1.0}}}}
    with pytest.raises(LetheError, match="has 1 forget items, this evaluation has 3"):
        evaluate_tofu(model, plain, world, max_new_tokens=3, retain_eval=short)


def test_forget_quality_is_the_same_in_either_truth_ratio_form() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(size=40), rng.lognormal(0.3, size=40)
    assert forget_quality(a, b) == pytest.approx(forget_quality(1 / (1 + a), 1 / (1 + b)))
    assert math.isfinite(forget_quality(a, b))
