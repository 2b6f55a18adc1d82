"""MemSinks overhead: a training step with MemSinks hooks (``train`` mode) vs the same step without hooks.

Both variants run the same model (two copies of the same weights), the same batches of biographies and the
same AdamW step (forward, backward, optimizer), interleaved round by round in one process so that a busy
machine slows both alike. The hooked step includes everything MemSinks adds: computing each token's sink
mask from its document ID (once per batch, over the distinct IDs: no loop over tokens), the [B, T, I]
multiplier and the element-wise product in every block. ``overhead = median(hooked) / median(plain) − 1``
(target ≤ 10% on CPU). ``cpu_overhead`` is the same ratio of process CPU time (``time.process_time``, all
threads): on a machine that other processes keep busy it moves far less than wall time (with one torch
thread it is the work itself). Separately timed: the mask computation alone. ``check``: the hooked model's first-step
loss differs from the plain one (the hooks act) and its masked sinks get zero gradient.

    python -m benchmarks.bench_memsinks [--quick] [--model smollm2-135m|PATH] [--threads 2]

Writes ``benchmarks/results/memsinks.json`` (one entry per model: the tiny LLaMA, and SmolLM2-135M unless
``--no-smollm2`` or the preset is not installed).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS_DIR, load_avg, world_texts

TARGET_OVERHEAD = 0.10


def _batches(tokenizer, texts: list[str], batch_size: int, length: int, n: int) -> list[dict[str, torch.Tensor]]:
    from lethe.train.collator import CausalLMCollator

    collate = CausalLMCollator(pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                               else tokenizer.eos_token_id)
    out = []
    for b in range(n):
        chunk = texts[b * batch_size : (b + 1) * batch_size]
        features = []
        for i, text in enumerate(chunk):
            ids = tokenizer(text, truncation=True, max_length=length)["input_ids"]
            features.append({"input_ids": ids, "labels": ids, "doc_id": 1 + b * batch_size + i})
        out.append(collate(features))
    return out


def _step(model, optimizer, batch, sinks=None) -> float:
    if sinks is not None:
        sinks.set_ids(batch["doc_ids"])
    labels = batch["labels"].masked_fill(batch["attention_mask"].eq(0), -100)
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                 use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def bench_model(name: str, model, tokenizer, texts: list[str], *, batch_size: int, length: int, steps: int,
                rounds: int) -> dict[str, Any]:
    from lethe.train.memsinks import MemSinks, sink_mask, spec_for

    spec = spec_for(model)
    batches = _batches(tokenizer, texts, batch_size, length, steps)
    plain, hooked = model.train(), copy.deepcopy(model).train()
    optimizers = {"plain": torch.optim.AdamW(plain.parameters(), lr=1e-4),
                  "memsinks": torch.optim.AdamW(hooked.parameters(), lr=1e-4)}
    sinks = MemSinks(hooked, spec, "train")
    first = {"plain": _step(plain, optimizers["plain"], batches[0]),
             "memsinks": _step(hooked, optimizers["memsinks"], batches[0], sinks)}  # warm-up, also the check
    times: dict[str, list[float]] = {"plain": [], "memsinks": []}
    cpu_times: dict[str, list[float]] = {"plain": [], "memsinks": []}
    for _ in range(rounds):
        for variant in ("plain", "memsinks"):
            net = plain if variant == "plain" else hooked
            started, cpu_started = time.perf_counter(), time.process_time()
            for batch in batches:
                _step(net, optimizers[variant], batch, sinks if variant == "memsinks" else None)
            times[variant].append((time.perf_counter() - started) / len(batches))
            cpu_times[variant].append((time.process_time() - cpu_started) / len(batches))
    sinks.remove()
    ids = torch.cat([b["doc_ids"] for b in batches])
    started = time.perf_counter()
    for _ in range(10):
        sink_mask(ids, spec.n_sink, spec.p_mem)
    mask_s = (time.perf_counter() - started) / 10 / len(batches)
    median = {v: statistics.median(t) for v, t in times.items()}
    cpu_median = {v: statistics.median(t) for v, t in cpu_times.items()}
    tokens = int(sum(b["attention_mask"].sum() for b in batches)) / len(batches)
    overhead = median["memsinks"] / median["plain"] - 1
    return {
        "model": name, "parameters": sum(p.numel() for p in model.parameters()),
        "intermediate_size": spec.intermediate_size, "n_sink": spec.n_sink, "layers": spec.num_layers,
        "batch_size": batch_size, "tokens_per_step": tokens, "steps_per_round": steps, "rounds": rounds,
        "step_seconds_median": median, "step_seconds_all": times,
        "tokens_per_s": {v: tokens / s for v, s in median.items()},
        "cpu_seconds_median": cpu_median, "cpu_overhead": cpu_median["memsinks"] / cpu_median["plain"] - 1,
        "overhead": overhead, "target_overhead": TARGET_OVERHEAD, "meets_target": overhead <= TARGET_OVERHEAD,
        "mask_seconds_per_step": mask_s, "mask_share_of_step": mask_s / median["memsinks"],
        "first_step_loss": first, "hooks_change_the_loss": abs(first["plain"] - first["memsinks"]) > 1e-6,
    }


def _smollm2():
    from lethe.errors import LetheError
    from lethe.models import load_model

    try:
        return load_model("smollm2-135m")
    except LetheError as err:
        print(f"skipping SmolLM2-135M: {err}", file=sys.stderr)
        return None


TINY_SIZE = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 512}


def run(*, quick: bool = False, threads: int = 2, smollm2: bool = True, model: str | None = None,
        tiny_size: dict[str, int] | None = None, out_path: Path | None = None) -> dict[str, Any]:
    """Measure the tiny LLaMA (``tiny_size``, default :data:`TINY_SIZE`), then SmolLM2-135M or ``model``."""
    from lethe.models import build_tiny, load_model

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    size = tiny_size or TINY_SIZE
    texts = world_texts()
    results = []
    tiny, tokenizer = build_tiny(texts[:200], vocab_size=2048, seed=0, **size)
    name = f"tiny LLaMA ({size['num_layers']} x {size['hidden_size']}, MLP {size['intermediate_size']})"
    results.append(bench_model(name, tiny, tokenizer, texts, batch_size=8, length=256,
                               steps=4 if quick else 8, rounds=3 if quick else 5))
    if model:
        loaded = load_model(model)
        results.append(bench_model(model, *loaded, texts, batch_size=2, length=128, steps=2, rounds=3))
    elif smollm2 and not quick:
        loaded = _smollm2()
        if loaded is not None:
            results.append(bench_model("SmolLM2-135M", *loaded, texts, batch_size=2, length=128, steps=2, rounds=3))
    report = {"benchmark": "memsinks", "description": __doc__.splitlines()[0], "threads": torch.get_num_threads(),
              "load_avg": load_avg(), "results": results,
              "meets_target": all(r["meets_target"] for r in results),
              "hooks_act": all(r["hooks_change_the_loss"] for r in results)}
    path = out_path or RESULTS_DIR / "memsinks.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    report["path"] = str(path)
    torch.set_num_threads(previous_threads)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"== memsinks: {report['description']} (threads {report['threads']}, load {report['load_avg']})")
    for r in report["results"]:
        s = r["step_seconds_median"]
        print(f"   {r['model']:>30}: plain {s['plain'] * 1000:8.1f} ms/step, memsinks {s['memsinks'] * 1000:8.1f} "
              f"ms/step -> overhead {r['overhead']:+.1%} (target <= {r['target_overhead']:.0%}; CPU time "
              f"{r['cpu_overhead']:+.1%}); mask "
              f"{r['mask_seconds_per_step'] * 1000:.2f} ms/step ({r['mask_share_of_step']:.1%})")
    print(f"   -> {report['path']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, fewer steps")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0 = torch's choice)")
    parser.add_argument("--model", default=None, help="another model folder or preset instead of SmolLM2")
    parser.add_argument("--no-smollm2", action="store_true", help="skip the SmolLM2-135M measurement")
    args = parser.parse_args(argv)
    report = run(quick=args.quick, threads=args.threads, smollm2=not args.no_smollm2, model=args.model)
    print_report(report)
    return 0 if report["hooks_act"] else 1


if __name__ == "__main__":
    sys.exit(main())
