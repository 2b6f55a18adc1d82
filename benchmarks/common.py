"""Shared benchmark machinery: inputs, timing, one fresh process per variant, memory, machine info, JSON.

A benchmark module defines *variants* (a baseline and the optimized path), each a function
``prepare(setup, spec) -> Variant``. :func:`run_benchmark` measures every variant -- by default each run in
its own subprocess (``python -m benchmarks.<module> --child VARIANT ...``), so that its peak RSS
(``ru_maxrss``) is its own, in interleaved rounds (baseline, optimized, baseline, optimized, ...), so that
a change in machine load hits every variant alike -- then checks that the outputs agree and writes
``benchmarks/results/<name>.json``.

Inputs are deterministic: the embedded fictional world (200 authors, seed 0), its biographies, and either a
local Hugging Face model folder (``--model PATH``) or a random-init tiny LLaMA (hidden 128, 4 layers) with a
2,048-token BPE tokenizer trained on those biographies; every process rebuilds exactly the same model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORLD_AUTHORS = 200
WORLD_SEED = 0


@dataclass
class Spec:
    """Everything needed to rebuild the same inputs and run one variant in a fresh process."""

    n: int
    batch_size: int
    model: str | None = None
    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    seed: int = 0
    repeats: int = 3
    max_seconds: float = 90.0
    threads: int = 1
    device: str = "cpu"

    @classmethod
    def from_json(cls, text: str) -> Spec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


@dataclass
class Setup:
    """The model, its tokenizer and the benchmark texts (the world's biographies, then the held-out ones)."""

    model: Any
    tokenizer: Any
    texts: list[str]
    device: torch.device

    @property
    def pad_id(self) -> int:
        for token_id in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if token_id is not None:
                return int(token_id)
        return 0


@dataclass
class Variant:
    """One prepared variant: ``warmup()`` runs it on a small subset, ``run()`` on all items and returns outputs."""

    warmup: Callable[[], Any]
    run: Callable[[], Any]
    n_items: int
    n_tokens: int


Prepare = Callable[[Setup, Spec], Variant]


# ------------------------------------------------------------------------------------------------ inputs


def world_texts() -> list[str]:
    """The biographies of the embedded world (200 authors, seed 0) followed by the held-out biographies."""
    from lethe.data.fictional import generate_world
    from lethe.data.text import load_documents

    with tempfile.TemporaryDirectory(prefix="lethe-bench-world-") as tmp:
        generate_world(tmp, n_authors=WORLD_AUTHORS, seed=WORLD_SEED)
        main = [d.text for d in load_documents(Path(tmp) / "biographies.jsonl")]
        held_out = [d.text for d in load_documents(Path(tmp) / "biographies_holdout.jsonl")]
    return main + held_out


_WORLD_DIRS: dict[str, tempfile.TemporaryDirectory[str]] = {}


def world_dir() -> Path:
    """The embedded world's files (200 authors, seed 0: TOFU-format splits, biographies, ...), generated once
    per process into a temporary folder that is removed when the process exits."""
    from lethe.data.fictional import generate_world

    if "world" not in _WORLD_DIRS:
        folder = tempfile.TemporaryDirectory(prefix="lethe-bench-world-")
        generate_world(folder.name, n_authors=WORLD_AUTHORS, seed=WORLD_SEED)
        _WORLD_DIRS["world"] = folder
    return Path(_WORLD_DIRS["world"].name)


def build_setup(spec: Spec) -> Setup:
    """The model (``spec.model`` folder, else the tiny LLaMA) in eval mode on ``spec.device``, and the texts."""
    from lethe.models import build_tiny, load_model

    if spec.threads:
        torch.set_num_threads(spec.threads)
    texts = world_texts()
    if spec.model:
        model, tokenizer = load_model(spec.model)
    else:
        model, tokenizer = build_tiny(
            texts[:WORLD_AUTHORS], vocab_size=spec.vocab_size, seed=spec.seed, hidden_size=spec.hidden_size,
            num_layers=spec.num_layers, num_heads=spec.num_heads, intermediate_size=spec.intermediate_size,
        )
    device = torch.device(spec.device)
    model.to(device).eval()
    return Setup(model=model, tokenizer=tokenizer, texts=texts, device=device)


# ------------------------------------------------------------------------------------------------ measuring


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float | None:
    """This process's resident set size now (Linux ``/proc/self/statm``; None elsewhere)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_variant(prepare: Prepare, setup: Setup, spec: Spec) -> dict[str, Any]:
    """Warm up, then time up to ``spec.repeats`` runs (fewer once ``spec.max_seconds`` is spent; at least one).

    Memory: ``peak_rss_mb`` is the process's ``ru_maxrss`` high-water mark (in an isolated child this is the
    variant's own peak, setup included); ``peak_rss_delta_mb`` is that peak minus the RSS just before the
    variant ran (an upper bound on the variant's extra memory if the setup peaked higher:
    ``peak_set_by_variant`` says whether the variant raised the high-water mark).
    """
    variant = prepare(setup, spec)
    rss_before = current_rss_mb()
    peak_before = peak_rss_mb()
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(setup.device)
    load_before = load_avg()
    start = time.perf_counter()
    variant.warmup()
    _sync(setup.device)
    warmup_s = time.perf_counter() - start
    times: list[float] = []
    output: Any = None
    for _ in range(max(1, spec.repeats)):
        start = time.perf_counter()
        output = variant.run()
        _sync(setup.device)
        times.append(time.perf_counter() - start)
        if sum(times) >= spec.max_seconds:
            break
    peak_after = peak_rss_mb()
    reference = rss_before if rss_before is not None else peak_before
    result: dict[str, Any] = {
        "seconds_median": statistics.median(times),
        "seconds_all": times,
        "n_repeats": len(times),
        "warmup_seconds": warmup_s,
        "n_items": variant.n_items,
        "n_tokens": variant.n_tokens,
        "peak_rss_mb": round(peak_after, 1),
        "rss_before_mb": None if rss_before is None else round(rss_before, 1),
        "peak_rss_delta_mb": round(peak_after - reference, 1),
        "peak_set_by_variant": peak_after > peak_before,
        "cuda_peak_mb": (round(torch.cuda.max_memory_allocated(setup.device) / 2**20, 1)
                         if setup.device.type == "cuda" else None),
        "torch_threads": torch.get_num_threads(),
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
        "output": output,
    }
    return result


def run_isolated(module: str, variant: str, spec: Spec) -> dict[str, Any]:
    """Measure one variant in a fresh ``python -m <module> --child <variant>`` process; return its result."""
    with tempfile.TemporaryDirectory(prefix="lethe-bench-") as tmp:
        out = Path(tmp) / "variant.json"
        command = [sys.executable, "-m", module, "--child", variant, "--spec", json.dumps(asdict(spec)),
                   "--child-out", str(out)]
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + (os.pathsep + path if path else "")}
        proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
            raise RuntimeError(f"benchmark child {module} --child {variant} failed (exit {proc.returncode}):\n{tail}")
        result = json.loads(out.read_text())
    result["isolated"] = True
    return result


def _interleaved_rounds(module: str, names: list[str], spec: Spec) -> dict[str, dict[str, Any]]:
    """Round r runs every variant once, each in a fresh child (warm-up + one timed run), so that a change in
    machine load hits all variants alike; rounds stop after ``spec.repeats`` or once some variant's timed
    runs add up to ``spec.max_seconds`` (at least one round)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    one = replace(spec, repeats=1)
    for _ in range(max(1, spec.repeats)):
        for name in names:
            runs[name].append(run_isolated(module, name, one))
        if max(sum(r["seconds_all"][0] for r in results) for results in runs.values()) >= spec.max_seconds:
            break
    merged: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        times = [r["seconds_all"][0] for r in results]
        cuda = [r["cuda_peak_mb"] for r in results if r["cuda_peak_mb"] is not None]
        merged[name] = {
            **results[-1],
            "seconds_median": statistics.median(times),
            "seconds_all": times,
            "n_repeats": len(times),
            "warmup_seconds": statistics.median(r["warmup_seconds"] for r in results),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "peak_rss_delta_mb": max(r["peak_rss_delta_mb"] for r in results),
            "peak_set_by_variant": any(r["peak_set_by_variant"] for r in results),
            "cuda_peak_mb": max(cuda) if cuda else None,
            "load_avg_before": results[0]["load_avg_before"],
            "load_avg_after": results[-1]["load_avg_after"],
            "load_avg_per_round": [r["load_avg_before"] for r in results],
        }
    return merged


def child_main(args: argparse.Namespace, variants: dict[str, Prepare]) -> int:
    """Entry point of a child process: rebuild the inputs, measure one variant, write its JSON."""
    spec = Spec.from_json(args.spec)
    setup = build_setup(spec)
    result = measure_variant(variants[args.child], setup, spec)
    Path(args.child_out).write_text(json.dumps(result))
    return 0


# ------------------------------------------------------------------------------------------------ reporting


def machine_info(spec: Spec) -> dict[str, Any]:
    """Python / torch / CPU facts of this machine (threads as the variants will use them)."""
    import transformers

    cpu_model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": spec.threads or torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": spec.device,
        "cuda_device": torch.cuda.get_device_name(0) if spec.device.startswith("cuda") else None,
        "load_avg": load_avg(),
    }
    return info


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def run_benchmark(*, name: str, module: str, description: str, variants: dict[str, Prepare], baseline: str,
                  optimized: str, spec: Spec, compare: Callable[[Any, Any], dict[str, Any]], target: float,
                  isolate: bool = True, out_path: str | Path | None = None,
                  notes: Sequence[str] = ()) -> dict[str, Any]:
    """Measure every variant, compare each one's output with the baseline's, write and return the report."""
    started = time.perf_counter()
    machine = machine_info(spec)
    threads_before = torch.get_num_threads()
    setup = None if isolate else build_setup(spec)
    measured: dict[str, dict[str, Any]] = {}
    try:
        if isolate:
            measured = _interleaved_rounds(module, list(variants), spec)
        else:
            assert setup is not None
            for variant_name, prepare in variants.items():
                measured[variant_name] = measure_variant(prepare, setup, spec)
                measured[variant_name]["isolated"] = False
    finally:
        torch.set_num_threads(threads_before)  # in-process runs leave the caller's setting as it was
    outputs = {v: r.pop("output") for v, r in measured.items()}
    base_s = measured[baseline]["seconds_median"]
    checks: dict[str, dict[str, Any]] = {}
    for variant_name, result in measured.items():
        median = result["seconds_median"]
        result["items_per_s"] = result["n_items"] / median if median > 0 else None
        result["tokens_per_s"] = result["n_tokens"] / median if median > 0 else None
        result["speed_ratio"] = base_s / median if median > 0 else None
        if variant_name != baseline:
            checks[variant_name] = compare(outputs[baseline], outputs[variant_name])
    speedup = measured[baseline]["seconds_median"] / measured[optimized]["seconds_median"]
    per_round = [b / o for b, o in zip(measured[baseline]["seconds_all"], measured[optimized]["seconds_all"],
                                      strict=False) if o > 0]
    base_delta = measured[baseline]["peak_rss_delta_mb"]
    report: dict[str, Any] = {
        "benchmark": name,
        "description": description,
        "baseline": baseline,
        "optimized": optimized,
        "speedup": speedup,
        "speedup_per_round": per_round if isolate else None,
        "speedup_paired_median": statistics.median(per_round) if isolate and per_round else None,
        "target_speedup": target,
        "meets_target": speedup >= target,
        "identical": checks[optimized]["identical"],
        "identity": checks,
        "peak_rss_mb": {v: r["peak_rss_mb"] for v, r in measured.items()},
        "peak_rss_delta_mb": {v: r["peak_rss_delta_mb"] for v, r in measured.items()},
        "peak_rss_delta_ratio": (measured[optimized]["peak_rss_delta_mb"] / base_delta) if base_delta > 0 else None,
        "cuda_peak_mb": {v: r["cuda_peak_mb"] for v, r in measured.items()},
        "timing_method": ("interleaved rounds: each round runs every variant once in a fresh child process "
                          "(warm-up, then one timed run); speedup = median(baseline) / median(optimized)"
                          if isolate else "variants one after another in this process, each warmed up and "
                                          "timed n_repeats times; speedup = ratio of medians"),
        "memory_method": ("ru_maxrss of a fresh child process per variant run (max over rounds)" if isolate
                          else "ru_maxrss high-water mark of one process (variants not isolated; deltas "
                               "after the first variant are lower bounds)"),
        "load_avg_start": machine["load_avg"],
        "load_avg_end": load_avg(),
        "config": asdict(spec),
        "machine": machine,
        "variants": measured,
        "notes": list(notes),
        "wall_seconds_total": time.perf_counter() - started,
    }
    report = _json_safe(report)
    path = Path(out_path) if out_path is not None else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    report["path"] = str(path)
    return report


def print_summary(report: dict[str, Any]) -> None:
    """One line per variant plus the verdict."""
    print(f"== {report['benchmark']}: {report['description']}")
    print(f"   load avg {report['load_avg_start']} -> {report['load_avg_end']}, "
          f"torch threads {report['machine']['torch_threads']}, device {report['machine']['device']}")
    for variant_name, r in report["variants"].items():
        print(f"   {variant_name:>16}: {r['seconds_median']:8.3f} s median of {r['n_repeats']} "
              f"({r['items_per_s']:7.1f} items/s, {r['tokens_per_s']:9.0f} tokens/s)  x{r['speed_ratio']:.2f}  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (+{r['peak_rss_delta_mb']:.0f} MB)")
    verdict = "meets" if report["meets_target"] else "MISSES"
    print(f"   speedup {report['speedup']:.2f}x ({verdict} target {report['target_speedup']:g}x), "
          f"identical={report['identical']}  -> {report.get('path', '')}")


# ------------------------------------------------------------------------------------------------ CLI


def arg_parser(description: str, default_batch: int) -> argparse.ArgumentParser:
    """Options common to every benchmark (plus the hidden child-process options)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small N for a smoke run")
    parser.add_argument("--n", type=int, default=None, help="number of biographies (overrides --quick)")
    parser.add_argument("--model", default=None, help="local Hugging Face model folder (default: tiny LLaMA)")
    parser.add_argument("--batch-size", type=int, default=default_batch)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    parser.add_argument("--max-seconds", type=float, default=90.0,
                        help="stop repeating a variant once its timed runs used this long (at least one run)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: stable on a shared CPU; 0 = torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--hidden-size", type=int, default=128, help="tiny model hidden size")
    parser.add_argument("--num-layers", type=int, default=4, help="tiny model layers")
    parser.add_argument("--vocab-size", type=int, default=2048, help="tiny model BPE vocabulary")
    parser.add_argument("--no-isolate", action="store_true", help="run variants in this process")
    parser.add_argument("--out", default=None, help="output JSON (default benchmarks/results/<name>.json)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    return parser


def spec_from_args(args: argparse.Namespace, *, full_n: int, quick_n: int) -> Spec:
    n = args.n if args.n is not None else (quick_n if args.quick else full_n)
    return Spec(n=n, batch_size=args.batch_size, model=args.model, vocab_size=args.vocab_size,
                hidden_size=args.hidden_size, num_layers=args.num_layers, repeats=args.repeats,
                max_seconds=args.max_seconds, threads=args.threads, device=args.device)


def benchmark_main(argv: Sequence[str] | None, *, doc: str, batch_size: int, variants: dict[str, Prepare],
                   run: Callable[..., dict[str, Any]], full_n: int, quick_n: int,
                   after: Callable[[dict[str, Any]], None] | None = None) -> int:
    """The command line of a one-size benchmark module: a child variant (``--child``) or the whole
    comparison, its summary printed (then ``after(report)``); exit status 1 if the outputs differ."""
    args = arg_parser(doc.splitlines()[0], batch_size).parse_args(argv)
    if args.child:
        return child_main(args, variants)
    report = run(spec_from_args(args, full_n=full_n, quick_n=quick_n), isolate=not args.no_isolate,
                 out_path=args.out)
    print_summary(report)
    if after is not None:
        after(report)
    return 0 if report["identical"] else 1
