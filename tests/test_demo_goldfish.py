"""The goldfish demo end to end, scaled down: standard training memorizes, goldfish does not."""

import json

import pytest

import lethe

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
