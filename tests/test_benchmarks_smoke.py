"""Smoke tests of the benchmarks: tiny N and a tiny model; they check correctness and the JSON, not speed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `benchmarks` lives at the repository root, beside `tests`

from benchmarks import (  # noqa: E402
    bench_extraction,
    bench_guard,
    bench_memsinks,
    bench_mia_mimir,
    bench_scoring,
    bench_tofu_eval,
    bench_tofu_ou,
    bench_train_throughput,
    bench_whp,
)
from benchmarks.common import Spec  # noqa: E402

TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "vocab_size": 600,
        "repeats": 1, "threads": 1}  # in-process runs restore the caller's torch thread count afterwards
REPORT_KEYS = {"benchmark", "baseline", "optimized", "speedup", "target_speedup", "meets_target", "identical",
               "identity", "peak_rss_mb", "peak_rss_delta_mb", "cuda_peak_mb", "memory_method",
               "load_avg_start", "load_avg_end", "config", "machine", "variants", "wall_seconds_total"}
VARIANT_KEYS = {"seconds_median", "seconds_all", "n_repeats", "warmup_seconds", "n_items", "n_tokens",
                "items_per_s", "tokens_per_s", "speed_ratio", "peak_rss_mb", "peak_rss_delta_mb",
                "torch_threads", "load_avg_before", "isolated"}
MACHINE_KEYS = {"torch", "torch_threads", "cpu_count", "device", "load_avg"}


def _check(report: dict, path: Path, variants: set[str]) -> dict:
    data = json.loads(path.read_text())
    assert set(data) >= REPORT_KEYS
    assert set(data["machine"]) >= MACHINE_KEYS
    assert set(data["variants"]) == variants
    for result in data["variants"].values():
        assert set(result) >= VARIANT_KEYS
        assert result["speed_ratio"] > 0 and result["items_per_s"] > 0
        assert result["peak_rss_mb"] > 0
        assert "output" not in result
    assert data["speedup"] > 0
    assert data["identical"] is True
    assert all(check["identical"] for check in data["identity"].values())
    assert report["speedup"] == data["speedup"]
    return data


def test_scoring_benchmark_in_process(tmp_path):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "scoring.json"
    report = bench_scoring.run(Spec(n=8, batch_size=4, **TINY), isolate=False, out_path=out)
    data = _check(report, out, {"per_attack", "shared", "shared_bs1"})
    assert data["variants"]["shared"]["n_items"] == 8
    assert set(data["identity"]["shared"]["max_rel_diff"]) == set(bench_scoring.ATTACKS)
    assert len(bench_scoring.ATTACKS) == 6
    assert torch.get_num_threads() == threads


def test_extraction_benchmark_in_process(tmp_path):
    out = tmp_path / "extraction.json"
    report = bench_extraction.run(Spec(n=6, batch_size=4, **TINY), isolate=False, out_path=out)
    data = _check(report, out, {"per_sample", "batched"})
    assert data["variants"]["batched"]["n_tokens"] == 6 * bench_extraction.SUFFIX_LEN
    assert data["identity"]["batched"]["n_mismatched"] == 0


def test_guard_benchmark_in_process(tmp_path):
    out = tmp_path / "guard.json"
    report = bench_guard.run(Spec(n=6, batch_size=4, **TINY), isolate=False, out_path=out,
                             variants=(*bench_guard.DEFAULT_SWEEP, "jvp_sorted"))
    data = _check(report, out, {"per_sample", "jvp", "jvp_bs1", "jvp_bs64", "jvp_sorted"})
    assert data["benchmark"] == "guard_n6"
    assert data["variants"]["jvp"]["n_items"] == 6
    for check in data["identity"].values():
        assert 0 <= check["max_rel_error"] <= bench_guard.TOLERANCE
        assert check["n_scores"] == 6 and check["score_scale"] > 0


def test_tofu_eval_benchmark_in_process(tmp_path):
    out = tmp_path / "tofu_eval.json"
    report = bench_tofu_eval.run(Spec(n=3, batch_size=4, **TINY), isolate=False, out_path=out)
    data = _check(report, out, {"per_variant", "shared"})
    assert data["variants"]["shared"]["n_items"] == 3 * len(bench_tofu_eval.SPLIT_FILES)
    check = data["identity"]["shared"]
    assert not check["keys_only_in_baseline"] and not check["keys_only_in_variant"]
    assert {"forget.truth_ratio", "retain.para_prob", "real_authors.prob_normalised",
            "holdout.mia_min_k"} <= set(check["max_rel_diff"])
    assert check["max_rel_diff_overall"] <= bench_tofu_eval.RTOL
    assert set(check["discrete_mismatches"]) >= {"forget.extraction_strength", "world_facts.generated"}


def test_memsinks_benchmark_in_process(tmp_path):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "memsinks.json"
    size = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
    report = bench_memsinks.run(quick=True, threads=1, smollm2=False, tiny_size=size, out_path=out)
    data = json.loads(out.read_text())
    assert data["hooks_act"] is True and report["path"] == str(out)
    (result,) = data["results"]
    assert result["intermediate_size"] == 64 and result["n_sink"] == 64 - int(0.7 * 64)
    assert set(result["step_seconds_median"]) == {"plain", "memsinks"}
    assert all(s > 0 for s in result["step_seconds_median"].values())
    assert result["overhead"] == pytest.approx(result["step_seconds_median"]["memsinks"]
                                               / result["step_seconds_median"]["plain"] - 1)
    assert result["cpu_overhead"] == pytest.approx(result["cpu_seconds_median"]["memsinks"]
                                                   / result["cpu_seconds_median"]["plain"] - 1)
    assert 0 < result["mask_share_of_step"] < 1
    assert torch.get_num_threads() == threads


def test_whp_benchmark_in_process(tmp_path):
    out = tmp_path / "whp_labels.json"
    report = bench_whp.run(Spec(n=3, batch_size=2, **TINY), isolate=False, out_path=out)
    data = _check(report, out, {"one_block", "batched"})
    assert data["variants"]["batched"]["n_items"] == 3 and data["identity"]["batched"]["n_mismatched"] == 0
    assert not bench_whp.compare_labels([[1, 2]], [[1, 3]])["identical"]


def test_compare_functions_detect_differences():
    scores = {name: [1.0, 2.0] for name in bench_scoring.ATTACKS}
    assert bench_scoring.compare_scores(scores, scores)["identical"]
    off = {**scores, "zlib": [1.0, 2.001]}
    assert not bench_scoring.compare_scores(scores, off)["identical"]
    assert bench_extraction.compare_tokens([[1, 2], [3, 4]], [[1, 2], [3, 4]])["identical"]
    diff = bench_extraction.compare_tokens([[1, 2], [3, 4]], [[1, 2], [3, 5]])
    assert not diff["identical"] and diff["first_divergence_position"] == {"1": 1}
    guard = bench_guard.compare_attribution([1.0, -2.0, 4.0], [1.0, -2.0, 4.0 + 2e-4])
    assert guard["identical"] and guard["max_rel_error"] == pytest.approx(5e-5)
    assert not bench_guard.compare_attribution([1.0, -2.0, 4.0], [1.0, -2.0, 4.001])["identical"]
    assert not bench_guard.compare_attribution([1.0, 2.0], [1.0])["identical"]
    tofu = {"forget.truth_ratio": [0.5, 1.5], "forget.generated": ["a", "b"]}
    assert bench_tofu_eval.compare_outputs(tofu, tofu)["identical"]
    off = bench_tofu_eval.compare_outputs(tofu, {**tofu, "forget.truth_ratio": [0.5, 1.501]})
    assert not off["identical"]
    flipped = bench_tofu_eval.compare_outputs(tofu, {**tofu, "forget.generated": ["a", "c"]})
    assert flipped["identical"] and flipped["discrete_mismatches"] == {"forget.generated": 1}
    assert not flipped["discrete_identical"]


@pytest.mark.slow
def test_extraction_benchmark_isolated_children(tmp_path):
    """The default mode: each variant in its own ``python -m benchmarks.bench_extraction --child`` process."""
    out = tmp_path / "extraction.json"
    report = bench_extraction.run(Spec(n=2, batch_size=2, **TINY), out_path=out)
    data = _check(report, out, {"per_sample", "batched"})
    assert all(result["isolated"] for result in data["variants"].values())


def test_peer_benchmarks_in_process(tmp_path, monkeypatch):
    """open-unlearning's evaluator and MIMIR's attacks, reimplemented, agree with Lethe's numbers."""
    monkeypatch.setenv("LETHE_BENCH_GEN_TOKENS", "3")
    monkeypatch.setattr(bench_mia_mimir, "BOOTSTRAP", 20)  # MIMIR's 1,000 resamples: tens of seconds here
    out = tmp_path / "tofu_ou.json"
    report = bench_tofu_ou.run(Spec(n=2, batch_size=4, **TINY), isolate=False, out_path=out)
    data = _check(report, out, {"open_unlearning", "lethe"})
    check = data["identity"]["lethe"]
    assert not check["keys_only_in_baseline"] and not check["keys_only_in_variant"]
    assert {"forget.truth_ratio", "holdout.mia_min_k", "world_facts.prob_normalised"} <= set(check["max_rel_diff"])
    out = tmp_path / "mia_mimir.json"
    report = bench_mia_mimir.run(Spec(n=3, batch_size=4, **TINY), isolate=False, out_path=out)
    data = _check(report, out, {"mimir", "lethe"})
    assert {"loss.members", "zlib.nonmembers", "min_k_pp_0.4.members"} <= set(data["identity"]["lethe"]["max_rel_diff"])


def test_peer_compare_detects_a_changed_score():
    scores = {"loss.members": [1.0, 2.0], "loss.nonmembers": [3.0, 4.0]}
    assert bench_mia_mimir.compare_outputs(scores, scores)["identical"]
    assert not bench_mia_mimir.compare_outputs(scores, {**scores, "loss.members": [1.0, 2.01]})["identical"]


def test_training_throughput_counts_flops():
    import torch

    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 6), torch.nn.Linear(6, 10))
    assert bench_train_throughput.matmul_params(model) == 4 * 6 + 6 * 10  # the embedding lookup is no matmul
    assert bench_train_throughput.matmul_peak_gflops(seconds=0.05, n=64) > 0
