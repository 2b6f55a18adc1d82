"""The goldfish demo end to end, scaled down: standard training memorizes, goldfish does not."""

import json

import pytest

import lethe
from lethe.config import load_config, to_yaml
from lethe.demo.goldfish import GoldfishDemoConfig, _check_reusable, headline_failure
from lethe.errors import LetheError

SMALL = ["documents=8", "train.max_steps=100", "canary_max_repetitions=1", "canary_samples=100",
         "mia_bootstrap=50", "train.save_steps=1000"]


@pytest.mark.slow
def test_small_goldfish_demo_headline_and_outputs(tmp_path):
    run_dir, metrics = lethe.demo_goldfish([*SMALL, f"run_dir={tmp_path / 'demo'}"])
    standard, goldfish = metrics["standard"], metrics["goldfish"]
    assert standard["extraction"]["n_exact"] >= 4  # at least half of the 8 biographies verbatim
    assert goldfish["extraction"]["n_exact"] == 0
    assert standard["extraction"]["rougeL"] > goldfish["extraction"]["rougeL"]
    assert goldfish["train"]["supervised_tokens"] < 0.85 * standard["train"]["supervised_tokens"]
    for arm in (standard, goldfish):
        assert 0.0 <= arm["mia"]["loss"]["auc"] <= 1.0 and "min_k_pp_0.2" in arm["mia"]
        assert set(arm["canaries"]["exposure_by_repetitions"]) == {"1"}
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["headline_holds"] is True
    html = (run_dir / "report.html").read_text()
    assert "data:image/png;base64," in html and "Goldfish demo" in html
    for name in ("rouge_distribution", "training_curves", "roc", "exposure"):
        assert (run_dir / "figures" / f"{name}.png").is_file()
    # re-running on the same directory reuses both trained arms instead of training again
    _, again = lethe.demo_goldfish([*SMALL, f"run_dir={run_dir}"])
    assert again["standard"]["extraction"] == standard["extraction"]
    with pytest.raises(LetheError, match=r"train\.max_steps \(100 -> 120\)"):  # new models needed: refused
        lethe.demo_goldfish([*SMALL, "train.max_steps=120", f"run_dir={run_dir}"])


def test_demo_rejects_other_models():
    with pytest.raises(LetheError, match=r"model\.name must be 'tiny', got 'smollm2-135m'"):
        load_config(GoldfishDemoConfig, None, ["model.name=smollm2-135m"])


def test_rerun_with_other_training_settings_is_refused(tmp_path):
    first = load_config(GoldfishDemoConfig, None, [*SMALL, f"run_dir={tmp_path}"])
    (tmp_path / "config.yaml").write_text(to_yaml(first))
    _check_reusable(tmp_path, first)  # nothing trained yet: anything goes
    (tmp_path / "tokenizer").mkdir()  # trained state now exists
    audit_only = load_config(GoldfishDemoConfig, None, [*SMALL, "suffix_len=30", "mia_bootstrap=10",
                                                        f"run_dir={tmp_path}"])
    _check_reusable(tmp_path, audit_only)  # audits re-run on the trained models
    for override, key in [("goldfish.k=3", r"goldfish\.k \(4 -> 3\)"), ("documents=9", r"documents \(8 -> 9\)"),
                          ("model.vocab_size=512", r"model\.vocab_size \(2048 -> 512\)")]:
        changed = load_config(GoldfishDemoConfig, None, [*SMALL, override, f"run_dir={tmp_path}"])
        with pytest.raises(LetheError, match=key + r" \(use a new --run-dir"):
            lethe.demo_goldfish([*SMALL, override, f"run_dir={tmp_path}"])
        with pytest.raises(LetheError, match=key):
            _check_reusable(tmp_path, changed)


def test_headline_failure_says_why():
    metrics = {"documents": 8, "standard": {"extraction": {"n_exact": 2}}, "goldfish": {"extraction": {"n_exact": 0}}}
    changed = load_config(GoldfishDemoConfig, None, ["train.max_steps=10", "suffix_len=20"])
    message = headline_failure(changed, metrics)
    assert "standard training memorized 2/8 biographies exactly (needs at least half)" in message
    assert message.endswith("these differ: train.max_steps (300 -> 10)")  # audit-only suffix_len not blamed
    assert "a regression" in headline_failure(GoldfishDemoConfig(), metrics)
