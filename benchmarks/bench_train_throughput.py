"""Training throughput: tokens/s and achieved GFLOP/s of a training step against the machine's fp32 matmul peak.

In one process (so both see the same machine load):

1. **Peak**: a loop of ``torch.mm`` on two 2048 × 2048 float32 matrices for about ``PEAK_SECONDS`` seconds
   with the same torch thread count; peak = 2·n³·iterations / seconds.
2. **Training step** (what ``lethe train`` runs per step: causal-LM forward with labels, backward, the
   optimizer HF Trainer builds for ``lethe train``'s default config (fused AdamW) and ``zero_grad``) on a
   batch of B × T tokens of the world's biographies, after two warm-up steps.
   tokens/s = B·T·steps / seconds. Achieved FLOP/s uses the decoder formula
   FLOPs/token = 6·N + 12·L·T·d (Kaplan et al. 2020 / PaLM appendix B: 6N for the forward and backward
   matmuls of the N weights that multiply activations -- every ``nn.Linear`` including the LM head, not the
   embedding lookup -- plus the attention scores and their weighted sums, 12·L·T·d); ``gflops_6n`` reports
   the plain 6·N·tokens too.

Fraction of peak = achieved / peak. Reported for the tiny LLaMA and SmolLM2-135M (``--no-smollm2`` to skip).

    python -m benchmarks.bench_train_throughput [--quick] [--threads 1] [--no-smollm2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS_DIR, Spec, build_setup, load_avg, machine_info, peak_rss_mb

NAME = "train_throughput"
PEAK_N = 2048
PEAK_SECONDS = 3.0
TARGET_FRACTION = 0.5  # goal for SmolLM2 (issue 11)
WARMUP_STEPS = 2


def matmul_peak_gflops(seconds: float = PEAK_SECONDS, n: int = PEAK_N) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    iterations, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        iterations += 1
    return 2 * n**3 * iterations / (time.perf_counter() - start) / 1e9


def matmul_params(model: torch.nn.Module) -> int:
    """Weights that multiply activations: every nn.Linear (the LM head included, tied or not)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def lethe_train_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer HF Trainer builds for ``lethe train``'s default configuration (``adamw_torch_fused``:
    one fused kernel over all parameters instead of ``foreach`` passes; SmolLM2 step 0.30 s -> 0.08 s)."""
    from transformers import Trainer

    from lethe.config import TrainConfig
    from lethe.train.trainer import training_arguments

    with tempfile.TemporaryDirectory() as folder:
        args = training_arguments(TrainConfig(), Path(folder) / "checkpoints", quiet=True)
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return optimizer_class(model.parameters(), **{**kwargs, "lr": 1e-5})


def step_throughput(spec: Spec, batch: int, length: int, steps: int) -> dict[str, Any]:
    setup = build_setup(spec)
    model, tokenizer = setup.model, setup.tokenizer
    ids = tokenizer(" ".join(setup.texts[:400]))["input_ids"]
    need = batch * length
    ids = (ids * (need // max(1, len(ids)) + 1))[:need]
    input_ids = torch.tensor(ids).view(batch, length)
    model.train()
    optimizer = lethe_train_optimizer(model)

    def step() -> None:
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(WARMUP_STEPS):  # the optimizer state and the allocator's buffers settle over two steps
        step()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    config = model.config
    n, layers, width = matmul_params(model), config.num_hidden_layers, config.hidden_size
    tokens_per_s = batch * length * steps / seconds
    return {"model": spec.model or "tiny", "batch": batch, "length": length, "steps": steps,
            "seconds": seconds, "cpu_seconds": cpu, "tokens_per_s": tokens_per_s, "matmul_params": n,
            "flops_per_token": 6 * n + 12 * layers * length * width,
            "gflops": (6 * n + 12 * layers * length * width) * tokens_per_s / 1e9,
            "gflops_6n": 6 * n * tokens_per_s / 1e9, "peak_rss_mb": round(peak_rss_mb(), 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-smollm2", action="store_true")
    args = parser.parse_args(argv)
    runs = [(Spec(n=0, batch_size=8, threads=args.threads), 8, 256, 2 if args.quick else 5)]
    if not args.no_smollm2 and not args.quick:
        runs.append((Spec(n=0, batch_size=2, threads=args.threads, model="smollm2-135m"), 2, 256, 5))
    torch.set_num_threads(args.threads or torch.get_num_threads())
    report: dict[str, Any] = {"benchmark": NAME, "machine": machine_info(runs[0][0]), "load_avg_start": load_avg(),
                              "formula": "FLOPs/token = 6N + 12*L*T*d (N = nn.Linear weights incl. LM head)",
                              "results": []}
    for spec, batch, length, steps in runs:
        peak = matmul_peak_gflops()
        result = step_throughput(spec, batch, length, steps)
        peak_after = matmul_peak_gflops()
        result["peak_gflops"] = max(peak, peak_after)
        result["peak_gflops_before_after"] = [peak, peak_after]
        result["fraction_of_peak"] = result["gflops"] / result["peak_gflops"]
        result["load_avg"] = load_avg()
        report["results"].append(result)
        print(f"{result['model']:>14}: {result['tokens_per_s']:8.1f} tokens/s, {result['gflops']:6.2f} GFLOP/s "
              f"(6N only {result['gflops_6n']:.2f}) = {100 * result['fraction_of_peak']:.0f}% of the measured "
              f"fp32 matmul peak {result['peak_gflops']:.1f} GFLOP/s; load {result['load_avg']}")
    report["load_avg_end"] = load_avg()
    smol = [r for r in report["results"] if r["model"] != "tiny"]
    report["meets_target"] = bool(smol) and smol[0]["fraction_of_peak"] >= TARGET_FRACTION
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{NAME}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
