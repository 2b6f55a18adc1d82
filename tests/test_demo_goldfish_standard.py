"""``lethe demo goldfish-standard`` scaled down end to end, and its pieces: records, curves, headline logic."""

from __future__ import annotations

import json

import pytest

from lethe.cli import main
from lethe.config import load_config
from lethe.data.text import Document
from lethe.demo.goldfish_standard import (
    ARMS,
    GoldfishStandardDemoConfig,
    Splits,
    arm_records,
    headline_checks,
    headline_failure,
    heldout_curve,
    ks_statistic,
    loss_at_tokens,
    run_goldfish_standard_demo,
)
from lethe.errors import LetheError

SMALL = ["world_authors=200", "targets=4", "repetitions=4", "unrepeated=30", "suffix_len=16", "max_length=160",
         "beams=2", "mia_bootstrap=20", "mauve_prompt_tokens=8", "mauve_new_tokens=12", "mauve_features=control",
         "model.hidden_size=32", "model.num_layers=2", "model.intermediate_size=64", "model.vocab_size=512",
         "train.max_steps=8", "train.logging_steps=4", "train.batch_size=8", "train.save_steps=1000",
         "train.warmup_steps=2", "train.threads=1"]


@pytest.mark.slow
def test_small_demo_audits_every_arm_logs_heldout_curves_and_reuses_arms(tmp_path, capsys):
    config = load_config(GoldfishStandardDemoConfig, None, [*SMALL, f"run_dir={tmp_path / 'demo'}"])
    run_dir, metrics = run_goldfish_standard_demo(config, quiet=True)
    for arm in ARMS:
        m = metrics[arm]
        assert m["greedy"]["n_scored"] == 4 and m["beam"]["decoding"] == "beam2"
        assert len(m["rougeL_all"]) == 4 and 0 <= m["mia"]["loss"]["auc"] <= 1 and 0 <= m["mauve"] <= 1
        # evaluated on every log (steps 4 and 8); the last point is the final model
        assert [p["step"] for p in m["heldout_curve"]] == [4, 8]
        assert m["heldout_curve"][-1]["heldout_loss"] == pytest.approx(m["heldout_loss"], rel=1e-5)
        assert m["heldout_curve"][-1]["supervised_tokens"] == m["supervised_tokens"]
        assert json.loads((run_dir / arm / "mauve.json").read_text())["num_buckets"] >= 2
    # goldfish drops tokens: fewer supervised tokens at the same step, so its equal-token point is inside the curve
    assert metrics["goldfish_k3"]["supervised_tokens"] < metrics["goldfish_k4"]["supervised_tokens"] \
        < metrics["standard"]["supervised_tokens"]
    assert metrics["control"]["mia"]["loss"]["auc"] != metrics["standard"]["mia"]["loss"]["auc"]
    assert metrics["headline_holds"] == (not headline_checks(metrics))
    for name in ("rouge_distribution", "rouge_cdf", "heldout_curves"):
        assert (run_dir / "figures" / f"{name}.png").is_file()
    assert "standard training" in (run_dir / "report.html").read_text()
    trained = {arm: (run_dir / arm / "train_metrics.json").read_text() for arm in ARMS}
    # an audit-only change reuses the arms; a training change is refused
    capsys.readouterr()
    code = main(["demo", "goldfish-standard", *SMALL, "beams=3", "--run-dir", str(run_dir), "--quiet"])
    assert {arm: (run_dir / arm / "train_metrics.json").read_text() for arm in ARMS} == trained
    again = json.loads((run_dir / "metrics.json").read_text())
    assert again["standard"]["beam"]["decoding"] == "beam3"
    assert again["standard"]["heldout_curve"] == metrics["standard"]["heldout_curve"]
    err = capsys.readouterr().err
    assert code == (0 if again["headline_holds"] else 1)
    if code:
        assert "the headline does not hold" in err and "these differ" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(LetheError, match=r"repetitions \(4 -> 5\)"):
        run_goldfish_standard_demo(load_config(GoldfishStandardDemoConfig, None,
                                               [*SMALL, "repetitions=5", f"run_dir={run_dir}"]), quiet=True)


def test_records_repeat_the_targets_except_for_the_control():
    splits = Splits([Document("t0", "target zero"), Document("t1", "target one")],
                    [Document(f"u{i}", f"other {i}") for i in range(5)], [])
    standard = arm_records("standard", splits, 3, seed=0)
    assert sorted(r["id"] for r in standard) == ["t0"] * 3 + ["t1"] * 3 + [f"u{i}" for i in range(5)]
    assert arm_records("goldfish_k3", splits, 3, seed=0) == standard  # same data, same order
    control = arm_records("control", splits, 3, seed=0)
    assert sorted(r["id"] for r in control) == [f"u{i}" for i in range(5)]


def test_heldout_curve_keeps_the_last_record_of_a_step_and_interpolates_in_tokens(tmp_path):
    events = [{"event": "heldout_eval", "step": 10, "supervised_tokens": 100, "heldout_loss": 5.0},
              {"event": "train", "step": 10, "loss": 9.0},
              {"event": "heldout_eval", "step": 20, "supervised_tokens": 200, "heldout_loss": 4.5},
              {"event": "heldout_eval", "step": 20, "supervised_tokens": 200, "heldout_loss": 4.0},  # resumed
              {"event": "heldout_eval", "step": 30, "supervised_tokens": 300, "heldout_loss": 3.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    curve = heldout_curve(tmp_path)
    assert [(p["step"], p["heldout_loss"]) for p in curve] == [(10, 5.0), (20, 4.0), (30, 3.0)]
    assert loss_at_tokens(curve, 150) == pytest.approx(4.5)
    assert loss_at_tokens(curve, 275) == pytest.approx(3.25)
    assert loss_at_tokens(curve, 200) == 4.0
    assert loss_at_tokens(curve, 50) is None and loss_at_tokens(curve, 301) is None  # never extrapolated


def _metrics(standard, k3, k4, control, exact=(0, 0)):
    metrics = {"targets": len(standard)}
    for arm, scores in zip(ARMS, (standard, k3, k4, control), strict=True):
        metrics[arm] = {"rougeL_all": scores, "rougeL_mean": sum(scores) / len(scores), "greedy": {"n_exact": 0}}
    metrics["goldfish_k3"]["greedy"]["n_exact"], metrics["goldfish_k4"]["greedy"]["n_exact"] = exact
    for arm in ARMS:
        metrics[arm]["ks_to_control"] = ks_statistic(metrics[arm]["rougeL_all"], control)
        metrics[arm]["ks_to_standard"] = ks_statistic(metrics[arm]["rougeL_all"], standard)
    return metrics


def test_headline_holds_only_when_goldfish_looks_like_the_control():
    standard = [0.9, 0.8, 1.0, 0.7, 0.95, 0.85]
    control = [0.2, 0.25, 0.3, 0.15, 0.2, 0.28]
    near_control = [0.22, 0.3, 0.35, 0.2, 0.25, 0.3]
    assert headline_checks(_metrics(standard, near_control, near_control, control)) == []
    # k=4 in between, closer to standard: that arm fails, with both KS values in the reason
    failed = headline_checks(_metrics(standard, near_control, [0.6, 0.7, 0.8, 0.65, 0.75, 0.9], control))
    assert len(failed) == 1 and failed[0].startswith("goldfish_k4's ROUGE-L distribution is not closer")
    failed = headline_checks(_metrics(standard, near_control, near_control, control, exact=(1, 0)))
    assert failed == ["goldfish_k3 reproduced 1/6 targets exactly (needs 0)"]
    # a standard arm that memorized nothing makes the comparison empty
    failed = headline_checks(_metrics(control, control, control, control))
    assert failed[0].startswith("standard training barely memorized")
    config = GoldfishStandardDemoConfig(targets=6)
    message = headline_failure(config, _metrics(control, control, control, control))
    assert message.startswith("the headline does not hold: standard training barely memorized")
    assert f"targets ({GoldfishStandardDemoConfig().targets} -> 6)" in message and "\n" not in message


def test_bad_settings_are_one_line_errors():
    with pytest.raises(LetheError, match="mauve_features must be one of auto, minilm, control"):
        GoldfishStandardDemoConfig(mauve_features="gpt2").validate()
    with pytest.raises(LetheError, match="beams must be >= 1"):
        GoldfishStandardDemoConfig(beams=0).validate()
