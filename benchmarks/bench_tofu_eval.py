"""TOFU evaluation: Lethe's one shared scoring pass vs one batch-1 forward per answer variant.

Data: the embedded world's TOFU-format splits (forget10_perturbed, retain_perturbed, real_authors_perturbed,
world_facts_perturbed and holdout10 for min-k), the first N items of each (``limit``). Every item's answer
variants are scored: forget / retain 7 each (answer, paraphrase, 5 perturbed), real authors / world facts 4
(answer, 3 perturbed), holdout 1 (answer).

- ``shared`` (optimized): :func:`lethe.audit.tofu_metrics.evaluate_tofu` itself (batch 16) -- ONE
  length-bucketed :func:`lethe.audit.scoring.score_sequences` pass over every (question, variant) of every
  split, then the batched greedy generation, here of a single token (``max_new_tokens=1``): the benchmark
  targets the scoring part, and one token keeps the ROUGE-L path in the loop at the cost of one batched
  forward over the prompts.
- ``per_variant`` (baseline): for every item and every answer variant, one batch-1 forward (no padding)
  and a log-softmax over the answer positions, giving ℓ = mean NLL; the 1-token greedy generation is the
  argmax at the last prompt position of the answer's forward (free for the baseline). The metrics are then
  computed from those numbers with the library's formulas (truth ratio, normalised probability, min-k, ES,
  EM, ROUGE-L).

Both timed regions include reading the splits and tokenization. ``identical`` = every per-item
probability, paraphrase / perturbed probability, normalised probability, truth ratio and min-k score agree
within rtol 1e-4; the argmax-derived values (extraction strength, exact memorization, the generated token
and its ROUGE-L) are compared exactly and reported as ``discrete_mismatches`` (a near-tie can flip an argmax
between a padded batch and a batch-1 forward).

    python -m benchmarks.bench_tofu_eval [--quick] [--n 100] [--model PATH]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    Prepare,
    Setup,
    Spec,
    Variant,
    benchmark_main,
    run_benchmark,
    world_dir,
)

NAME = "tofu_eval"
FULL_N = 100
QUICK_N = 20
BATCH_SIZE = 16
GEN_TOKENS = 1
FORGET_SPLIT = "forget10"
HOLDOUT_SPLIT = "holdout10"
RTOL = 1e-4
ATOL = 1e-12
TARGET = 1.5
SPLIT_FILES = {"forget": f"{FORGET_SPLIT}_perturbed", "retain": "retain_perturbed",
               "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed",
               "holdout": HOLDOUT_SPLIT}
HAS_PARAPHRASE = ("forget", "retain")
CONTINUOUS = ("prob", "para_prob", "pert_prob", "prob_normalised", "truth_ratio", "mia_min_k")
DISCRETE = ("extraction_strength", "exact_memorization", "rougeL_recall", "generated")
FIELDS = CONTINUOUS + DISCRETE

Outputs = dict[str, list[Any]]


def _records(data_dir: Path, limit: int) -> dict[str, list[dict[str, Any]]]:
    from lethe.data.tofu import load_split

    return {split: load_split(data_dir, name)[:limit] for split, name in SPLIT_FILES.items()}


def _variants(split: str, row: dict[str, Any]) -> list[str]:
    """The answer variants scored for one item: answer, (paraphrase), perturbed answers (none for holdout)."""
    if split == "holdout":
        return [row["answer"]]
    para = [row["paraphrased_answer"]] if split in HAS_PARAPHRASE else []
    return [row["answer"], *para, *row["perturbed_answer"]]


def _counts(setup: Setup, data_dir: Path, limit: int) -> tuple[int, int, int]:
    """(items, answer variants, answer tokens incl. EOS) of the evaluation; outside the timed region."""
    from lethe.data.formatting import qa_prompt_and_answer

    items = variants = tokens = 0
    for split, rows in _records(data_dir, limit).items():
        for row in rows:
            items += 1
            for answer in _variants(split, row):
                variants += 1
                tokens += len(qa_prompt_and_answer(setup.tokenizer, row["question"], answer)[1])
    return items, variants, tokens


# ------------------------------------------------------------------------------------------------ baseline


def _score_variant(model: Any, tokenizer: Any, question: str, answer: str,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch-1 forward of prompt + answer: (log p, argmax, target) of every answer token (EOS included)."""
    from lethe.data.formatting import qa_prompt_and_answer

    prompt_ids, answer_ids = qa_prompt_and_answer(tokenizer, question, answer)
    input_ids = torch.tensor([prompt_ids + answer_ids], device=device)
    logits = model(input_ids=input_ids).logits[0, len(prompt_ids) - 1: -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(answer_ids, device=device)
    logp = logprobs.gather(-1, targets[:, None]).squeeze(-1)
    return logp.cpu(), logprobs.argmax(-1).cpu(), targets.cpu()


def per_variant_eval(model: Any, tokenizer: Any, data_dir: Path, limit: int, device: torch.device) -> Outputs:
    """Every per-item TOFU value of :func:`evaluate_tofu`, from one batch-1 forward per answer variant."""
    from rouge_score import rouge_scorer

    from lethe.audit.tofu_metrics import (
        exact_memorization,
        extraction_strength,
        min_k_score,
        normalised_probability,
        rouge_l_recall,
        truth_ratio,
    )

    eos_id = tokenizer.eos_token_id
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    out: Outputs = {}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for split, rows in _records(data_dir, limit).items():
                fields: dict[str, list[Any]] = {}
                losses: list[list[float]] = []
                for row in rows:
                    scored = [_score_variant(model, tokenizer, row["question"], answer, device)
                              for answer in _variants(split, row)]
                    losses.append([float(-logp.mean()) for logp, _, _ in scored])
                    logp, argmax, targets = scored[0]
                    cut = targets.numel() - 1 if eos_id is not None and int(targets[-1]) == eos_id else targets.numel()
                    if split in ("forget", "holdout"):
                        fields.setdefault("mia_min_k", []).append(min_k_score(logp[:cut]))
                    if split == "holdout":
                        continue
                    fields.setdefault("extraction_strength", []).append(extraction_strength(argmax[:cut],
                                                                                            targets[:cut]))
                    fields.setdefault("exact_memorization", []).append(exact_memorization(argmax[:cut],
                                                                                          targets[:cut]))
                    first = int(argmax[0])  # greedy token after the prompt = 1-token generation
                    tokens = [] if first == eos_id else [first]
                    text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
                    fields.setdefault("generated", []).append(text)
                    fields.setdefault("rougeL_recall", []).append(rouge_l_recall(row["answer"], text, scorer))
                if split != "holdout":
                    loss = np.array([row[0] for row in losses])
                    n_correct = 2 if split in HAS_PARAPHRASE else 1
                    pert_loss = [np.array(row[n_correct:]) for row in losses]
                    prob, pert_prob = np.exp(-loss), [np.exp(-row) for row in pert_loss]
                    fields["prob"] = prob.tolist()
                    fields["pert_prob"] = [float(p.mean()) for p in pert_prob]
                    if split in HAS_PARAPHRASE:
                        para_loss = np.array([row[1] for row in losses])
                        fields["para_prob"] = np.exp(-para_loss).tolist()
                        fields["truth_ratio"] = truth_ratio(para_loss, pert_loss).tolist()
                    else:
                        fields["truth_ratio"] = truth_ratio(loss, pert_loss).tolist()
                        fields["prob_normalised"] = normalised_probability(prob, pert_prob).tolist()
                out.update({f"{split}.{name}": values for name, values in fields.items()})
    finally:
        model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------------ variants


def shared_eval(model: Any, tokenizer: Any, data_dir: Path, limit: int, batch_size: int) -> Outputs:
    """:func:`evaluate_tofu` (1 generated token), its per-item values keyed ``split.field``; under the lethe
    input protocol, the token construction (``qa_prompt_and_answer``) the per-variant baseline reproduces."""
    from lethe.audit.tofu_metrics import evaluate_tofu

    result = evaluate_tofu(model, tokenizer, data_dir, forget_split=FORGET_SPLIT, holdout_split=HOLDOUT_SPLIT,
                           batch_size=batch_size, max_new_tokens=GEN_TOKENS, limit=limit, protocol="lethe")
    out: Outputs = {}
    for split, items in result["per_item"].items():
        for name in FIELDS:
            if items and name in items[0]:
                out[f"{split}.{name}"] = [item[name] for item in items]
    return out


def _prepare(kind: str) -> Prepare:
    def prepare(setup: Setup, spec: Spec) -> Variant:
        data_dir = world_dir()
        n_items, _, n_tokens = _counts(setup, data_dir, spec.n)

        def run(limit: int = spec.n) -> Outputs:
            if kind == "shared":
                return shared_eval(setup.model, setup.tokenizer, data_dir, limit, spec.batch_size)
            return per_variant_eval(setup.model, setup.tokenizer, data_dir, limit, setup.device)

        return Variant(warmup=lambda: run(min(spec.n, 2)), run=run, n_items=n_items, n_tokens=n_tokens)

    return prepare


VARIANTS: dict[str, Prepare] = {"per_variant": _prepare("per_variant"), "shared": _prepare("shared")}


def compare_outputs(expected: Outputs, actual: Outputs, rtol: float = RTOL) -> dict[str, Any]:
    """Continuous per-item values within ``rtol`` (→ ``identical``); argmax-derived ones compared exactly."""
    ok = set(expected) == set(actual) and bool(expected)
    max_rel: dict[str, float] = {}
    discrete: dict[str, int] = {}
    for key in sorted(set(expected) & set(actual)):
        a, b = expected[key], actual[key]
        if len(a) != len(b):
            ok = False
            continue
        name = key.split(".", 1)[1]
        if name in CONTINUOUS:
            x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
            ok = ok and bool(np.allclose(x, y, rtol=rtol, atol=ATOL, equal_nan=True))
            finite = np.isfinite(x) & np.isfinite(y)
            rel = np.abs(x[finite] - y[finite]) / np.maximum(np.abs(x[finite]), 1e-30)
            max_rel[key] = float(rel.max()) if rel.size else 0.0
        else:
            discrete[key] = sum(1 for u, v in zip(a, b, strict=True) if u != v)
    return {"identical": ok, "rtol": rtol, "n_values": sum(len(v) for v in expected.values()),
            "keys_only_in_baseline": sorted(set(expected) - set(actual)),
            "keys_only_in_variant": sorted(set(actual) - set(expected)),
            "max_rel_diff": max_rel, "max_rel_diff_overall": max(max_rel.values(), default=None),
            "discrete_mismatches": discrete, "discrete_identical": not any(discrete.values())}


def run(spec: Spec | None = None, *, isolate: bool = True, out_path: str | None = None) -> dict[str, Any]:
    """Run the TOFU evaluation benchmark (``spec.n`` = items per split) and write its JSON."""
    spec = spec or Spec(n=FULL_N, batch_size=BATCH_SIZE)
    return run_benchmark(
        name=NAME, module="benchmarks.bench_tofu_eval",
        description=f"TOFU per-item metrics, first {spec.n} items of each split: evaluate_tofu's shared pass "
                    f"(batch {spec.batch_size}, {GEN_TOKENS} generated token) vs one batch-1 forward per "
                    "answer variant",
        variants=VARIANTS, baseline="per_variant", optimized="shared", spec=spec, compare=compare_outputs,
        target=TARGET, isolate=isolate, out_path=out_path,
        notes=["items = TOFU questions (forget10, retain, real_authors, world_facts, holdout10 for min-k); "
               "tokens = answer tokens scored over all variants (EOS included)",
               "timed region: reading the splits, tokenization, forward passes, per-item metrics (both); "
               f"evaluate_tofu also runs its batched greedy generation ({GEN_TOKENS} token) and its summary",
               "the baseline takes the 1-token generation from the argmax of its answer forward (no extra "
               "forward); evaluate_tofu spends one batched forward over the prompts on it"],
    )


def _print_identity(report: dict[str, Any]) -> None:
    check = report["identity"]["shared"]
    print(f"   max rel diff {check['max_rel_diff_overall']:.2e} over {check['n_values']} values; argmax-derived "
          f"mismatches {sum(check['discrete_mismatches'].values())}")


def main(argv: Sequence[str] | None = None) -> int:
    return benchmark_main(argv, doc=__doc__, batch_size=BATCH_SIZE, variants=VARIANTS, run=run, full_n=FULL_N,
                          quick_n=QUICK_N, after=_print_identity)

if __name__ == "__main__":
    sys.exit(main())
