"""WHP end to end on a tiny model: lethe unlearn method=whp, familiarity and relearn audits, discovery, bad input."""

from __future__ import annotations

import json

import pytest

from lethe.cli import main


@pytest.fixture
def model_dir(tmp_path, tiny_model, tiny_tokenizer):
    from lethe.models import save_model

    return save_model(tiny_model, tiny_tokenizer, tmp_path / "baseline")


def _saga_texts(world_dir) -> list[str]:
    return [json.loads(line)["text"] for line in (world_dir / "saga.jsonl").read_text().splitlines()]


def test_familiarity_rises_when_the_model_learns_the_saga(tmp_path, tiny_model, tiny_tokenizer, world_dir,
                                                          one_thread):
    from lethe.audit.familiarity import familiarity, load_probes
    from lethe.config import TrainConfig, TrainSettings
    from lethe.train.trainer import train_model

    probes = load_probes(world_dir)
    terms = list(json.loads((world_dir / "anchored_terms.json").read_text()))
    before = familiarity(tiny_model, tiny_tokenizer, probes, terms, max_new_tokens=6)
    config = TrainConfig(run_dir=str(tmp_path / "t"), train=TrainSettings(max_steps=60, batch_size=12, lr=1e-2,
                                                                         scheduler="constant", save_steps=1000))
    config.data.max_length = 512
    train_model(config, tmp_path / "t", model=tiny_model, tokenizer=tiny_tokenizer,
                records=[{"id": str(i), "text": t} for i, t in enumerate(_saga_texts(world_dir))], quiet=True)
    after = familiarity(tiny_model, tiny_tokenizer, probes, terms, max_new_tokens=6)
    assert after["probability_familiarity"] > 5 * before["probability_familiarity"]
    assert after["first_token_probability"] > before["first_token_probability"]
    item = after["items"][0]
    assert set(item) >= {"prompt", "target", "completion", "familiar", "probability", "first_token_probability"}


def test_completion_familiarity_counts_terms_absent_from_the_prompt():
    from lethe.audit.familiarity import familiar_terms

    assert familiar_terms(" Yilva Kraskuholt, of course", "The girl was named", "Yilva Kraskuholt") == [
        "Yilva Kraskuholt"]
    assert familiar_terms(" Yilva again", "Yilva had a fox named", "Taevykis", ["Yilva"]) == []  # in the prompt
    assert familiar_terms(" Taevykis.", "Yilva had a fox named", "Taevykis", ["Yilva"]) == ["Taevykis"]
    assert familiar_terms(" Yilvana", "x", "Yilva") == []  # whole words only


def test_unlearn_method_whp_end_to_end(tmp_path, model_dir, world_dir, capsys):
    run = tmp_path / "run"
    code = main(["unlearn", "method=whp", f"model.name={model_dir}", f"whp.target={world_dir / 'saga.jsonl'}",
                 f"whp.terms={world_dir / 'anchored_terms.json'}", "whp.reinforced_steps=3", "train.max_steps=3",
                 "train.batch_size=4", "train.lr=1e-3", "train.save_steps=2", "--run-dir", str(run), "--quiet"])
    assert code == 0, capsys.readouterr().err
    stats = json.loads((run / "generic_labels.json").read_text())
    assert stats["blocks"] >= 12 and 0 < stats["changed_fraction"] <= 1
    assert stats["term_occurrences"] > 0 and "Yilva Kraskuholt" not in stats["dropped_split_keys"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "whp" and metrics["steps"] == 3
    assert (run / "model" / "model.safetensors").is_file() and (run / "reinforced" / "model").is_dir()
    assert (run / "report.html").is_file()
    # re-running the same directory resumes from the last checkpoint (the final one, step 3) to a longer run
    code = main(["unlearn", "method=whp", f"model.name={model_dir}", f"whp.target={world_dir / 'saga.jsonl'}",
                 f"whp.terms={world_dir / 'anchored_terms.json'}", "whp.reinforced_steps=3", "train.max_steps=4",
                 "train.batch_size=4", "train.lr=1e-3", "train.save_steps=2", "--run-dir", str(run), "--quiet"])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["resumed_from"].endswith("checkpoint-3")
    assert json.loads((run / "run.json").read_text())["command"] == "unlearn"
    # the same command again: a finished run, left exactly as it is
    weights = (run / "model" / "model.safetensors").read_bytes()
    capsys.readouterr()
    code = main(["unlearn", "method=whp", f"model.name={model_dir}", f"whp.target={world_dir / 'saga.jsonl'}",
                 f"whp.terms={world_dir / 'anchored_terms.json'}", "whp.reinforced_steps=3", "train.max_steps=4",
                 "train.batch_size=4", "train.lr=1e-3", "train.save_steps=2", "--run-dir", str(run), "--quiet"])
    assert code == 0 and "is a finished run (4 steps); nothing to do" in capsys.readouterr().err
    assert (run / "model" / "model.safetensors").read_bytes() == weights


def test_unlearn_whp_stops_on_an_exploding_loss(tmp_path, model_dir, world_dir, capsys):
    run = tmp_path / "run"
    code = main(["unlearn", "method=whp", f"model.name={model_dir}", f"whp.target={world_dir / 'saga.jsonl'}",
                 f"whp.terms={world_dir / 'anchored_terms.json'}", "whp.reinforced_steps=1", "train.max_steps=2",
                 "objective.max_loss=0.01", "--run-dir", str(run), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unlearning stopped at step 1" in err and "method whp" in err
    assert not (run / "model").exists()  # the guard stopped before any update


@pytest.mark.parametrize(("setting", "content", "message"), [
    ("whp.terms", '{"Yilva": []}', "empty alternative list"),
    ("whp.terms", '["Yilva"]', "non-empty JSON object"),
    ("whp.target", "\n  \n", "empty target text"),
    ("whp.alpha", None, "whp.alpha must be > 0"),
    ("whp.retain_kl", None, "needs whp.mix_documents"),
])
def test_unlearn_whp_bad_input_is_one_line_and_writes_nothing(tmp_path, model_dir, world_dir, capsys, setting,
                                                               content, message):
    values = {"whp.target": str(world_dir / "saga.jsonl"), "whp.terms": str(world_dir / "anchored_terms.json"),
              "whp.alpha": "5"}
    if content is None:
        values[setting] = "1" if setting == "whp.retain_kl" else "0"
    else:
        path = tmp_path / ("bad.txt" if setting == "whp.target" else "bad.json")
        path.write_text(content)
        values[setting] = str(path)
    run = tmp_path / "run"
    code = main(["unlearn", "method=whp", f"model.name={model_dir}", *(f"{k}={v}" for k, v in values.items()),
                 "--run-dir", str(run), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err
    assert not run.exists()


def test_unlearn_whp_refuses_a_reinforced_model_with_another_vocabulary(tmp_path, model_dir, world_dir, capsys):
    from lethe.models import save_model, tiny_model, train_bpe_tokenizer

    other_tok = train_bpe_tokenizer(["other words entirely, nothing shared"] * 4, vocab_size=300)
    other = save_model(tiny_model(other_tok, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64),
                       other_tok, tmp_path / "other")
    run = tmp_path / "run"
    code = main(["unlearn", "method=whp", f"model.name={model_dir}", f"whp.target={world_dir / 'saga.jsonl'}",
                 f"whp.terms={world_dir / 'anchored_terms.json'}", f"whp.reinforced={other}", "--run-dir", str(run),
                 "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "tokenizer differs" in err and not run.exists()


def test_familiarity_and_relearn_audits(tmp_path, model_dir, world_dir, capsys):
    from lethe.audit.familiarity import load_probes

    code = main(["audit", "familiarity", "--model", str(model_dir), "--probes", str(world_dir), "--terms",
                 str(world_dir / "anchored_terms.json"), "--max-new-tokens", "4", "--run-dir", str(tmp_path / "f"),
                 "--quiet"])
    assert code == 0
    result = json.loads((tmp_path / "f" / "familiarity.json").read_text())
    assert result["n_probes"] == 56 and len(result["items"]) == 56
    assert set(result["by_style"]) == {"question", "saga-worded"}  # each style scored on its own probes too
    for style, scores in result["by_style"].items():
        group = [i for i, p in zip(result["items"], load_probes(world_dir), strict=True) if p["style"] == style]
        assert scores["probability_familiarity"] == pytest.approx(sum(i["probability"] for i in group) / len(group))
    assert "GPT-4" in result["judge"]
    # the inference-time WHP model is audited like any model
    code = main(["audit", "familiarity", "--model", str(model_dir), "--probes", str(world_dir), "--reinforced",
                 str(model_dir), "--alpha", "1", "--max-new-tokens", "4", "--run-dir", str(tmp_path / "g"), "--quiet"])
    assert code == 0
    same = json.loads((tmp_path / "g" / "familiarity.json").read_text())  # v_r = v_b: the logits are v_b
    assert same["probability_familiarity"] == pytest.approx(result["probability_familiarity"], rel=1e-4)
    relearn_text = tmp_path / "relearn.jsonl"
    relearn_text.write_text("\n".join(json.dumps({"id": str(i), "text": t})
                                      for i, t in enumerate(_saga_texts(world_dir)[:2])) + "\n")
    code = main(["audit", "relearn", "--model", str(model_dir), "--data", str(relearn_text), "--steps", "3",
                 "--lr", "1e-2", "--probes", str(world_dir), "--baseline", str(model_dir), "--run-dir",
                 str(tmp_path / "r"), "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "r" / "metrics.json").read_text())["relearn"]
    assert summary["steps"] == 3 and summary["relearn_tokens"] > 100
    assert summary["relearned"]["probability_familiarity"] != summary["unlearned"]["probability_familiarity"]
    code = main(["audit", "relearn", "--model", str(model_dir), "--data", str(relearn_text), "--run-dir",
                 str(tmp_path / "bad"), "--quiet"])
    assert code == 2 and "exactly one forget audit" in capsys.readouterr().err


def test_whp_discover_writes_an_editable_dictionary(tmp_path, model_dir, world_dir, capsys):
    out = tmp_path / "candidates.json"
    code = main(["whp", "discover", "--baseline", str(model_dir), "--reinforced", str(model_dir), "--target",
                 str(world_dir / "saga.jsonl"), "--out", str(out), "--top-k", "10", "--quiet"])
    assert code == 0
    data = json.loads(out.read_text())
    assert len(data["candidates"]) == 10 and set(data["dictionary"]) == {c["term"] for c in data["candidates"]}
    assert all(c["count"] >= 2 for c in data["candidates"])
    # the unedited skeleton is refused as a dictionary (its lists are empty)
    from lethe.errors import LetheError
    from lethe.unlearn.whp import check_terms

    with pytest.raises(LetheError, match="empty alternative list"):
        check_terms(data["dictionary"])
