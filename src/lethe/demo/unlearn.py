"""``lethe demo unlearn``: TOFU-style unlearning on the embedded world, GD and NPO with and without GUARD.

The TOFU protocol (Maini et al. 2024, arXiv 2401.06121) in miniature. On the embedded fictional world
(``world_authors`` authors, 20 QA each, plus the general-knowledge facts every model learns):

1. one BPE tokenizer trained on all the world's QA text (forget, retain, holdout, perturbed answers,
   general facts), so no model's tokenizer carries membership signal;
2. ``full``: a tiny LLaMA fine-tuned on every author's QA + the general facts; ``retain``: the same
   model, steps and seed trained without the forget authors (the "gold standard" of unlearning);
3. both evaluated with the TOFU metrics; the retain model's per-item forget truth ratios are the
   reference of every forget quality (KS-test p-value) and privleak;
4. four unlearning arms start from ``full`` with the same steps, learning rate and retain pairing:
   GD, GD+GUARD, NPO, NPO+GUARD (GUARD: Niu, Ma et al. 2025, arXiv 2506.10946, DESIGN 3.4);
5. each arm is TOFU-evaluated and gets the sacrifice rate of each metric M ∈ {truth ratio, ROUGE-L,
   probability} against the full model,

       SR_M = (M_retain(full) − M_retain(arm)) / (M_forget(full) − M_forget(arm))   (lower is better).

GUARD's claim is SR(method+GUARD) < SR(method). The demo checks it per method and metric and writes the
verdict (``guard_lowers_sacrifice_rate``) to metrics.json and the report, with the numerator and
denominator of every SR, because a ratio can fall by unlearning *less* as well as by harming less.
``investigate=true`` adds a documented sweep over what GUARD depends on — the softmax temperature τ,
the normalisation of the scores (z-score vs raw) and the parameters attributed and updated (all weights vs
LoRA adapters) — and reports each variant's SR against the same base method.

Every stage writes its folder under the run directory and is reused when the demo is re-run on it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from lethe.audit.tofu_metrics import evaluate_tofu, forget_quality, privleak, write_tofu_eval
from lethe.config import ModelSettings, TrainConfig, TrainSettings, to_yaml
from lethe.data.tofu import RETAIN_OF, load_split
from lethe.data.world import embedded_world
from lethe.errors import LetheError
from lethe.models import load_model, tiny_model, train_bpe_tokenizer
from lethe.report import Report, figures
from lethe.runs import RunLog, atomic_write_json, atomic_write_text, new_run_dir
from lethe.train.trainer import train_model
from lethe.unlearn.config import (
    EvalSettings,
    GuardSettings,
    LoraSettings,
    ObjectiveSettings,
    UnlearnConfig,
    UnlearnDataSettings,
)
from lethe.unlearn.evaluation import SACRIFICE_METRICS, unlearn_and_evaluate
from lethe.unlearn.objectives import get_method

REFERENCES = ("full", "retain")
SR_LABELS = {"truth_ratio": "truth ratio", "rougeL": "ROUGE-L", "probability": "probability"}
# sacrifice-rate metric -> (retain summary key, forget summary key), as lethe.audit.tofu_metrics
SR_KEYS = {"truth_ratio": ("retain_Truth_Ratio", "forget_Truth_Ratio_true_better"),
           "rougeL": ("retain_Q_A_ROUGE", "forget_Q_A_ROUGE"),
           "probability": ("retain_Q_A_Prob", "forget_Q_A_Prob")}
ARM_KEYS = ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio",
            "retain_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Truth_Ratio", "privleak")


def _demo_model() -> ModelSettings:
    return ModelSettings(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, vocab_size=2048)


def _demo_train_settings() -> TrainSettings:
    # fine-tuning of `full` and `retain`: enough epochs that `full` reproduces the forget answers
    return TrainSettings(max_steps=600, batch_size=16, lr=3e-3, warmup_steps=20, scheduler="cosine",
                         logging_steps=25, save_steps=200, weight_decay=0.0)


def _demo_unlearn_settings() -> TrainSettings:
    # every arm: same steps, lr, batches and retain pairing (tiny models need lr ~1e-4..1e-3, not TOFU's 1e-5)
    return TrainSettings(max_steps=25, batch_size=16, grad_accum=1, lr=2e-4, weight_decay=0.01,
                         scheduler="constant", warmup_steps=0, logging_steps=5, save_steps=1000)


@dataclass
class UnlearnDemoConfig:
    run_dir: str = ""
    world_authors: int = 40  # 20 QA per author; forget10 = the last 10% of the authors
    world_seed: int = 0
    forget_split: str = "forget10"  # forget01 | forget05 | forget10
    max_length: int = 128
    threads: int = 1  # torch CPU threads (1 is fastest for a model this small on a shared CPU; 0 = as is)
    methods: list[str] = field(default_factory=lambda: ["gd", "npo"])  # each runs without and with GUARD
    model: ModelSettings = field(default_factory=_demo_model)
    train: TrainSettings = field(default_factory=_demo_train_settings)  # fine-tuning full / retain
    unlearn: TrainSettings = field(default_factory=_demo_unlearn_settings)  # every unlearning arm
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)  # null = the method's defaults
    guard: GuardSettings = field(default_factory=GuardSettings)  # the GUARD arms (``enabled`` is set per arm)
    eval_limit: int = 0  # items per TOFU split (0 = all)
    eval_max_new_tokens: int = 64  # the world's answers are at most ~40 tokens
    eval_batch_size: int = 32
    # investigate=true: per method, GUARD variants (τ with z-scored scores, τ with raw scores), base and
    # GUARD with LoRA adapters only (the parameters attributed and updated), and base and GUARD with other
    # seeds (the noise floor of an SR difference)
    investigate: bool = False
    sweep_taus: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])  # normalize=zscore
    sweep_raw_taus: list[float] = field(default_factory=lambda: [1.0])  # normalize=none
    sweep_lora: bool = True
    sweep_lora_lr: float = 0.0  # learning rate of the LoRA arms; 0 = unlearn.lr
    sweep_seeds: list[int] = field(default_factory=lambda: [1])

    def validate(self) -> None:
        if self.world_authors < 2:
            raise LetheError(f"config: world_authors must be >= 2, got {self.world_authors}")
        if self.forget_split not in RETAIN_OF:
            raise LetheError(f"config: forget_split must be one of {', '.join(RETAIN_OF)}, "
                             f"got {self.forget_split!r}")
        if not self.methods:
            raise LetheError("config: methods is empty (e.g. [gd, npo])")
        for name in self.methods:
            get_method(name)
        if len(set(self.methods)) != len(self.methods):
            raise LetheError(f"config: methods has duplicates: {self.methods}")
        if self.eval_limit < 0 or self.eval_max_new_tokens < 1 or self.eval_batch_size < 1:
            raise LetheError("config: eval_limit must be >= 0, eval_max_new_tokens and eval_batch_size >= 1")
        if self.threads < 0:
            raise LetheError(f"config: threads must be >= 0, got {self.threads}")
        self.train.validate()
        self.unlearn.validate()
        self.objective.validate()
        self.guard.validate()
        for tau in [*self.sweep_taus, *self.sweep_raw_taus]:
            GuardSettings(tau=tau).validate()
        if self.sweep_lora_lr < 0:
            raise LetheError(f"config: sweep_lora_lr must be >= 0, got {self.sweep_lora_lr}")
        if self.train.goldfish.enabled or self.unlearn.goldfish.enabled:
            raise LetheError("config: goldfish does not apply to this demo")


# --- arms --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One unlearning run: a method, GUARD on/off with its settings, all weights or LoRA adapters, a seed
    offset (0 = ``unlearn.seed``; other values redraw the batch order and the retain pairing)."""

    method: str
    guard: bool
    tau: float = 1.0
    normalize: str = "zscore"
    lora: bool = False
    seed: int = 0

    @property
    def name(self) -> str:  # the folder name
        name = self.method + ("-lora" if self.lora else "") + (f"-seed{self.seed}" if self.seed else "")
        return name + (f"-guard-tau{self.tau:g}-{self.normalize}" if self.guard else "")

    @property
    def label(self) -> str:  # the table label
        extra = [x for x in ("LoRA" if self.lora else "", f"seed +{self.seed}" if self.seed else "") if x]
        label = self.method + (f" ({', '.join(extra)})" if extra else "")
        return label + (f" +GUARD (τ={self.tau:g}, {self.normalize})" if self.guard else "")


def main_arms(config: UnlearnDemoConfig) -> list[Arm]:
    g = config.guard
    return [Arm(m, guard, g.tau, g.normalize) for m in config.methods for guard in (False, True)]


def investigation_arms(config: UnlearnDemoConfig) -> list[Arm]:
    """Per method: GUARD over ``sweep_taus`` (z-score) and ``sweep_raw_taus`` (raw scores); base and
    GUARD with LoRA; base and GUARD with each of ``sweep_seeds``. The main arms are not repeated."""
    g = config.guard
    arms: list[Arm] = []
    for method in config.methods:
        arms += [Arm(method, True, tau, "zscore") for tau in config.sweep_taus]
        arms += [Arm(method, True, tau, "none") for tau in config.sweep_raw_taus]
        if config.sweep_lora:
            arms += [Arm(method, False, lora=True), Arm(method, True, g.tau, g.normalize, lora=True)]
        for seed in config.sweep_seeds:
            arms += [Arm(method, False, seed=seed), Arm(method, True, g.tau, g.normalize, seed=seed)]
    main = set(main_arms(config))
    return [a for a in dict.fromkeys(arms) if a not in main]


def base_of(arm: Arm) -> Arm:
    return Arm(arm.method, False, lora=arm.lora, seed=arm.seed)


def _arm_config(config: UnlearnDemoConfig, arm: Arm, run_dir: Path, world: Path) -> UnlearnConfig:
    guard = GuardSettings(**{**vars(config.guard), "enabled": arm.guard, "tau": arm.tau,
                             "normalize": arm.normalize})
    return UnlearnConfig(
        run_dir=str(run_dir / arm.name),
        method=arm.method,
        model=ModelSettings(name=str(run_dir / "full" / "model")),
        data=UnlearnDataSettings(source=str(world), forget_split=config.forget_split,
                                 max_length=config.max_length),
        objective=ObjectiveSettings(**vars(config.objective)),
        guard=guard,
        lora=LoraSettings(enabled=arm.lora),
        train=TrainSettings(**{**vars(config.unlearn), "threads": config.threads,
                               "seed": config.unlearn.seed + arm.seed,
                               "lr": config.sweep_lora_lr if arm.lora and config.sweep_lora_lr else config.unlearn.lr}),
        eval=EvalSettings(limit=config.eval_limit, max_new_tokens=config.eval_max_new_tokens,
                          batch_size=config.eval_batch_size,
                          retain_eval=str(run_dir / "retain" / "tofu_eval.json"),
                          before=str(run_dir / "full" / "tofu_eval.json")),
    )


def _check_same_config(folder: Path, text: str) -> None:
    """A stage folder written with other settings is not silently reused."""
    path = folder / "config.yaml"
    if path.is_file() and path.read_text(encoding="utf-8") != text:
        raise LetheError(f"{folder} was run with a different config ({path}); "
                         "use a new --run-dir or delete that folder")


def run_arm(config: UnlearnDemoConfig, arm: Arm, run_dir: Path, world: Path, quiet: bool) -> dict[str, Any]:
    """Unlearn + TOFU-evaluate one arm, or reuse its finished folder; the arm's metrics.json."""
    arm_config = _arm_config(config, arm, run_dir, world)
    arm_dir = Path(arm_config.run_dir)
    _check_same_config(arm_dir, to_yaml(arm_config))
    metrics_path = arm_dir / "metrics.json"
    if metrics_path.is_file() and (arm_dir / "tofu_eval.json").is_file():
        metrics = json.loads(metrics_path.read_text())
        if "sacrifice_rate" in metrics and "arm_wall_s" in metrics:  # finished earlier: reuse
            return metrics
    if not quiet:
        print(f"[{arm.label}] unlearning {config.forget_split} for {config.unlearn.max_steps} steps ...")
    started = time.perf_counter()
    _, metrics = unlearn_and_evaluate(arm_config, quiet=quiet)
    metrics["arm_wall_s"] = time.perf_counter() - started  # unlearning + GUARD attribution + TOFU eval
    atomic_write_json(metrics_path, metrics)
    return metrics


def unlearn_wall_s(metrics: dict[str, Any]) -> float:
    """Unlearning cost: the training loop plus, for GUARD, the attribution at θ₀."""
    return float(metrics.get("train_wall_s") or 0.0) + float(metrics["guard"].get("attribution_wall_s") or 0.0)


# --- full / retain -----------------------------------------------------------------------------------


def _qa_records(rows: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i}", "question": r["question"], "answer": r["answer"]} for i, r in enumerate(rows)]


def world_texts(world: Path, forget_split: str) -> list[str]:
    """Every QA text of the world (questions, answers, paraphrases, perturbations) for the tokenizer."""
    texts: list[str] = []
    for split in ("full", "general", f"holdout{forget_split[len('forget'):]}", f"{forget_split}_perturbed",
                  "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        for row in load_split(world, split):
            texts += [row["question"], row["answer"], *row.get("perturbed_answer", [])]
            texts += [row[k] for k in ("paraphrased_answer", "paraphrased_question") if row.get(k)]
    return texts


def _shared_tokenizer(run_dir: Path, texts: list[str], vocab_size: int):
    folder = run_dir / "tokenizer"
    if folder.is_dir():
        return AutoTokenizer.from_pretrained(folder)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _reference_config(config: UnlearnDemoConfig, name: str, split: str, run_dir: Path,
                      world: Path) -> TrainConfig:
    """``full`` / ``retain`` fine-tuning; the records (``split`` + general.json) are passed to train_model."""
    train = TrainConfig(run_dir=str(run_dir / name), model=ModelSettings(**vars(config.model)),
                        train=TrainSettings(**{**vars(config.train), "threads": config.threads}))
    d = train.data
    d.source, d.format, d.file, d.max_length = str(world), "qa", split, config.max_length
    return train


def _train_or_reuse(config: TrainConfig, tokenizer, records: list[dict[str, Any]],
                    quiet: bool) -> dict[str, Any]:
    folder = Path(config.run_dir)
    text = to_yaml(config)
    _check_same_config(folder, text)
    metrics_path = folder / "train_metrics.json"
    if (folder / "model").is_dir() and metrics_path.is_file():  # finished earlier: reuse
        return json.loads(metrics_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", text)
    m = config.model
    model = tiny_model(tokenizer, seed=m.seed, hidden_size=m.hidden_size, num_layers=m.num_layers,
                       num_heads=m.num_heads, intermediate_size=m.intermediate_size,
                       max_position_embeddings=m.max_position_embeddings)
    metrics = train_model(config, folder, model=model, tokenizer=tokenizer, records=records, quiet=quiet)
    atomic_write_json(metrics_path, metrics)
    return metrics


def _evaluate_or_reuse(config: UnlearnDemoConfig, folder: Path, world: Path,
                       retain_eval: Path | None) -> dict[str, Any]:
    path = folder / "tofu_eval.json"
    if path.is_file():
        return json.loads(path.read_text())
    model, tokenizer = load_model(folder / "model")
    result = evaluate_tofu(model, tokenizer, world, forget_split=config.forget_split,
                           retain_eval=retain_eval, batch_size=config.eval_batch_size,
                           max_new_tokens=config.eval_max_new_tokens, limit=config.eval_limit)
    if retain_eval is None:  # the retain model is its own reference: KS p-value 1, privleak 0
        ratios = [item["truth_ratio"] for item in result["per_item"]["forget"]]
        result["summary"]["forget_quality"] = forget_quality(ratios, ratios)
        auc = result["summary"]["mia_min_k"]
        result["summary"]["privleak"] = privleak(auc, auc)
        result["notes"].append("retain model: forget_quality and privleak against itself (1 and 0 by definition)")
    write_tofu_eval(result, path)
    return result


# --- the demo ----------------------------------------------------------------------------------------


def _row(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary.get(k) for k in ARM_KEYS}


def _sr_parts(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per SR metric: the retain loss (numerator) and the forget removal (denominator)."""
    return {metric: {"retain_drop": before[r] - after[r], "forget_drop": before[f] - after[f]}
            for metric, (r, f) in SR_KEYS.items()}


def arm_summary(arm: Arm, metrics: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    g = metrics["guard"]
    return {
        "label": arm.label, "method": arm.method, "guard": arm.guard, "lora": arm.lora, "seed_offset": arm.seed,
        "tau": arm.tau if arm.guard else None, "normalize": arm.normalize if arm.guard else None,
        **_row(after),
        "sacrifice_rate": metrics["sacrifice_rate"],
        "sacrifice_parts": _sr_parts(before, after),
        "forget_prob_before": metrics["forget_prob_before"], "forget_prob_after": metrics["forget_prob_after"],
        "unlearn_wall_s": unlearn_wall_s(metrics),
        "attribution_wall_s": g.get("attribution_wall_s"),
        "arm_wall_s": metrics["arm_wall_s"],
        "guard_effective_samples": g.get("effective_samples"),
        "guard_weight_min": g.get("weight_min"), "guard_weight_max": g.get("weight_max"),
        "steps": metrics["steps"],
    }


def guard_verdict(base: dict[str, Any], guarded: dict[str, Any]) -> dict[str, bool | None]:
    """Per SR metric: did GUARD lower the sacrifice rate of its base method?

    None where a comparison means nothing: an SR is undefined, or an arm did not lower the forget metric
    at all (SR's denominator ≤ 0, so a "lower" SR would reward keeping the forget set)."""
    out: dict[str, bool | None] = {}
    for metric in SACRIFICE_METRICS:
        a, b = base["sacrifice_rate"].get(metric), guarded["sacrifice_rate"].get(metric)
        removed = all(arm["sacrifice_parts"][metric]["forget_drop"] > 0 for arm in (base, guarded))
        ok = a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and removed
        out[metric] = bool(b < a) if ok else None
    return out


def attribution_by_group(arm_dir: Path, world: Path, forget_split: str) -> dict[str, Any] | None:
    """GUARD scores and weights of an arm's attribution.json, summarised per author and per question template."""
    path = arm_dir / "attribution.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text())
    forget = load_split(world, f"{forget_split}_perturbed")  # same order as the forget split, with templates
    weights = [float(r["weight"]) for r in rows]
    scores = torch.tensor([float(r["score"]) for r in rows], dtype=torch.float64)
    groups: dict[str, dict[str, list[float]]] = {"author": {}, "template": {}}
    if len(forget) == len(rows):
        for row, w in zip(forget, weights, strict=True):
            for key in groups:
                groups[key].setdefault(str(row.get(key, "?")), []).append(w * len(weights))
    return {
        "n": len(rows), "weight_sum": float(sum(weights)),
        "score_mean": float(scores.mean()), "score_std": float(scores.std(unbiased=False)),
        "effective_samples": float(1.0 / sum(w * w for w in weights)),
        "mean_scaled_weight": {key: {g: sum(v) / len(v) for g, v in values.items()}
                               for key, values in groups.items()},
    }


def run_unlearn_demo(config: UnlearnDemoConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    config.validate()
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, quiet, started)
    finally:
        torch.set_num_threads(threads_before)


def _run(config: UnlearnDemoConfig, quiet: bool, started: float) -> tuple[Path, dict[str, Any]]:
    run_dir = new_run_dir("demo-unlearn", config.run_dir or None)
    log = RunLog(run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    world = embedded_world(config.world_authors, config.world_seed)
    forget_split, retain_split = config.forget_split, RETAIN_OF[config.forget_split]
    general = _qa_records(load_split(world, "general"), "general")
    splits = {"full": "full", "retain": retain_split}
    records = {name: _qa_records(load_split(world, split), split) + general for name, split in splits.items()}
    n_forget = len(load_split(world, forget_split))
    tokenizer = _shared_tokenizer(run_dir, world_texts(world, forget_split), config.model.vocab_size)
    log("demo_start", world=str(world), forget=n_forget, full=len(records["full"]), retain=len(records["retain"]))

    metrics: dict[str, Any] = {"world": str(world), "world_authors": config.world_authors,
                               "forget_split": forget_split, "forget_samples": n_forget,
                               "train_records": {k: len(v) for k, v in records.items()}}
    # retain first: its TOFU eval is the reference of every forget quality, the full model's included
    evals: dict[str, dict[str, Any]] = {}
    for name in ("retain", "full"):
        train_config = _reference_config(config, name, splits[name], run_dir, world)
        if not quiet:
            who = "every author" if name == "full" else "without the forget authors"
            print(f"[{name}] fine-tuning on {len(records[name])} QA ({who}, + general facts) "
                  f"for {config.train.max_steps} steps ...")
        t0 = time.perf_counter()
        train_metrics = _train_or_reuse(train_config, tokenizer, records[name], quiet)
        retain_eval = None if name == "retain" else run_dir / "retain" / "tofu_eval.json"
        evals[name] = _evaluate_or_reuse(config, run_dir / name, world, retain_eval)
        metrics[name] = {**_row(evals[name]["summary"]), "train_loss": train_metrics["train_loss"],
                         "train_wall_s": train_metrics["train_wall_s"], "stage_wall_s": time.perf_counter() - t0}
        log("demo_reference", model=name, **_row(evals[name]["summary"]))
    before = evals["full"]["summary"]

    arms = main_arms(config)
    results: dict[str, dict[str, Any]] = {}
    for arm in arms:
        arm_metrics = run_arm(config, arm, run_dir, world, quiet)
        after = json.loads((run_dir / arm.name / "tofu_eval.json").read_text())["summary"]
        results[arm.name] = arm_summary(arm, arm_metrics, before, after)
        log("demo_arm", arm=arm.name, **{k: v for k, v in results[arm.name].items() if not isinstance(v, dict)})
    metrics["arms"] = {arm.name: results[arm.name] for arm in arms}
    metrics["guard_lowers_sacrifice_rate"] = {
        arm.method: guard_verdict(results[base_of(arm).name], results[arm.name]) for arm in arms if arm.guard}
    metrics["attribution"] = {a.name: attribution_by_group(run_dir / a.name, world, forget_split)
                              for a in arms if a.guard}
    if config.investigate:
        metrics["investigation"] = run_investigation(config, run_dir, world, before, results, quiet, log)
    metrics["wall_s"] = time.perf_counter() - started
    atomic_write_json(run_dir / "metrics.json", metrics)
    table = format_table(metrics)
    write_demo_report(run_dir, config, metrics)
    if not quiet:
        print(table)
        print(f"run directory: {run_dir}  (open report.html)")
    return run_dir, metrics


def run_investigation(config: UnlearnDemoConfig, run_dir: Path, world: Path, before: dict[str, Any],
                      results: dict[str, dict[str, Any]], quiet: bool, log: RunLog) -> dict[str, Any]:
    """GUARD variants against their base method (same steps, lr and pairing): which setting lowers SR?"""
    arms = investigation_arms(config)
    for arm in arms:
        arm_metrics = run_arm(config, arm, run_dir, world, quiet)
        after = json.loads((run_dir / arm.name / "tofu_eval.json").read_text())["summary"]
        results[arm.name] = arm_summary(arm, arm_metrics, before, after)
        log("demo_investigation_arm", arm=arm.name,
            **{k: v for k, v in results[arm.name].items() if not isinstance(v, dict)})
    rows = {}
    for arm in [*main_arms(config), *arms]:
        if not arm.guard:
            continue
        base = results[base_of(arm).name]
        rows[arm.name] = {"label": arm.label, "base": base_of(arm).name,
                          "lowers": guard_verdict(base, results[arm.name]),
                          "attribution": attribution_by_group(run_dir / arm.name, world, config.forget_split)}
    spread: dict[str, dict[str, dict[str, float | None]]] = {}
    for method in config.methods:  # seed-to-seed range of each SR: the noise floor of an SR difference
        for guard in (False, True):
            runs = [results[a.name] for a in [*main_arms(config), *arms]
                    if a.method == method and a.guard == guard and not a.lora
                    and (not guard or (a.tau, a.normalize) == (config.guard.tau, config.guard.normalize))]
            key = f"{method}+guard" if guard else method
            spread[key] = {"seeds": len(runs), **{m: _range([r["sacrifice_rate"][m] for r in runs])
                                                  for m in SACRIFICE_METRICS}}
    return {"arms": {a.name: results[a.name] for a in arms}, "guard_vs_base": rows, "seed_range": spread}


def _range(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return max(kept) - min(kept) if len(kept) >= 2 else None


# --- output ------------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    value = float(value)
    if not math.isfinite(value):
        return "—"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


TABLE_HEADER = ("| model | forget quality | model utility | forget ROUGE | forget prob | forget TR "
                "| SR truth ratio | SR ROUGE-L | SR prob | wall (s) |")


def _table_rows(arms: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for a in arms.values():
        sr = a["sacrifice_rate"]
        lines.append(f"| {a['label']} | {_f(a['forget_quality'])} | {_f(a['model_utility'])} "
                     f"| {_f(a['forget_Q_A_ROUGE'])} | {_f(a['forget_Q_A_Prob'])} | {_f(a['forget_truth_ratio'])} "
                     f"| {_f(sr['truth_ratio'])} | {_f(sr['rougeL'])} | {_f(sr['probability'])} "
                     f"| {a['unlearn_wall_s']:.0f} |")
    return lines


def format_table(metrics: dict[str, Any]) -> str:
    lines = [TABLE_HEADER, "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("full", "retain"):
        m = metrics[name]
        lines.append(f"| {name} (reference) | {_f(m['forget_quality'])} | {_f(m['model_utility'])} "
                     f"| {_f(m['forget_Q_A_ROUGE'])} | {_f(m['forget_Q_A_Prob'])} | {_f(m['forget_truth_ratio'])} "
                     f"| — | — | — | {m['train_wall_s']:.0f} |")
    lines += _table_rows(metrics["arms"])
    lines.append("")
    lines += verdict_lines(metrics["guard_lowers_sacrifice_rate"])
    if "investigation" in metrics:
        inv = metrics["investigation"]
        lines += ["", "investigation (GUARD variants; SR lower than the base method's?):", TABLE_HEADER,
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += _table_rows(inv["arms"])
        for row in inv["guard_vs_base"].values():
            lowers = ", ".join(f"{SR_LABELS[m]} {_yes(v)}" for m, v in row["lowers"].items())
            lines.append(f"  {row['label']} vs {row['base']}: {lowers}")
    lines.append(f"\nwall time {metrics['wall_s']:.0f} s (wall column: unlearning + GUARD attribution; "
                 "references: fine-tuning)")
    return "\n".join(lines)


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def verdict_lines(verdicts: dict[str, dict[str, bool | None]]) -> list[str]:
    lines = []
    for method, per_metric in verdicts.items():
        lowered = [SR_LABELS[m] for m, v in per_metric.items() if v]
        not_lowered = [SR_LABELS[m] for m, v in per_metric.items() if v is False]
        undefined = [SR_LABELS[m] for m, v in per_metric.items() if v is None]
        text = f"GUARD lowers the sacrifice rate of {method} on {len(lowered)}/{len(per_metric)} metrics"
        if lowered:
            text += f" (lower: {', '.join(lowered)})"
        if not_lowered:
            text += f"; NOT on {', '.join(not_lowered)}"
        if undefined:
            text += f"; not comparable (forget metric not lowered) on {', '.join(undefined)}"
        lines.append(text)
    return lines


def write_demo_report(run_dir: Path, config: UnlearnDemoConfig, metrics: dict[str, Any]) -> None:
    g = config.guard
    page = Report("Unlearning demo", subtitle=f"GD and NPO, with and without GUARD (τ={g.tau:g}, {g.normalize}), "
                                              f"{metrics['forget_split']} ({metrics['forget_samples']} QA) of a "
                                              f"{metrics['world_authors']}-author fictional world")
    verdicts = metrics["guard_lowers_sacrifice_rate"]
    for method, line in zip(verdicts, verdict_lines(verdicts), strict=True):
        values = list(verdicts[method].values())
        page.add_note(line, kind="ok" if all(values) else "warning")
    u = config.unlearn
    page.add_keyvalues({
        "model": f"tiny LLaMA ({config.model.num_layers} layers, {config.model.hidden_size} hidden), "
                 f"{config.train.max_steps} fine-tuning steps",
        "training sets": f"full {metrics['train_records']['full']} QA, retain {metrics['train_records']['retain']} "
                         "QA (both with the world's general facts)",
        "unlearning": f"{u.max_steps} steps, batch {u.batch_size}×{u.grad_accum}, lr {u.lr:g} ({u.scheduler}), "
                      "every arm alike",
        "GUARD": f"τ={g.tau:g}, normalize={g.normalize}, retain samples "
                 f"{g.retain_samples or 'all'}, recompute_every={g.recompute_every}",
        "wall_s": metrics["wall_s"],
    })
    page.add_heading("Results")
    arms = metrics["arms"]
    rows = [_report_row(name, metrics[name], reference=True) for name in REFERENCES]
    rows += [_report_row(a["label"], a) for a in arms.values()]
    page.add_table(rows, caption="TOFU metrics (open-unlearning formulas). forget quality: KS-test p-value of the "
                                 "forget truth ratios against the retain model's (higher = closer to never having "
                                 "trained on the forget set). SR: sacrifice rate against the full model "
                                 "(retain lost / forget removed; lower is better). wall: unlearning + GUARD "
                                 "attribution (references: fine-tuning).")
    bars = {name: {k: metrics[name].get(k) for k in ("forget_quality", "model_utility", "forget_Q_A_ROUGE")}
            for name in REFERENCES}
    bars.update({a["label"]: {k: a.get(k) for k in ("forget_quality", "model_utility", "forget_Q_A_ROUGE")}
                 for a in arms.values()})
    page.add_figure("tofu_metrics", figures.bar_comparison(bars, "Forget quality, model utility, forget ROUGE"),
                    "Per model: forget quality (higher = more like the retain model), model utility "
                    "(higher = better), forget ROUGE-L recall (lower = more forgotten).")
    page.add_heading("Sacrifice rates")
    page.add_paragraph("SR = (M_retain(full) − M_retain(arm)) / (M_forget(full) − M_forget(arm)). A lower SR can "
                       "come from harming the retain set less or from removing more of the forget set; the parts "
                       "show which.")
    parts = []
    for a in arms.values():
        for metric in SACRIFICE_METRICS:
            p = a["sacrifice_parts"][metric]
            parts.append({"model": a["label"], "metric": SR_LABELS[metric], "retain lost": p["retain_drop"],
                          "forget removed": p["forget_drop"], "SR": a["sacrifice_rate"][metric]})
    page.add_table(parts, caption="Numerator (retain lost) and denominator (forget removed) of every SR")
    sr_bars = {a["label"]: {SR_LABELS[m]: a["sacrifice_rate"][m] for m in SACRIFICE_METRICS}
               for a in arms.values()}
    page.add_figure("sacrifice_rates", figures.bar_comparison(sr_bars, "Sacrifice rate (lower is better)",
                                                              ylabel="SR"),
                    "Sacrifice rate per arm and metric.")
    curves = {a["label"]: _curve(run_dir / name, "forget_nll") for name, a in arms.items()}
    page.add_figure("unlearning_curves", figures.training_curves(curves, title="Forget NLL during unlearning"),
                    "Mean per-token NLL of the forget batches at each logged step (higher = more forgotten).")
    _report_attribution(page, metrics)
    if "investigation" in metrics:
        _report_investigation(page, metrics)
    page.write(run_dir)


def _report_row(label: str, m: dict[str, Any], reference: bool = False) -> dict[str, Any]:
    sr = m.get("sacrifice_rate") or {}
    return {"model": f"{label} (reference)" if reference else label,
            "forget quality": m.get("forget_quality"), "model utility": m.get("model_utility"),
            "forget ROUGE": m.get("forget_Q_A_ROUGE"), "forget prob": m.get("forget_Q_A_Prob"),
            "forget truth ratio": m.get("forget_truth_ratio"), "retain ROUGE": m.get("retain_Q_A_ROUGE"),
            "retain prob": m.get("retain_Q_A_Prob"), "privleak": m.get("privleak"),
            "SR (truth ratio)": sr.get("truth_ratio"), "SR (ROUGE-L)": sr.get("rougeL"),
            "SR (prob)": sr.get("probability"),
            "wall (s)": m.get("train_wall_s") if reference else m.get("unlearn_wall_s")}


def _report_attribution(page: Report, metrics: dict[str, Any]) -> None:
    attribution = {k: v for k, v in metrics["attribution"].items() if v}
    if not attribution:
        return
    page.add_heading("GUARD weights")
    rows = [{"arm": metrics["arms"][name]["label"], "forget samples": a["n"], "Σ w": a["weight_sum"],
             "score mean": a["score_mean"], "score std": a["score_std"], "effective samples": a["effective_samples"],
             "min N·w": metrics["arms"][name]["guard_weight_min"] * a["n"],
             "max N·w": metrics["arms"][name]["guard_weight_max"] * a["n"]}
            for name, a in attribution.items()]
    page.add_table(rows, caption="Attribution scores a_i = ⟨∇ℓ_i, ḡ_R⟩ at θ₀ and the weights w = softmax(−a/τ); "
                                 "effective samples = 1/Σw² (N = uniform weights).")
    first = next(iter(attribution.values()))
    by_template = {label: {g: v for g, v in a["mean_scaled_weight"]["template"].items()}
                   for label, a in ((metrics["arms"][n]["label"], a) for n, a in attribution.items())}
    if any(by_template.values()):
        page.add_figure("guard_weights_by_template", figures.bar_comparison(
            by_template, "Mean GUARD weight N·w per question template", ylabel="N·w (1 = uniform)"),
            "Which kinds of forget questions GUARD unlearns gently (< 1) or strongly (> 1).")
    if first["mean_scaled_weight"]["author"]:
        page.add_keyvalues({f"{label}: {author}": w for label, a in
                            ((metrics["arms"][n]["label"], a) for n, a in attribution.items())
                            for author, w in a["mean_scaled_weight"]["author"].items()},
                           caption="Mean GUARD weight N·w per forget author")


def _report_investigation(page: Report, metrics: dict[str, Any]) -> None:
    inv = metrics["investigation"]
    page.add_heading("Investigation: what GUARD's effect depends on")
    page.add_paragraph("Each GUARD variant is compared with its base method run with the same steps, learning "
                       "rate and retain pairing (LoRA variants with the LoRA base). normalize=none uses the raw "
                       "scores: softmax is shift-invariant, so it equals z-scoring with τ multiplied by the "
                       "scores' standard deviation.")
    all_arms = {**metrics["arms"], **inv["arms"]}
    rows = []
    for name, row in inv["guard_vs_base"].items():
        a, base = all_arms[name], all_arms[row["base"]]
        att = row.get("attribution") or {}
        entry = {"variant": row["label"], "effective samples": att.get("effective_samples"),
                 "forget ROUGE": a["forget_Q_A_ROUGE"], "model utility": a["model_utility"],
                 "forget quality": a["forget_quality"]}
        for metric in SACRIFICE_METRICS:
            entry[f"SR {SR_LABELS[metric]}"] = a["sacrifice_rate"][metric]
            entry[f"base SR {SR_LABELS[metric]}"] = base["sacrifice_rate"][metric]
        entry["lowers SR on"] = ", ".join(SR_LABELS[m] for m, v in row["lowers"].items() if v) or "none"
        rows.append(entry)
    page.add_table(rows, caption="GUARD variants vs their base method")
    base_rows = [_report_row(a["label"], a) for a in inv["arms"].values() if not a["guard"]]
    if base_rows:
        page.add_table(base_rows, caption="Base methods with LoRA adapters (the LoRA GUARD variants' baseline)")


def _curve(arm_dir: Path, key: str) -> list[tuple[int, float]]:
    points = []
    log = arm_dir / "log.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        event = json.loads(line)
        if event.get("event") == "train" and key in event:
            points.append((int(event["step"]), float(event[key])))
    return points
