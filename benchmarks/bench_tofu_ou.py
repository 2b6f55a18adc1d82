"""TOFU evaluation: ``lethe eval tofu``'s code path vs open-unlearning's evaluator (locuslab/open-unlearning).

- ``open_unlearning`` (baseline) reimplements the computation of open-unlearning's TOFU evaluator
  (``src/evals/base.py::Evaluator.evaluate`` over the metrics of ``configs/eval/tofu.yaml``: forget_quality,
  forget_Q_A_Prob, forget_Q_A_ROUGE, model_utility, privleak, extraction_strength, with their pre-computed
  metrics) the way it does it: every metric is its own pass over its own dataset, tokenized by its own
  ``QADataset`` (``preprocess_chat_instance``; here :func:`lethe.audit.tofu_protocol.encode_open_unlearning`,
  the project's reproduction of it), batched in file order, 32 per batch, by ``DataCollatorForSupervisedDataset``
  (pad = the tokenizer's pad, labels −100, ``attention_mask = input_ids != pad``; right padding to score,
  left padding to generate), then ``run_batchwise_evals`` with the metric's batch function:
  ``evaluate_probability`` (``model(**batch)`` with labels, so the model also computes its own loss;
  ``CrossEntropyLoss(reduction="none")`` over [B, V, T]) for every ``*_Prob`` (perturbed answers: one
  mini-batch per intra-item index), ``eval_text_similarity`` (``model.generate`` with the model's own
  generation config, ``do_sample=False``, ``max_new_tokens``, ``pad_token_id=eos``, decode, cut at the EOS
  text, ROUGE) for every ``*_ROUGE``, ``tokenwise_logprobs`` (full log-softmax of [B, T, V]) for
  ``mia_min_k`` on forget and holdout, ``tokenwise_vocab_logprobs`` for ``extraction_strength``.
  A metric already computed under the same name (e.g. ``ra_Q_A_Prob``, a pre-compute of both
  ``ra_Q_A_Prob_normalised`` and ``ra_Truth_Ratio``) is taken from the cache, which is in the baseline's favour.
- ``lethe`` (optimized): :func:`lethe.audit.tofu_metrics.evaluate_tofu` under the ``open-unlearning``
  protocol with ``lethe eval tofu``'s defaults (batch 16): one length-bucketed scoring pass over every
  (question, answer variant) of every split, keeping per-token statistics only, and one batched generation
  over every split's prompts.

Data: ``--data``-less: ``/work/shared/data/tofu`` (forget01, holdout01) when present, else the embedded
world (forget10, holdout10); the first N items of every split. Generation: ``LETHE_BENCH_GEN_TOKENS`` new
tokens (default 200, open-unlearning's ``max_new_tokens``). Timed: from the split files to every per-item
value (model load excluded: the same for both). ``identical``: probabilities, paraphrase / perturbed
probabilities, normalised probabilities, truth ratios and min-k scores within rtol 5e-4 (``OU_RTOL``: the
baseline's own float32 error; see there); the generations,
their ROUGE-L and extraction strength (argmax-derived) are compared exactly and reported as
``discrete_mismatches`` (padding differs between the two batchings, so a near-tie can flip a token).

    python -m benchmarks.bench_tofu_ou [--quick] [--n 5] [--model smollm2-135m]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_tofu_eval import CONTINUOUS, compare_outputs  # the same per-item fields and tolerances
from benchmarks.common import Prepare, Setup, Spec, Variant, benchmark_main, run_benchmark, world_dir

NAME = "tofu_ou"
FULL_N = 5
QUICK_N = 2
BATCH_SIZE = 16  # lethe eval tofu's default
OU_BATCH = 32  # open-unlearning's TOFU metric configs
TOFU_DIR = Path("/work/shared/data/tofu")
TARGET = 3.0
# open-unlearning's probability is exp(−mean CrossEntropyLoss) over [B, V, T] logits (the vocabulary on the
# strided middle dimension); PyTorch's CPU kernel sums the 49k exponentials of SmolLM2's vocabulary there with
# a float32 error of ~1e-4 relative: TOFU forget01 item 0, mean log-probability in float64 −1.3289237, Lethe's
# log_softmax over the contiguous vocabulary −1.3289158 (error 7.9e-6), that CrossEntropyLoss −1.3288060
# (error 1.2e-4; on [T, V] it gives Lethe's number). rtol 5e-4 bounds the baseline's error, not Lethe's.
OU_RTOL = 5e-4
DISCRETE = ("extraction_strength", "rougeL_recall", "generated")

Outputs = dict[str, list[Any]]


def gen_tokens() -> int:
    return int(os.environ.get("LETHE_BENCH_GEN_TOKENS", "200"))


def data_source() -> tuple[Path, str, str]:
    """(folder, forget split, holdout split)."""
    if (TOFU_DIR / "forget01_perturbed.json").is_file():
        return TOFU_DIR, "forget01", "holdout01"
    return world_dir(), "forget10", "holdout10"


# ------------------------------------------------------------------------------------------------ open-unlearning


def _collate(items: list[Any], pad: int, side: str, prompt: bool = False) -> dict[str, torch.Tensor]:
    """DataCollatorForSupervisedDataset: pad input_ids with ``pad`` and labels with −100 on ``side``;
    attention_mask = input_ids != pad. ``prompt``: the generation dataset's inputs (the prompt only)."""
    seqs = [item.prompt_ids if prompt else item.input_ids for item in items]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    for row, (item, seq) in enumerate(zip(items, seqs, strict=True)):
        where = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, where] = torch.tensor(seq)
        if not prompt:
            labels[row, where] = torch.tensor(item.labels)
    return {"input_ids": ids, "labels": labels, "attention_mask": ids.ne(pad).long()}


def _batches(items: list[Any]) -> list[list[Any]]:
    return [items[i:i + OU_BATCH] for i in range(0, len(items), OU_BATCH)]


def ou_probability(model: Any, batch: dict[str, torch.Tensor]) -> list[float]:
    """evaluate_probability: the mean NLL (avg_loss) of each row."""
    output = model(**batch)
    labels = batch["labels"][..., 1:].contiguous()
    logits = output.logits[..., :-1, :].contiguous()
    losses = torch.nn.CrossEntropyLoss(ignore_index=-100, reduction="none")(logits.transpose(-1, -2), labels).sum(-1)
    return (losses / (batch["labels"] != -100).sum(-1)).tolist()


def _answer_positions(labels: torch.Tensor) -> torch.Tensor:
    return (labels != -100).nonzero(as_tuple=True)[0][:-1]  # open-unlearning drops the last scored token


def ou_tokenwise_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """tokenwise_logprobs: the target log-probs of every scored token but the last."""
    log_probs = torch.nn.functional.log_softmax(model(**batch).logits, dim=-1)[:, :-1, :]
    target = torch.gather(log_probs, 2, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    out = []
    for i in range(len(target)):
        where = _answer_positions(batch["labels"][i])
        out.append(target[i, where[0] - 1: where[-1]] if where.numel() else torch.tensor([]))
    return out


def ou_extraction_strength(model: Any, batch: dict[str, torch.Tensor]) -> list[float]:
    """tokenwise_vocab_logprobs + extraction_strength: ES = 1 − k/n of the argmax predictions."""
    log_probs = torch.nn.functional.log_softmax(model(**batch).logits, dim=-1)[:, :-1, :]
    values = []
    for i in range(len(log_probs)):
        where = _answer_positions(batch["labels"][i])
        if where.numel() == 0:
            values.append(0.0)
            continue
        preds = torch.argmax(log_probs[i, where[0] - 1: where[-1]], dim=-1)
        labels = batch["labels"][i][where]
        n, k = len(labels), 0
        for k in range(n):
            if torch.equal(preds[k:], labels[k:]):
                break
        values.append(1 - k / n)
    return values


def ou_generate(model: Any, tokenizer: Any, items: list[Any], max_new_tokens: int) -> list[str]:
    """eval_text_similarity's generation and read-back (the ROUGE is scored by the caller)."""
    from lethe.audit.tofu_protocol import ou_generation_text

    batch = _collate(items, tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id,
                     "left", prompt=True)
    output = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=False,
                            max_new_tokens=max_new_tokens, use_cache=True, top_p=None, top_k=None, temperature=None,
                            pad_token_id=tokenizer.eos_token_id)
    return [ou_generation_text(tokenizer, row.tolist()) for row in output[:, batch["input_ids"].shape[1]:]]


def open_unlearning_eval(model: Any, tokenizer: Any, limit: int, max_new_tokens: int) -> Outputs:
    from rouge_score import rouge_scorer

    from lethe.audit.tofu_metrics import FILES, normalised_probability, truth_ratio
    from lethe.audit.tofu_protocol import encode_open_unlearning, pad_id_of
    from lethe.data.tofu import load_split

    folder, forget, holdout = data_source()
    pad = pad_id_of(tokenizer)
    files = {**FILES, "forget": f"{forget}_perturbed"}
    prefix = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}
    cache: dict[str, Any] = {}
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)

    def dataset(split: str, key: str, file: str | None = None) -> list[Any]:
        rows = load_split(folder, file or files[split])[:limit]
        answers = [[row[key]] if isinstance(row[key], str) else row[key] for row in rows]
        width = len(answers[0])
        return [[encode_open_unlearning(tokenizer, row["question"], a[j]) for row, a in zip(rows, answers, strict=True)]
                for j in range(width)]  # one list per intra-item index

    def prob(name: str, split: str, key: str) -> list[list[float]]:
        if name not in cache:
            cache[name] = [[loss for batch in _batches(items) for loss in ou_probability(model, _collate(items=batch,
                            pad=pad, side="right"))] for items in dataset(split, key)]
        return cache[name]

    def rouge(name: str, split: str) -> list[dict[str, Any]]:
        if name not in cache:
            items = dataset(split, "answer")[0]
            texts = [t for batch in _batches(items) for t in ou_generate(model, tokenizer, batch, max_new_tokens)]
            cache[name] = [{"generated": t, "rougeL_recall": scorer.score(item.reference, t)["rougeL"].recall}
                           for item, t in zip(items, texts, strict=True)]
        return cache[name]

    out: Outputs = {}
    model.eval()
    with torch.no_grad():
        for split in ("forget", "retain", "real_authors", "world_facts"):
            p = prefix[split]
            loss = np.array(prob(f"{p}_Q_A_Prob", split, "answer")[0])
            pert_loss = np.array(prob(f"{p}_Q_A_PERT_Prob", split, "perturbed_answer")).T  # [items, m]
            out[f"{split}.prob"] = np.exp(-loss).tolist()
            out[f"{split}.pert_prob"] = np.exp(-pert_loss).mean(axis=1).tolist()
            if split in ("forget", "retain"):
                para_loss = np.array(prob(f"{p}_Q_A_PARA_Prob", split, "paraphrased_answer")[0])
                out[f"{split}.para_prob"] = np.exp(-para_loss).tolist()
                out[f"{split}.truth_ratio"] = truth_ratio(para_loss, pert_loss).tolist()
            else:
                out[f"{split}.truth_ratio"] = truth_ratio(loss, pert_loss).tolist()
                out[f"{split}.prob_normalised"] = normalised_probability(np.exp(-loss),
                                                                         np.exp(-pert_loss)).tolist()
            for field in ("generated", "rougeL_recall"):
                out[f"{split}.{field}"] = [r[field] for r in rouge(f"{p}_Q_A_ROUGE", split)]
        for split, file in (("forget", f"{forget}_perturbed"), ("holdout", holdout)):
            items = dataset(split, "answer", file)[0]
            logps = [lp for batch in _batches(items)
                     for lp in ou_tokenwise_logprobs(model, _collate(batch, pad, "right"))]
            out[f"{split}.mia_min_k"] = [float(np.mean(sorted(lp.tolist())[: max(1, int(len(lp) * 0.4))]))
                                         if len(lp) else 0.0 for lp in logps]
        items = dataset("forget", "answer")[0]
        out["forget.extraction_strength"] = [v for batch in _batches(items)
                                             for v in ou_extraction_strength(model, _collate(batch, pad, "right"))]
    return out


# ------------------------------------------------------------------------------------------------ Lethe


def lethe_eval(model: Any, tokenizer: Any, limit: int, max_new_tokens: int, batch_size: int) -> Outputs:
    from lethe.audit.tofu_metrics import evaluate_tofu

    folder, forget, holdout = data_source()
    result = evaluate_tofu(model, tokenizer, folder, forget_split=forget, holdout_split=holdout, limit=limit,
                           batch_size=batch_size, max_new_tokens=max_new_tokens, protocol="open-unlearning")
    out: Outputs = {}
    for split, items in result["per_item"].items():
        for name in CONTINUOUS + DISCRETE:
            if items and name in items[0] and (name != "extraction_strength" or split == "forget"):
                out[f"{split}.{name}"] = [item[name] for item in items]
    return out


def _prepare(kind: str) -> Prepare:
    def prepare(setup: Setup, spec: Spec) -> Variant:
        def run(limit: int = spec.n, tokens: int = gen_tokens()) -> Outputs:
            if kind == "open_unlearning":
                return open_unlearning_eval(setup.model, setup.tokenizer, limit, tokens)
            return lethe_eval(setup.model, setup.tokenizer, limit, tokens, spec.batch_size)

        return Variant(warmup=lambda: run(1, 2), run=run, n_items=5 * spec.n, n_tokens=4 * spec.n * gen_tokens())

    return prepare


VARIANTS: dict[str, Prepare] = {"open_unlearning": _prepare("open_unlearning"), "lethe": _prepare("lethe")}


def run(spec: Spec | None = None, *, isolate: bool = True, out_path: str | None = None) -> dict[str, Any]:
    spec = spec or Spec(n=FULL_N, batch_size=BATCH_SIZE)
    folder, forget, _ = data_source()
    return run_benchmark(
        name=NAME if not spec.model else f"{NAME}_{Path(spec.model).name}", module="benchmarks.bench_tofu_ou",
        description=f"TOFU eval ({forget} of {folder.name}, first {spec.n} items per split, {gen_tokens()} new "
                    "tokens): evaluate_tofu (open-unlearning protocol) vs open-unlearning's evaluator code path",
        variants=VARIANTS, baseline="open_unlearning", optimized="lethe", spec=spec,
        compare=lambda expected, actual: compare_outputs(expected, actual, rtol=OU_RTOL),
        target=TARGET, isolate=isolate, out_path=out_path,
        notes=["timed: split files -> every per-item value; model load and imports excluded",
               "open-unlearning: one pass per metric (cached by metric name), 32 per batch in file order, "
               "one generate call per split; lethe: one scoring pass, one generate over all splits"])


def main(argv: Sequence[str] | None = None) -> int:
    return benchmark_main(argv, doc=__doc__, batch_size=BATCH_SIZE, variants=VARIANTS, run=run, full_n=FULL_N,
                          quick_n=QUICK_N)


if __name__ == "__main__":
    sys.exit(main())
