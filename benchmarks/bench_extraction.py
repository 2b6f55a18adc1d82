"""Verbatim extraction: Lethe's batched greedy decoding vs one ``model.generate`` call per sample.

- ``batched`` (optimized): :func:`lethe.audit.generation.greedy_continue` -- prefixes sorted by length, cut
  into batches of 32, left-padded with an attention mask, greedy with the KV cache.
- ``per_sample`` (baseline): one ``model.generate`` call per prefix (batch 1, no padding), with the same
  greedy settings (no sampling, one beam, KV cache, EOS does not stop decoding, clean generation config).

Each prefix is a biography's tokens (BOS + text) minus its last 50 tokens
(:func:`lethe.audit.extraction.split_prefix_suffix`), and 50 tokens are generated from it, as in
``lethe audit extraction``. Scoring the generations (ROUGE-L etc.) is identical for both paths and is not
timed. ``identical`` = every sample's 50 generated token ids are equal.

    python -m benchmarks.bench_extraction [--quick] [--n 100] [--model PATH]
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers import GenerationConfig

from benchmarks.common import (
    Prepare,
    Setup,
    Spec,
    Variant,
    benchmark_main,
    run_benchmark,
)

NAME = "extraction"
FULL_N = 100
QUICK_N = 20
BATCH_SIZE = 32
SUFFIX_LEN = 50
TARGET = 4.0


def prefixes(setup: Setup, n: int) -> list[list[int]]:
    """The first ``n`` biographies long enough for a 50-token suffix, as prefix token ids (BOS + text)."""
    from lethe.audit.extraction import split_prefix_suffix

    tokenizer = setup.tokenizer
    bos = [int(tokenizer.bos_token_id)] if tokenizer.bos_token_id is not None else []
    out: list[list[int]] = []
    for text in setup.texts:
        split = split_prefix_suffix(bos + tokenizer(text, add_special_tokens=False)["input_ids"], SUFFIX_LEN)
        if split is not None:
            out.append(split[0])
        if len(out) == n:
            break
    return out


# ------------------------------------------------------------------------------------------------ baseline


@contextmanager
def _plain_generation_config(model: Any) -> Iterator[None]:
    """Hide the model's own generation defaults (EOS, sampling, ...) while the baseline runs."""
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def per_sample_generate(model: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad_id: int,
                        device: torch.device) -> list[list[int]]:
    """One batch-1 greedy ``generate`` call per prompt; the new token ids of each."""
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, use_cache=True,
                              pad_token_id=pad_id, eos_token_id=None)
    out: list[list[int]] = []
    with _plain_generation_config(model), torch.inference_mode():
        for prompt in prompts:
            input_ids = torch.tensor([list(prompt)], device=device)
            generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                       generation_config=config)
            out.append(generated[0, input_ids.shape[1]:].tolist())
    return out


# ------------------------------------------------------------------------------------------------ variants


def _per_sample(setup: Setup, spec: Spec) -> Variant:
    prompts = prefixes(setup, spec.n)

    def run(sub: int | None = None) -> list[list[int]]:
        return per_sample_generate(setup.model, prompts[:sub], SUFFIX_LEN, setup.pad_id, setup.device)

    return Variant(warmup=lambda: run(1), run=run, n_items=len(prompts), n_tokens=len(prompts) * SUFFIX_LEN)


def _batched(setup: Setup, spec: Spec) -> Variant:
    from lethe.audit.generation import greedy_continue

    prompts = prefixes(setup, spec.n)

    def run(sub: int | None = None) -> list[list[int]]:
        return greedy_continue(setup.model, prompts[:sub], SUFFIX_LEN, pad_id=setup.pad_id,
                               batch_size=spec.batch_size)

    return Variant(warmup=lambda: run(min(4, len(prompts))), run=run, n_items=len(prompts),
                   n_tokens=len(prompts) * SUFFIX_LEN)


VARIANTS: dict[str, Prepare] = {"per_sample": _per_sample, "batched": _batched}


def compare_tokens(expected: list[list[int]], actual: list[list[int]]) -> dict[str, Any]:
    """Exact equality of every sample's generated token ids."""
    mismatched = [i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b]
    same_count = len(expected) == len(actual)
    first_divergence = {}
    for i in mismatched[:10]:
        a, b = expected[i], actual[i]
        first_divergence[str(i)] = next((t for t, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                                        min(len(a), len(b)))
    return {"identical": same_count and not mismatched, "n_samples": len(expected),
            "n_mismatched": len(mismatched) + abs(len(expected) - len(actual)),
            "first_divergence_position": first_divergence}


def run(spec: Spec | None = None, *, isolate: bool = True, out_path: str | None = None) -> dict[str, Any]:
    """Run the extraction benchmark and write its JSON."""
    spec = spec or Spec(n=FULL_N, batch_size=BATCH_SIZE)
    return run_benchmark(
        name=NAME, module="benchmarks.bench_extraction",
        description=f"greedy {SUFFIX_LEN}-token suffixes of {spec.n} biographies: batched greedy_continue "
                    f"(batch {spec.batch_size}) vs one generate call per sample",
        variants=VARIANTS, baseline="per_sample", optimized="batched", spec=spec, compare=compare_tokens,
        target=TARGET, isolate=isolate, out_path=out_path,
        notes=[f"items = prefixes continued; tokens = generated tokens ({SUFFIX_LEN} per prefix)",
               "timed region: generation only; tokenization and ROUGE scoring excluded for both variants"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    return benchmark_main(argv, doc=__doc__, batch_size=BATCH_SIZE, variants=VARIANTS, run=run, full_n=FULL_N,
                          quick_n=QUICK_N)

if __name__ == "__main__":
    sys.exit(main())
