"""The MemSinks demo end to end, scaled down: outputs, keys, deletion, reuse, headline message."""

import json

import pytest

import lethe
from lethe.cli import main
from lethe.config import load_config
from lethe.data.text import Document
from lethe.demo.memsinks import MemSinksDemoConfig, gap_closed, headline_failure, training_records
from lethe.errors import LetheError

SMALL = ["world_authors=40", "repeated=4", "repetitions=6", "unrepeated=24", "exclude=2", "mia_bootstrap=20",
         "suffix_len=20", "max_length=160", "model.hidden_size=32", "model.num_layers=2", "model.intermediate_size=64",
         "model.vocab_size=512", "train.max_steps=12", "train.batch_size=8", "train.save_steps=1000",
         "train.warmup_steps=2"]


@pytest.mark.slow
def test_small_memsinks_demo_writes_every_number_and_reuses_its_arms(tmp_path, capsys):
    run_dir, metrics = lethe.demo_memsinks([*SMALL, f"run_dir={tmp_path / 'demo'}"])
    for key in ("standard", "memsinks_all", "memsinks_dropout"):  # audited arms
        assert {"repeated_loss", "heldout_loss", "validation_loss"} <= set(metrics[key])
        assert 0 <= metrics[key]["mia"]["loss"]["auc"] <= 1 and "exact_match_rate" in metrics[key]["extraction"]
    assert "memsinks_reference_dropout" not in metrics and not (run_dir / "memsinks_reference").exists()
    s, d = metrics["standard"], metrics["memsinks_dropout"]
    assert metrics["gap_closed"] == pytest.approx(gap_closed(d["repeated_loss"], s["repeated_loss"], s["heldout_loss"]))
    assert metrics["heldout_loss_ratio"] == pytest.approx(d["heldout_loss"] / s["heldout_loss"])
    assert set(metrics["deletion"]) == {"hash"}
    assert metrics["deletion"]["hash"]["excluded_ids"] == [1, 2]
    assert d["heldout_loss"] != pytest.approx(metrics["memsinks_all"]["heldout_loss"])  # the modes differ
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["gap_closed"] == pytest.approx(metrics["gap_closed"]) and "headline_holds" in saved
    assert (run_dir / "figures" / "loss_by_arm.png").is_file()
    assert "MemSinks demo" in (run_dir / "report.html").read_text()
    trained = {arm: json.loads((run_dir / arm / "train_metrics.json").read_text()) for arm in ("standard", "memsinks")}
    # audit-only change and the third arm: the two trained arms are reused, the reference arm is trained
    _, again = lethe.demo_memsinks([*SMALL, "exclude=1", "compare_reference=true", f"run_dir={run_dir}"])
    for arm, before in trained.items():
        assert json.loads((run_dir / arm / "train_metrics.json").read_text()) == before
    assert again["standard"]["repeated_loss"] == pytest.approx(s["repeated_loss"])
    assert {"repeated_loss", "heldout_loss", "gap_closed"} <= set(again["memsinks_reference_dropout"])
    assert set(again["deletion"]) == {"hash", "reference"} and again["deletion"]["hash"]["excluded_ids"] == [1]
    for arm in ("memsinks", "memsinks_reference"):
        spec = json.loads((run_dir / arm / "model" / "memsinks.json").read_text())
        assert spec["strategy"] == ("hash" if arm == "memsinks" else "reference") and spec["n_sink"] == 20
    with pytest.raises(LetheError, match=r"repetitions \(6 -> 7\)"):
        lethe.demo_memsinks([*SMALL, "repetitions=7", f"run_dir={run_dir}"])
    capsys.readouterr()
    code = main(["demo", "memsinks", *SMALL, "--run-dir", str(run_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == (0 if again["headline_holds"] else 1)
    if code:
        assert "the headline does not hold" in err and "these differ" in err and len(err.strip().splitlines()) == 1


def test_training_records_give_repeated_documents_sequential_shared_ids():
    repeated = [Document(f"r{i}", f"repeated {i}") for i in range(3)]
    others = [Document(f"u{i}", f"other {i}") for i in range(4)]
    records = training_records(repeated, others, repetitions=5, seed=0)
    assert len(records) == 19
    keys = {r["text"]: set() for r in records}
    for r in records:
        keys[r["text"]].add(r["sink_key"])
    assert keys["repeated 1"] == {2} and keys["other 0"] == {4}
    assert sorted(k for ks in keys.values() for k in ks) == list(range(1, 8))


def test_gap_closed_formula_and_headline_message():
    assert gap_closed(1.0, 0.5, 2.5) == pytest.approx(0.25)
    metrics = {"gap_closed": 0.31, "heldout_loss_ratio": 1.012}
    message = headline_failure(load_config(MemSinksDemoConfig, None, ["repetitions=20", "suffix_len=10"]), metrics)
    assert "closed 31.0% of the repeated/held-out loss gap (needs > 50%)" in message
    assert message.endswith("these differ: repetitions (100 -> 20)")
    assert "a regression" in headline_failure(MemSinksDemoConfig(), metrics)


@pytest.mark.parametrize(("override", "message"), [("exclude=10", "exclude must be in"),
                                                   ("memsinks.p_gen=1.5", "memsinks.p_gen must be in"),
                                                   ("model.name=smollm2-135m", "model.name must be 'tiny'")])
def test_bad_demo_settings_are_one_line_errors(override, message):
    with pytest.raises(LetheError, match=message):
        load_config(MemSinksDemoConfig, None, [override])
