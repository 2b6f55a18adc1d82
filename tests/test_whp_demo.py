"""The WHP demo end to end, scaled down: every number, reuse of the trained arms, the headline message."""

from __future__ import annotations

import json

import pytest

from lethe.cli import main
from lethe.config import load_config
from lethe.demo.whp import WHPDemoConfig, headline_failure, run_whp_demo
from lethe.errors import LetheError

SMALL = ["world_authors=20", "saga_repetitions=1", "max_length=160", "model.hidden_size=32", "model.num_layers=2",
         "model.intermediate_size=64", "model.vocab_size=512", "train.max_steps=6", "train.batch_size=8",
         "train.warmup_steps=1", "reinforced_steps=2", "whp.max_steps=2", "whp.batch_size=4", "mix_documents=4",
         "relearn_steps=1", "max_new_tokens=3", "block=128"]


@pytest.mark.slow
def test_small_whp_demo_writes_every_number_and_reuses_its_arms(tmp_path, capsys):
    config = load_config(WHPDemoConfig, None, [*SMALL, f"run_dir={tmp_path / 'demo'}"])
    run_dir, metrics = run_whp_demo(config, quiet=True)
    for key in ("baseline", "reinforced", "whp", "whp_inference"):
        assert {"completion_familiarity", "probability_familiarity", "saga_ppl", "nonsaga_ppl", "heldout_ppl",
                "qa_accuracy"} <= set(metrics[key])
    assert set(metrics["baseline"]["by_style"]) == {"question", "saga-worded"}
    assert "relearned" in metrics["whp"] and "probability_familiarity" in metrics["relearn_recovery"]
    assert metrics["probability_ratio"] == pytest.approx(
        metrics["whp"]["probability_familiarity"] / metrics["baseline"]["probability_familiarity"])
    assert metrics["whp"]["saga_ppl"] != pytest.approx(metrics["baseline"]["saga_ppl"])  # fine-tuning acted
    labels = json.loads((run_dir / "generic_labels.json").read_text())
    assert labels["before_term_changed_fraction"] == 1.0  # forbid_terms: never the term right before a term
    assert len(json.loads((run_dir / "familiarity_probes.json").read_text())["whp"]) == 56
    assert "Harry Potter demo" in (run_dir / "report.html").read_text()
    trained = (run_dir / "whp" / "model" / "model.safetensors").stat().st_mtime_ns
    _, again = run_whp_demo(load_config(WHPDemoConfig, None, [*SMALL, "max_new_tokens=4",
                                                              f"run_dir={run_dir}"]), quiet=True)
    assert (run_dir / "whp" / "model" / "model.safetensors").stat().st_mtime_ns == trained  # reused
    assert again["whp"]["saga_ppl"] == pytest.approx(metrics["whp"]["saga_ppl"])
    with pytest.raises(LetheError, match=r"alpha \(5.0 -> 2.0\)"):
        run_whp_demo(load_config(WHPDemoConfig, None, [*SMALL, "alpha=2", f"run_dir={run_dir}"]), quiet=True)
    capsys.readouterr()
    code = main(["demo", "whp", *SMALL, "--run-dir", str(run_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == (0 if again["headline_holds"] else 1)
    if code:
        assert "the headline does not hold" in err and "these differ" in err and len(err.strip().splitlines()) == 1


def test_headline_message_names_the_numbers():
    metrics = {"probability_ratio": 0.25, "nonsaga_ppl_change": 0.031}
    message = headline_failure(load_config(WHPDemoConfig, None, ["alpha=2.5"]), metrics)
    assert "0.250 x the baseline's (needs <= 0.1)" in message and "+3.1%" in message
    assert message.endswith("these differ: alpha (5.0 -> 2.5)")
    assert "at the default settings (known" in headline_failure(WHPDemoConfig(), metrics)


@pytest.mark.parametrize(("override", "message"), [("alpha=0", "alpha and inference_alpha must be > 0"),
                                                   ("mix_documents=95", "mix_documents must leave"),
                                                   ("model.name=smollm2-135m", "model.name must be 'tiny'")])
def test_bad_demo_settings_are_one_line_errors(override, message):
    with pytest.raises(LetheError, match=message):
        load_config(WHPDemoConfig, None, [override])
