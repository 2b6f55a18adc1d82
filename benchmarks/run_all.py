"""Run every benchmark and write ``benchmarks/results/summary.json``.

    python -m benchmarks.run_all [--quick] [--model PATH] [--threads 1] [--device cpu]

``--quick`` uses N=40 biographies for scoring and N=20 for extraction (a smoke run); the full run uses
N=200 and N=100. Exit status 1 if any optimized path's output differs from its baseline's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks import bench_extraction, bench_scoring
from benchmarks.common import RESULTS_DIR, Spec, load_avg, machine_info, print_summary


def _specs(args: argparse.Namespace) -> dict[str, Spec]:
    common = {"model": args.model, "threads": args.threads, "device": args.device, "repeats": args.repeats,
              "max_seconds": args.max_seconds}
    return {
        "scoring": Spec(n=bench_scoring.QUICK_N if args.quick else bench_scoring.FULL_N,
                        batch_size=bench_scoring.BATCH_SIZE, **common),
        "extraction": Spec(n=bench_extraction.QUICK_N if args.quick else bench_extraction.FULL_N,
                           batch_size=bench_extraction.BATCH_SIZE, **common),
    }


def _digest(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "speedup": report["speedup"],
        "target_speedup": report["target_speedup"],
        "meets_target": report["meets_target"],
        "identical": report["identical"],
        "n": report["config"]["n"],
        "seconds_median": {v: r["seconds_median"] for v, r in report["variants"].items()},
        "speed_ratio": {v: r["speed_ratio"] for v, r in report["variants"].items()},
        "items_per_s": {v: r["items_per_s"] for v, r in report["variants"].items()},
        "peak_rss_mb": report["peak_rss_mb"],
        "peak_rss_delta_mb": report["peak_rss_delta_mb"],
        "cuda_peak_mb": report["cuda_peak_mb"],
        "load_avg_start": report["load_avg_start"],
        "load_avg_end": report["load_avg_end"],
        "path": report["path"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run all Lethe benchmarks")
    parser.add_argument("--quick", action="store_true", help="N=40 (scoring) / N=20 (extraction)")
    parser.add_argument("--model", default=None, help="local Hugging Face model folder (default: tiny LLaMA)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per variant (0 = torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=90.0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    specs = _specs(args)
    summary: dict[str, Any] = {"quick": args.quick, "machine": machine_info(specs["scoring"]),
                               "load_avg_start": load_avg(), "benchmarks": {}}
    for name, module in (("scoring", bench_scoring), ("extraction", bench_extraction)):
        report = module.run(specs[name])
        print_summary(report)
        summary["benchmarks"][name] = _digest(report)
    summary["load_avg_end"] = load_avg()
    summary["all_identical"] = all(b["identical"] for b in summary["benchmarks"].values())
    summary["all_meet_target"] = all(b["meets_target"] for b in summary["benchmarks"].values())
    summary["wall_seconds_total"] = time.perf_counter() - started
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary -> {path} ({summary['wall_seconds_total']:.0f} s)")
    return 0 if summary["all_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
