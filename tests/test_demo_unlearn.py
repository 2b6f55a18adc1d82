"""``lethe demo unlearn`` end to end on a 5-author world with a tiny model (seconds), plus configs/unlearn.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lethe.cli import main
from lethe.config import load_config
from lethe.demo.unlearn import Arm, UnlearnDemoConfig, base_of, investigation_arms, main_arms, run_unlearn_demo
from lethe.errors import LetheError
from lethe.unlearn.config import UnlearnConfig

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo_unlearn")]  # one worker builds the demo

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "world_authors=5", "max_length=96", "eval_limit=8", "eval_max_new_tokens=12", "eval_batch_size=16",
    "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2", "model.vocab_size=500",
    "train.max_steps=40", "train.batch_size=16", "train.save_steps=1000", "train.logging_steps=10",
    "unlearn.max_steps=4", "unlearn.lr=0.005", "guard.retain_samples=16",
]
ARMS = ("gd", "gd-guard-tau1-zscore", "npo", "npo-guard-tau1-zscore")
SR = {"truth_ratio", "rougeL", "probability"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("demo-unlearn") / "run"
    with pytest.MonkeyPatch.context() as patch:  # the cache conftest gives every test (the world's folder)
        patch.setenv("LETHE_CACHE", str(tmp_path_factory.getbasetemp() / "lethe-cache"))
        assert main(["demo", "unlearn", "--quiet", "--run-dir", str(run_dir), *TINY]) == 0
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_metrics_have_every_arm_and_the_guard_verdict(demo):
    run_dir, metrics = demo
    assert set(metrics["arms"]) == set(ARMS)
    for name in ("full", "retain"):
        for key in ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "forget_truth_ratio", "train_wall_s"):
            assert key in metrics[name]
    assert metrics["retain"]["forget_quality"] == pytest.approx(1.0)  # the retain model is its own reference
    for name in ARMS:
        arm = metrics["arms"][name]
        for key in ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "forget_truth_ratio", "unlearn_wall_s"):
            assert arm[key] is not None, (name, key)
        assert set(arm["sacrifice_rate"]) == SR
        assert set(arm["sacrifice_parts"]) == SR
        assert arm["unlearn_wall_s"] > 0
    verdict = metrics["guard_lowers_sacrifice_rate"]
    assert set(verdict) == {"gd", "npo"}
    for per_metric in verdict.values():
        assert set(per_metric) == SR
        assert all(v is None or isinstance(v, bool) for v in per_metric.values())
    assert metrics["wall_s"] > 0
    assert (run_dir / "report.html").is_file()
    assert "GUARD lowers the sacrifice rate of gd" in (run_dir / "report.md").read_text()


def test_gradient_difference_lowers_forget_probability(demo):
    _, metrics = demo
    gd = metrics["arms"]["gd"]
    assert gd["forget_prob_after"] < gd["forget_prob_before"]
    assert gd["forget_Q_A_Prob"] < metrics["full"]["forget_Q_A_Prob"]


def test_guard_arms_write_attribution_weights_summing_to_one(demo):
    run_dir, metrics = demo
    forget = metrics["forget_samples"]
    for name in ARMS:
        path = run_dir / name / "attribution.json"
        if "guard" not in name:
            assert not path.exists()
            continue
        rows = json.loads(path.read_text())
        assert len(rows) == forget
        assert sum(r["weight"] for r in rows) == pytest.approx(1.0, abs=1e-5)
        assert metrics["attribution"][name]["weight_sum"] == pytest.approx(1.0, abs=1e-5)


def test_rerun_reuses_finished_stages_and_refuses_changed_settings(demo):
    run_dir, metrics = demo
    stamps = {name: (run_dir / name / "metrics.json").stat().st_mtime_ns for name in ARMS}
    config = load_config(UnlearnDemoConfig, None, [*TINY, f"run_dir={run_dir}"])
    _, again = run_unlearn_demo(config, quiet=True)
    assert {name: (run_dir / name / "metrics.json").stat().st_mtime_ns for name in ARMS} == stamps
    assert again["arms"]["gd"]["sacrifice_rate"] == metrics["arms"]["gd"]["sacrifice_rate"]
    changed = load_config(UnlearnDemoConfig, None, [*TINY, f"run_dir={run_dir}", "unlearn.lr=0.001"])
    config_text = (run_dir / "config.yaml").read_text()
    with pytest.raises(LetheError, match="different config"):
        run_unlearn_demo(changed, quiet=True)
    assert (run_dir / "config.yaml").read_text() == config_text  # refused before writing anything


def test_investigation_arms_pair_each_variant_with_its_base():
    config = load_config(UnlearnDemoConfig, None, ["sweep_taus=[0.5,1.0]", "sweep_raw_taus=[1.0]"])
    arms = investigation_arms(config)
    assert not set(arms) & set(main_arms(config))  # the main arms are not repeated
    assert Arm("gd", True, 0.5, "zscore") in arms and Arm("npo", True, 1.0, "none") in arms
    lora = config.sweep_lora_lr
    assert Arm("gd", False, lora=True, lr=lora) in arms and Arm("gd", True, lora=True, lr=lora) in arms
    assert Arm("npo", False, seed=1) in arms and Arm("npo", True, seed=1) in arms
    assert Arm("gd", True, recompute_every=5) in arms
    for arm in arms:
        assert base_of(arm) in arms or base_of(arm) in main_arms(config)
    assert len({a.name for a in arms}) == len(arms)


def test_bad_demo_settings_name_the_key():
    with pytest.raises(LetheError, match="methods"):
        load_config(UnlearnDemoConfig, None, ["methods=[gd,nope]"])
    with pytest.raises(LetheError, match="forget_split"):
        load_config(UnlearnDemoConfig, None, ["forget_split=retain90"])
    with pytest.raises(LetheError, match=r"config: unlearn\.lr must be > 0"):  # not train.lr
        load_config(UnlearnDemoConfig, None, ["unlearn.lr=-1"])
    with pytest.raises(LetheError, match=r"config: train\.lr must be > 0"):
        load_config(UnlearnDemoConfig, None, ["train.lr=-1"])
    with pytest.raises(LetheError, match=r"unlearn\.goldfish\.k"):
        load_config(UnlearnDemoConfig, None, ["unlearn.goldfish.k=1"])


def test_example_unlearn_config_loads():
    config = load_config(UnlearnConfig, ROOT / "configs" / "unlearn.yaml", [])
    assert config.guard.enabled and config.method == "npo"
    assert config.eval.retain_eval
