"""Run every benchmark and write ``benchmarks/results/summary.json``.

    python -m benchmarks.run_all [--quick] [--model PATH] [--threads 1] [--device cpu]

``--quick`` uses N=40 biographies for scoring, N=20 for extraction, 16 forget samples for GUARD (baseline and
default JVP only) and 20 items per split for TOFU (a smoke run); the full run uses N=200, N=100, GUARD at 64
and at 400 forget samples (JVP batch size 16; also 1 and 64 at N=64), 100 items per split and 24 WHP
label blocks (6 with ``--quick``).
Then the MemSinks step overhead (``bench_memsinks``: the tiny LLaMA, plus SmolLM2-135M or ``--model`` in
the full run); it has no baseline output to compare, so it enters the summary under ``memsinks``, not
``benchmarks``. Exit status 1 if any optimized path's output differs from its baseline's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import (
    bench_extraction,
    bench_guard,
    bench_memsinks,
    bench_mia_mimir,
    bench_scoring,
    bench_tofu_eval,
    bench_tofu_ou,
    bench_whp,
)
from benchmarks.common import RESULTS_DIR, Spec, load_avg, machine_info, print_summary


def _specs(args: argparse.Namespace) -> dict[str, Spec]:
    common = {"model": args.model, "threads": args.threads, "device": args.device, "repeats": args.repeats,
              "max_seconds": args.max_seconds}
    return {
        "scoring": Spec(n=bench_scoring.QUICK_N if args.quick else bench_scoring.FULL_N,
                        batch_size=bench_scoring.BATCH_SIZE, **common),
        "extraction": Spec(n=bench_extraction.QUICK_N if args.quick else bench_extraction.FULL_N,
                           batch_size=bench_extraction.BATCH_SIZE, **common),
        **{f"guard_n{n}": Spec(n=n, batch_size=bench_guard.BATCH_SIZE, **common)
           for n in ((bench_guard.QUICK_N,) if args.quick else bench_guard.SIZES)},
        "tofu_eval": Spec(n=bench_tofu_eval.QUICK_N if args.quick else bench_tofu_eval.FULL_N,
                          batch_size=bench_tofu_eval.BATCH_SIZE, **common),
        "whp_labels": Spec(n=bench_whp.QUICK_N if args.quick else bench_whp.FULL_N, batch_size=bench_whp.BATCH_SIZE,
                           **common),
        # against the peers' own code paths (open-unlearning's evaluator, MIMIR's attacks)
        **{f"tofu_ou{suffix}": Spec(n=bench_tofu_ou.QUICK_N if args.quick else bench_tofu_ou.FULL_N,
                                    batch_size=bench_tofu_ou.BATCH_SIZE, **{**common, "model": model})
           for suffix, model in _peer_models(args)},
        **{f"mia_mimir{suffix}": Spec(n=bench_mia_mimir.QUICK_N if args.quick else bench_mia_mimir.FULL_N,
                                      batch_size=bench_mia_mimir.BATCH_SIZE, **{**common, "model": model})
           for suffix, model in _peer_models(args)},
    }


def _peer_models(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """The models the peer comparisons run on: the tiny LLaMA (or --model), plus SmolLM2-135M in a full run."""
    models: list[tuple[str, str | None]] = [("", args.model)]
    if not args.quick and not args.no_smollm2 and args.model is None:
        models.append(("_smollm2-135m", "smollm2-135m"))
    return models


def _runner(name: str, quick: bool) -> Callable[[Spec], dict[str, Any]]:
    """The function running benchmark ``name`` on a spec (GUARD's JVP batch-size sweep: full run, N=64)."""
    if name.startswith("guard_"):
        return lambda spec: bench_guard.run(
            spec, variants=None if not quick and spec.n in bench_guard.SWEEP_SIZES else ())
    modules = {"scoring": bench_scoring, "extraction": bench_extraction, "tofu_eval": bench_tofu_eval,
               "whp_labels": bench_whp, "tofu_ou": bench_tofu_ou, "mia_mimir": bench_mia_mimir}
    return modules[name.split("_smollm2")[0]].run


def print_table(benchmarks: dict[str, dict[str, Any]]) -> None:
    """One line per benchmark: baseline and optimized seconds, speedup vs target, identical, peak RSS."""
    print(f"\n{'benchmark':<26} {'baseline s':>10} {'optimized s':>11} {'speedup':>8} {'target':>6} "
          f"{'identical':>9} {'peak RSS MB (base/opt)':>24}")
    for name, b in benchmarks.items():
        base, opt = b["seconds_median"][b["baseline"]], b["seconds_median"][b["optimized"]]
        rss = f"{b['peak_rss_mb'][b['baseline']]:.0f}/{b['peak_rss_mb'][b['optimized']]:.0f}"
        print(f"{name:<26} {base:>10.2f} {opt:>11.2f} {b['speedup']:>7.2f}x {b['target_speedup']:>5.1f}x "
              f"{str(b['identical']):>9} {rss:>24}")


def _digest(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "baseline": report["baseline"],
        "optimized": report["optimized"],
        "speedup": report["speedup"],
        "target_speedup": report["target_speedup"],
        "meets_target": report["meets_target"],
        "identical": report["identical"],
        "n": report["config"]["n"],
        "max_rel_error": report["identity"][report["optimized"]].get("max_rel_error"),  # GUARD only
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
    parser.add_argument("--quick", action="store_true", help="small N for every benchmark (a smoke run)")
    parser.add_argument("--model", default=None, help="local Hugging Face model folder (default: tiny LLaMA)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per variant (0 = torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--no-smollm2", action="store_true", help="peer comparisons on the tiny model only")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    specs = _specs(args)
    summary: dict[str, Any] = {"quick": args.quick, "machine": machine_info(specs["scoring"]),
                               "load_avg_start": load_avg(), "benchmarks": {}}
    for name, spec in specs.items():
        report = _runner(name, args.quick)(spec)
        print_summary(report)
        if name.startswith("guard_"):
            bench_guard.print_errors(report)
        summary["benchmarks"][name] = _digest(report)
    memsinks = bench_memsinks.run(quick=args.quick, threads=args.threads or 2, smollm2=not args.quick,
                                  model=args.model)
    bench_memsinks.print_report(memsinks)
    summary["memsinks"] = {"meets_target": memsinks["meets_target"], "hooks_act": memsinks["hooks_act"],
                           "overhead": {r["model"]: r["overhead"] for r in memsinks["results"]},
                           "path": memsinks["path"]}
    summary["load_avg_end"] = load_avg()
    print_table(summary["benchmarks"])
    summary["all_identical"] = all(b["identical"] for b in summary["benchmarks"].values())
    summary["all_meet_target"] = all(b["meets_target"] for b in summary["benchmarks"].values())
    summary["wall_seconds_total"] = time.perf_counter() - started
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary -> {path} ({summary['wall_seconds_total']:.0f} s)")
    return 0 if summary["all_identical"] and memsinks["hooks_act"] else 1


if __name__ == "__main__":
    sys.exit(main())
