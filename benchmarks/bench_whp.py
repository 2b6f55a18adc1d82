"""WHP generic labels: blocks batched vs one block at a time (same labels).

Both variants run :func:`lethe.unlearn.whp.generic_labels` (the baseline on the translated block, the
reinforced model on the original one, forbidden tokens to the mean logit, argmax of v_b − α·ReLU(v_r − v_b))
over the same blocks: ``one_block`` (baseline) with ``batch_size=1``, ``batched`` (optimized) with
``batch_size`` blocks per forward pass (right padding, only the labeled rows kept). The target text is the
embedded world's saga (chapters cycled to N blocks) with its anchored-term dictionary; the reinforced
model is a second tiny LLaMA (another seed) with the same tokenizer, or, with ``--model``, a copy of the
model with perturbed weights. ``identical`` = every block's labels are equal. tokens = labeled tokens.

    python -m benchmarks.bench_whp [--quick] [--n 24] [--batch-size 8]
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks.common import Prepare, Setup, Spec, Variant, benchmark_main, run_benchmark, world_dir

NAME = "whp_labels"
FULL_N = 24
QUICK_N = 6
BATCH_SIZE = 8
TARGET = 1.0


def _inputs(setup: Setup, spec: Spec):
    from lethe.unlearn import whp
    from lethe.unlearn.whp_run import load_dictionary

    folder = world_dir()
    saga = [json.loads(line)["text"] for line in (folder / "saga.jsonl").read_text().splitlines() if line.strip()]
    terms, _ = load_dictionary(folder / "anchored_terms.json", saga)
    tokenizer = setup.tokenizer
    bos = [int(tokenizer.bos_token_id)] if tokenizer.bos_token_id is not None else []
    documents = [bos + tokenizer(t, add_special_tokens=False)["input_ids"] for t in saga]
    blocks = whp.make_blocks(documents, whp.DEFAULT_BLOCK)
    blocks = [blocks[i % len(blocks)] for i in range(spec.n)]
    table = whp.build_term_table(tokenizer, terms, saga)
    translations = [whp.translate_block(b, table, whp.block_choices(table, 0, i)) for i, b in enumerate(blocks)]
    return blocks, translations


def _reinforced(setup: Setup, spec: Spec):
    if spec.model:
        model = copy.deepcopy(setup.model)
        generator = torch.Generator().manual_seed(spec.seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator).to(p) * 0.01 * p.std().clamp(min=1e-3))
        return model
    from lethe.models import tiny_model

    return tiny_model(setup.tokenizer, seed=spec.seed + 1, hidden_size=spec.hidden_size, num_layers=spec.num_layers,
                      num_heads=spec.num_heads, intermediate_size=spec.intermediate_size).to(setup.device).eval()


def _variant(batch_size: int | None) -> Prepare:
    def prepare(setup: Setup, spec: Spec) -> Variant:
        from lethe.unlearn.whp import generic_labels

        blocks, translations = _inputs(setup, spec)
        reinforced = _reinforced(setup, spec)
        size = batch_size or spec.batch_size

        def run(sub: int | None = None) -> list[list[int]]:
            n = len(blocks) if sub is None else sub
            return generic_labels(setup.model, reinforced, blocks[:n], translations[:n], 5.0, batch_size=size,
                                  pad_id=setup.pad_id)

        labeled = sum(sum(tr.labeled[:-1]) for tr in translations)
        return Variant(warmup=lambda: run(min(2, len(blocks))), run=run, n_items=len(blocks), n_tokens=labeled)

    return prepare


VARIANTS: dict[str, Prepare] = {"one_block": _variant(1), "batched": _variant(None)}


def compare_labels(expected: list[list[int]], actual: list[list[int]]) -> dict[str, Any]:
    mismatched = [i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b]
    return {"identical": len(expected) == len(actual) and not mismatched, "n_blocks": len(expected),
            "n_mismatched": len(mismatched)}


def run(spec: Spec | None = None, *, isolate: bool = True, out_path: str | None = None) -> dict[str, Any]:
    spec = spec or Spec(n=FULL_N, batch_size=BATCH_SIZE)
    return run_benchmark(
        name=NAME, module="benchmarks.bench_whp",
        description=f"WHP generic labels of {spec.n} saga blocks: {spec.batch_size} blocks per forward pass vs one",
        variants=VARIANTS, baseline="one_block", optimized="batched", spec=spec, compare=compare_labels,
        target=TARGET, isolate=isolate, out_path=out_path,
        notes=["items = blocks (at most 512 tokens); tokens = labeled positions",
               "timed region: both forward passes, the mapping back, the suppression and the argmax; translation "
               "(done once, before) excluded for both variants"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    return benchmark_main(argv, doc=__doc__, batch_size=BATCH_SIZE, variants=VARIANTS, run=run, full_n=FULL_N,
                          quick_n=QUICK_N)


if __name__ == "__main__":
    sys.exit(main())
