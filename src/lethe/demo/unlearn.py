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
denominator of every SR, because a ratio can fall by unlearning *less* as well as by harming less. It also
measures how much signal the attribution scores carry at θ₀ (:func:`attribution_diagnostics`).
``investigate=true`` runs, per method, each GUARD variant against its base method run alike: τ (z-scored
and raw scores), weights recomputed during unlearning, LoRA adapters only (the parameters attributed and
updated), another learning rate, and other seeds — whose spread is the noise floor an SR difference must
clear.

Every stage writes its folder under the run directory and is reused when the demo is re-run on it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from lethe.audit.tofu_metrics import evaluate_tofu, forget_quality, privleak, write_tofu_eval
from lethe.audit.tofu_protocol import DEFAULT_PROTOCOL
from lethe.config import ModelSettings, TrainConfig, TrainSettings, to_yaml
from lethe.data.tofu import RETAIN_OF, load_split
from lethe.data.world import embedded_world
from lethe.demo.arms import finished_metrics, shared_tokenizer, train_fresh_tiny
from lethe.errors import LetheError
from lethe.models import load_model
from lethe.report import Report, figures
from lethe.report.tables import sacrifice_flag
from lethe.runs import RunLog, atomic_write_json, atomic_write_text, demo_run
from lethe.unlearn import guard as guard_lib
from lethe.unlearn.config import (
    EvalSettings,
    GuardSettings,
    LoraSettings,
    ObjectiveSettings,
    UnlearnConfig,
    UnlearnDataSettings,
)
from lethe.unlearn.data import batches, encode_all
from lethe.unlearn.evaluation import SACRIFICE_METRICS, SR_LABELS, sacrifice_parts, unlearn_and_evaluate
from lethe.unlearn.objectives import get_method

REFERENCES = ("full", "retain")
ARM_KEYS = ("forget_quality", "model_utility", "forget_Q_A_ROUGE", "forget_Q_A_Prob", "forget_truth_ratio",
            "retain_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Truth_Ratio", "privleak")


def _demo_model() -> ModelSettings:
    return ModelSettings(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, vocab_size=2048)


def _demo_train_settings() -> TrainSettings:
    # fine-tuning of `full` and `retain`: enough epochs that `full` reproduces the forget answers
    return TrainSettings(max_steps=600, batch_size=16, lr=3e-3, warmup_steps=20, scheduler="cosine",
                         logging_steps=25, save_steps=200, weight_decay=0.0)


def _demo_unlearn_settings() -> TrainSettings:
    # every arm: same steps, lr, batches and retain pairing. 25 steps = 5 epochs of forget10 (TOFU's recipe);
    # tiny models need lr ~1e-4..1e-3, not TOFU's 1e-5: at 2e-4 GD brings the forget ROUGE down to the
    # retain model's level, at 4e-4 and above GD destroys model utility
    return TrainSettings(max_steps=25, batch_size=16, grad_accum=1, lr=2e-4, weight_decay=0.01,
                         scheduler="constant", warmup_steps=0, logging_steps=5, save_steps=1000)


@dataclass
class UnlearnDemoConfig:
    run_dir: str = ""
    world_authors: int = 40  # 20 QA per author; forget10 = the last 10% of the authors
    world_seed: int = 0
    # knowledge shared by forget and retain authors in [0, 1] (lethe.data.fictional._share_facts): 0 = the
    # world as it always was, where no two authors share facts; 1 = every shareable fact group shared
    overlap: float = 0.0
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
    diagnostics: bool = True  # GUARD's attribution signal at θ₀ (gradient norms, cosines, split-half agreement)
    # investigate=true: per method, each GUARD variant against its base method with the same settings:
    investigate: bool = False
    sweep_taus: list[float] = field(default_factory=lambda: [0.5, 2.0, 4.0])  # τ on z-scored scores
    sweep_raw_taus: list[float] = field(default_factory=lambda: [1.0])  # τ on raw scores (normalize=none)
    sweep_recompute: list[int] = field(default_factory=lambda: [5])  # weights recomputed every N steps
    sweep_lora: bool = True  # base and GUARD on LoRA adapters only (the parameters attributed and updated)
    sweep_lora_lr: float = 1e-3  # LoRA needs a larger learning rate to unlearn as much; 0 = unlearn.lr
    sweep_lrs: list[float] = field(default_factory=lambda: [4e-4])  # base and GUARD at other learning rates
    sweep_seeds: list[int] = field(default_factory=lambda: [1])  # base and GUARD, other seeds: the noise floor

    def validate(self) -> None:
        if self.world_authors < 2:
            raise LetheError(f"config: world_authors must be >= 2, got {self.world_authors}")
        if not 0 <= self.overlap <= 1:  # NaN fails too
            raise LetheError(f"config: overlap must be in [0, 1], got {self.overlap}")
        if self.forget_split not in RETAIN_OF:
            raise LetheError(f"config: forget_split must be one of {', '.join(RETAIN_OF)}, "
                             f"got {self.forget_split!r}")
        if not self.methods:
            raise LetheError("config: methods is empty (e.g. [gd, npo])")
        try:
            self.methods = [get_method(name).name for name in self.methods]
        except LetheError as err:
            raise LetheError(f"config: methods: {err}") from None
        if len(set(self.methods)) != len(self.methods):
            raise LetheError(f"config: methods has duplicates: {self.methods}")
        if self.eval_limit < 0 or self.eval_max_new_tokens < 1 or self.eval_batch_size < 1:
            raise LetheError("config: eval_limit must be >= 0, eval_max_new_tokens and eval_batch_size >= 1")
        if self.threads < 0:
            raise LetheError(f"config: threads must be >= 0, got {self.threads}")
        self.train.validate()
        self.unlearn.validate("unlearn")
        self.objective.validate()
        self.guard.validate()
        for tau in [*self.sweep_taus, *self.sweep_raw_taus]:
            GuardSettings(tau=tau).validate()
        if self.sweep_lora_lr < 0 or any(lr <= 0 for lr in self.sweep_lrs):
            raise LetheError("config: sweep_lora_lr must be >= 0 and sweep_lrs > 0")
        if any(n < 1 for n in self.sweep_recompute) or any(seed < 1 for seed in self.sweep_seeds):
            raise LetheError("config: sweep_recompute and sweep_seeds values must be >= 1")
        if self.train.goldfish.enabled or self.unlearn.goldfish.enabled:
            raise LetheError("config: goldfish does not apply to this demo")


# --- arms --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One unlearning run from ``full``: a method; GUARD on/off with τ, normalisation and recomputation;
    all weights or LoRA adapters; a learning rate (0 = ``unlearn.lr``); a seed offset (redraws the batch
    order and the retain pairing)."""

    method: str
    guard: bool
    tau: float = 1.0
    normalize: str = "zscore"
    recompute_every: int = 0
    lora: bool = False
    lr: float = 0.0
    seed: int = 0

    @property
    def name(self) -> str:  # the folder name
        name = self.method + ("-lora" if self.lora else "") + (f"-lr{self.lr:g}" if self.lr else "")
        name += f"-seed{self.seed}" if self.seed else ""
        if self.guard:
            name += f"-guard-tau{self.tau:g}-{self.normalize}"
            name += f"-recompute{self.recompute_every}" if self.recompute_every else ""
        return name

    @property
    def label(self) -> str:  # the table label
        extra = ["LoRA" if self.lora else "", f"lr {self.lr:g}" if self.lr else "",
                 f"seed +{self.seed}" if self.seed else ""]
        extra = [x for x in extra if x]
        label = self.method + (f" ({', '.join(extra)})" if extra else "")
        if self.guard:
            every = f", recompute every {self.recompute_every}" if self.recompute_every else ""
            label += f" +GUARD (τ={self.tau:g}, {self.normalize}{every})"
        return label


def main_arms(config: UnlearnDemoConfig) -> list[Arm]:
    g = config.guard
    return [Arm(m, guard, g.tau, g.normalize, g.recompute_every if guard else 0)
            for m in config.methods for guard in (False, True)]


def investigation_arms(config: UnlearnDemoConfig) -> list[Arm]:
    """Per method: GUARD over ``sweep_taus`` (z-scored scores), ``sweep_raw_taus`` (raw scores) and
    ``sweep_recompute``; then base and GUARD with LoRA, at each of ``sweep_lrs`` and with each of
    ``sweep_seeds``. The main arms are not repeated."""
    g = config.guard
    arms: list[Arm] = []
    for method in config.methods:
        arms += [Arm(method, True, tau, "zscore", g.recompute_every) for tau in config.sweep_taus]
        arms += [Arm(method, True, tau, "none", g.recompute_every) for tau in config.sweep_raw_taus]
        arms += [Arm(method, True, g.tau, g.normalize, every) for every in config.sweep_recompute]
        pairs = [{"lora": True, "lr": config.sweep_lora_lr}] if config.sweep_lora else []
        pairs += [{"lr": lr} for lr in config.sweep_lrs if lr != config.unlearn.lr]
        pairs += [{"seed": seed} for seed in config.sweep_seeds]
        for pair in pairs:
            arms += [Arm(method, False, **pair), Arm(method, True, g.tau, g.normalize, g.recompute_every, **pair)]
    main = set(main_arms(config))
    return [a for a in dict.fromkeys(arms) if a not in main]


def base_of(arm: Arm) -> Arm:
    return Arm(arm.method, False, lora=arm.lora, lr=arm.lr, seed=arm.seed)


def _arm_config(config: UnlearnDemoConfig, arm: Arm, run_dir: Path, world: Path) -> UnlearnConfig:
    guard = GuardSettings(**{**vars(config.guard), "enabled": arm.guard, "tau": arm.tau,
                             "normalize": arm.normalize, "recompute_every": arm.recompute_every})
    train = TrainSettings(**{**vars(config.unlearn), "threads": config.threads, "lr": arm.lr or config.unlearn.lr,
                             "seed": config.unlearn.seed + arm.seed})
    return UnlearnConfig(
        run_dir=str(run_dir / arm.name),
        method=arm.method,
        model=ModelSettings(name=str(run_dir / "full" / "model")),
        data=UnlearnDataSettings(source=str(world), forget_split=config.forget_split,
                                 max_length=config.max_length),
        objective=ObjectiveSettings(**vars(config.objective)),
        guard=guard,
        lora=LoraSettings(enabled=arm.lora),
        train=train,
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
    _check_same_config(folder, to_yaml(config))
    metrics = finished_metrics(folder)
    return metrics if metrics is not None else train_fresh_tiny(config, tokenizer, records, quiet)[1]


def _evaluate_or_reuse(config: UnlearnDemoConfig, folder: Path, world: Path,
                       retain_eval: Path | None) -> dict[str, Any]:
    path = folder / "tofu_eval.json"
    if path.is_file():
        earlier = json.loads(path.read_text())
        if (earlier.get("config") or {}).get("protocol", "lethe") == DEFAULT_PROTOCOL:
            return earlier  # an evaluation under another input protocol is recomputed
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


def arm_summary(arm: Arm, metrics: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    g = metrics["guard"]
    return {
        "label": arm.label, "method": arm.method, "guard": arm.guard, "lora": arm.lora,
        "lr": arm.lr or None, "seed_offset": arm.seed,
        "tau": arm.tau if arm.guard else None, "normalize": arm.normalize if arm.guard else None,
        "recompute_every": arm.recompute_every if arm.guard else None,
        **_row(after),
        "sacrifice_rate": metrics["sacrifice_rate"],
        "sacrifice_parts": sacrifice_parts(before, after),
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


def attribution_diagnostics(config: UnlearnDemoConfig, model_dir: Path, world: Path) -> dict[str, Any]:
    """How much signal GUARD's scores carry at θ₀ (the full model), over all its trainable weights.

    - retain coherence = ‖ḡ_R‖ / mean_r ‖∇ℓ_r‖: 1 if every retain gradient points the same way, about
      1/√N_R if they are unrelated; a_i = ⟨∇ℓ_i, ḡ_R⟩ is only as informative as ḡ_R is large;
    - cos_i = a_i / (‖∇ℓ_i‖ ‖ḡ_R‖): how aligned each forget gradient is with the retain direction;
    - split-half correlation: Pearson r between the scores computed from two disjoint halves of the retain
      set (1 = the ranking is a property of the data, ~0 = it is sampling noise);
    - first-order retain-loss change of one unit step of gradient ascent on the forget term:
      Σ_i w_i a_i with GUARD weights vs mean_i a_i with uniform ones (negative = ascent lowers retain loss).
    """
    model, tokenizer = load_model(model_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    forget = encode_all(tokenizer, load_split(world, config.forget_split), config.max_length)
    retain = encode_all(tokenizer, load_split(world, RETAIN_OF[config.forget_split]), config.max_length)
    if config.guard.retain_samples and config.guard.retain_samples < len(retain):
        retain = retain[: config.guard.retain_samples]
    order = torch.randperm(len(retain), generator=torch.Generator().manual_seed(config.unlearn.seed)).tolist()
    halves = [[retain[i] for i in order[0::2]], [retain[i] for i in order[1::2]]]
    bs = config.guard.batch_size or config.unlearn.batch_size
    half_grads = [guard_lib.retain_mean_gradient(model, batches(h, bs, pad)) for h in halves]
    grad = {k: (half_grads[0][k] * len(halves[0]) + half_grads[1][k] * len(halves[1])) / len(retain)
            for k in half_grads[0]}
    forget_batches = batches(forget, bs, pad)
    scores = guard_lib.attribution_scores(model, forget_batches, grad).double()
    half_scores = [guard_lib.attribution_scores(model, forget_batches, g).double() for g in half_grads]
    params = guard_lib.trainable_parameters(model)

    def grad_norm(feature: dict[str, list[int]]) -> float:
        loss = guard_lib.per_sample_losses(model, batches([feature], 1, pad)[0]).sum()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))

    model.eval()
    forget_norms = torch.tensor([grad_norm(f) for f in forget], dtype=torch.float64)
    retain_norms = torch.tensor([grad_norm(r) for r in retain[:: max(1, len(retain) // 64)]], dtype=torch.float64)
    mean_norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grad.values())))
    cosine = scores / (forget_norms * mean_norm).clamp(min=1e-30)
    weights = guard_lib.guard_weights(scores.float(), config.guard.tau, config.guard.normalize).double()
    split_half = float(torch.corrcoef(torch.stack(half_scores))[0, 1])
    return {
        "parameters": int(sum(p.numel() for p in params.values())), "retain_samples": len(retain),
        "retain_mean_grad_norm": mean_norm, "retain_sample_grad_norm_mean": float(retain_norms.mean()),
        "retain_coherence": mean_norm / float(retain_norms.mean()),
        "retain_coherence_if_unrelated": 1 / math.sqrt(len(retain)),
        "forget_grad_norm_mean": float(forget_norms.mean()),
        "cosine_mean": float(cosine.mean()), "cosine_std": float(cosine.std(unbiased=False)),
        "cosine_min": float(cosine.min()), "cosine_max": float(cosine.max()),
        "score_mean": float(scores.mean()), "score_std": float(scores.std(unbiased=False)),
        "split_half_correlation": split_half,
        "first_order_retain_change_uniform": float(scores.mean()),
        "first_order_retain_change_guard": float((weights * scores).sum()),
        "guard_tau": config.guard.tau, "guard_normalize": config.guard.normalize,
    }


def _diagnostics_or_reuse(config: UnlearnDemoConfig, run_dir: Path, world: Path) -> dict[str, Any]:
    path = run_dir / "full" / "attribution_diagnostics.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("config") == _diagnostics_key(config):
            return stored["diagnostics"]
    diagnostics = attribution_diagnostics(config, run_dir / "full" / "model", world)
    atomic_write_json(path, {"config": _diagnostics_key(config), "diagnostics": diagnostics})
    return diagnostics


def _diagnostics_key(config: UnlearnDemoConfig) -> dict[str, Any]:
    g = config.guard
    return {"tau": g.tau, "normalize": g.normalize, "retain_samples": g.retain_samples,
            "batch_size": g.batch_size or config.unlearn.batch_size, "seed": config.unlearn.seed}


def run_unlearn_demo(config: UnlearnDemoConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    config.validate()
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    try:
        with demo_run("demo-unlearn", config.run_dir or None) as run_dir:
            return _run(config, run_dir, quiet, started)
    finally:
        torch.set_num_threads(threads_before)


def _run(config: UnlearnDemoConfig, run_dir: Path, quiet: bool, started: float) -> tuple[Path, dict[str, Any]]:
    world = embedded_world(config.world_authors, config.world_seed, config.overlap)
    forget_split, retain_split = config.forget_split, RETAIN_OF[config.forget_split]
    splits = {"full": "full", "retain": retain_split}
    # a stage folder run with other settings fails the demo before anything is written or trained
    for name, split in splits.items():
        _check_same_config(run_dir / name, to_yaml(_reference_config(config, name, split, run_dir, world)))
    for arm in main_arms(config) + (investigation_arms(config) if config.investigate else []):
        _check_same_config(run_dir / arm.name, to_yaml(_arm_config(config, arm, run_dir, world)))
    log = RunLog(run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    general = _qa_records(load_split(world, "general"), "general")
    records = {name: _qa_records(load_split(world, split), split) + general for name, split in splits.items()}
    n_forget = len(load_split(world, forget_split))
    tokenizer = shared_tokenizer(run_dir, world_texts(world, forget_split), config.model.vocab_size)
    log("demo_start", world=str(world), forget=n_forget, full=len(records["full"]), retain=len(records["retain"]))

    metrics: dict[str, Any] = {"world": str(world), "world_authors": config.world_authors,
                               "overlap": config.overlap,
                               "forget_split": forget_split, "forget_samples": n_forget,
                               "train_records": {k: len(v) for k, v in records.items()}}
    # retain first: its TOFU eval is the reference of every forget quality, the full model's included
    evals: dict[str, dict[str, Any]] = {}
    for name in ("retain", "full"):
        train_config = _reference_config(config, name, splits[name], run_dir, world)
        if not quiet and not (run_dir / name / "tofu_eval.json").is_file():
            who = "every author" if name == "full" else "without the forget authors"
            print(f"[{name}] fine-tuning on {len(records[name])} QA ({who}, + general facts) "
                  f"for {config.train.max_steps} steps, then TOFU evaluation ...")
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
    if config.diagnostics:
        t0 = time.perf_counter()
        metrics["attribution_diagnostics"] = _diagnostics_or_reuse(config, run_dir, world)
        log("demo_diagnostics", wall_s=time.perf_counter() - t0, **metrics["attribution_diagnostics"])
    if config.investigate:
        metrics["investigation"] = run_investigation(config, run_dir, world, before, results, quiet, log)
    metrics["wall_s"] = time.perf_counter() - started
    atomic_write_json(run_dir / "metrics.json", metrics)
    table = format_table(metrics)
    write_demo_report(run_dir, config, metrics)
    if not quiet:
        print(table)
    return run_dir, metrics


def run_investigation(config: UnlearnDemoConfig, run_dir: Path, world: Path, before: dict[str, Any],
                      results: dict[str, dict[str, Any]], quiet: bool, log: RunLog) -> dict[str, Any]:
    """Every GUARD variant against its base method run alike: which setting lowers the SR, and by more
    than the seed-to-seed range of the main arms (the noise floor of an SR difference)?"""
    arms = investigation_arms(config)
    for arm in arms:
        arm_metrics = run_arm(config, arm, run_dir, world, quiet)
        after = json.loads((run_dir / arm.name / "tofu_eval.json").read_text())["summary"]
        results[arm.name] = arm_summary(arm, arm_metrics, before, after)
        log("demo_investigation_arm", arm=arm.name,
            **{k: v for k, v in results[arm.name].items() if not isinstance(v, dict)})
    everything = [*main_arms(config), *arms]
    noise: dict[str, dict[str, Any]] = {}
    for main in main_arms(config):  # the main arm and its other-seed repeats
        runs = [results[a.name] for a in everything if replace(a, seed=0) == main]
        noise[main.name] = {"seeds": len(runs), **{m: _range([r["sacrifice_rate"][m] for r in runs])
                                                   for m in SACRIFICE_METRICS}}
    main_of = {(a.method, a.guard): a.name for a in main_arms(config)}
    rows = {}
    for arm in everything:
        if not arm.guard:
            continue
        base = base_of(arm)
        floor = {}  # the larger seed-to-seed range of the method's two main arms
        for m in SACRIFICE_METRICS:
            ranges = [noise[main_of[(arm.method, guard)]][m] for guard in (False, True)]
            floor[m] = max([r for r in ranges if r is not None], default=None)
        lowers = guard_verdict(results[base.name], results[arm.name])
        beyond = {m: None if lowers[m] is None or floor[m] is None else bool(
                  results[base.name]["sacrifice_rate"][m] - results[arm.name]["sacrifice_rate"][m] > floor[m])
                  for m in SACRIFICE_METRICS}
        rows[arm.name] = {"label": arm.label, "base": base.name, "lowers": lowers, "lowers_beyond_noise": beyond,
                          "noise_floor": floor,
                          "attribution": attribution_by_group(run_dir / arm.name, world, config.forget_split)}
    return {"arms": {a.name: results[a.name] for a in arms}, "guard_vs_base": rows, "seed_range": noise}


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
    lines += verdict_lines(metrics)
    if "investigation" in metrics:
        inv = metrics["investigation"]
        lines += ["", "investigation (GUARD variants; SR lower than the base method's?):", TABLE_HEADER,
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += _table_rows(inv["arms"])
        lines.append("GUARD variant vs its base: SR lower? (beyond the seed-to-seed range?)")
        for row in inv["guard_vs_base"].values():
            lowers = ", ".join(f"{SR_LABELS[m]} {_yes(v)} ({_yes(row['lowers_beyond_noise'][m])})"
                               for m, v in row["lowers"].items())
            lines.append(f"  {row['label']} vs {row['base']}: {lowers}")
    if metrics.get("attribution_diagnostics"):
        lines += ["", diagnostics_text(metrics["attribution_diagnostics"])]
    lines.append(f"\nwall time {metrics['wall_s']:.0f} s (this invocation; stages reused from the run directory "
                 "cost nothing). wall column: unlearning + GUARD attribution; references: fine-tuning")
    return "\n".join(lines)


def diagnostics_text(d: dict[str, Any]) -> str:
    return (f"GUARD signal at θ₀ ({d['parameters']:,} weights, {d['retain_samples']} retain samples): "
            f"‖ḡ_R‖ = {d['retain_coherence']:.3f} × the mean per-sample retain gradient norm "
            f"({d['retain_coherence_if_unrelated']:.3f} if unrelated); cos(∇ℓ_i, ḡ_R) {d['cosine_mean']:+.3f} "
            f"± {d['cosine_std']:.3f} (range {d['cosine_min']:+.3f}..{d['cosine_max']:+.3f}); split-half "
            f"correlation of the scores {d['split_half_correlation']:.2f}; first-order retain-loss change per unit "
            f"ascent step: uniform {d['first_order_retain_change_uniform']:+.2e}, GUARD "
            f"{d['first_order_retain_change_guard']:+.2e}")


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def verdict_lines(metrics: dict[str, Any]) -> list[str]:
    """One line per method: on which metrics GUARD lowered the SR of the method, with both SRs."""
    lines = []
    for method, per_metric in metrics["guard_lowers_sacrifice_rate"].items():
        base, guard = (next(a for a in metrics["arms"].values() if a["method"] == method and a["guard"] == g)
                       for g in (False, True))
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
        srs = ", ".join(f"{SR_LABELS[m]} {_f(base['sacrifice_rate'][m])} → {_f(guard['sacrifice_rate'][m])}"
                        for m in per_metric)
        lines.append(f"{text} [SR {method} → {method}+GUARD: {srs}]")
    return lines


def write_demo_report(run_dir: Path, config: UnlearnDemoConfig, metrics: dict[str, Any]) -> None:
    g = config.guard
    methods = " and ".join(m.upper() for m in config.methods)
    page = Report("Unlearning demo", subtitle=f"{methods}, with and without GUARD (τ={g.tau:g}, {g.normalize}), "
                                              f"{metrics['forget_split']} ({metrics['forget_samples']} QA) of a "
                                              f"{metrics['world_authors']}-author fictional world")
    verdicts = metrics["guard_lowers_sacrifice_rate"]
    for method, line in zip(verdicts, verdict_lines(metrics), strict=True):
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
        "TOFU input protocol": f"{DEFAULT_PROTOCOL} (docs/protocols.md)",
        "GUARD": f"τ={g.tau:g}, normalize={g.normalize}, retain samples "
                 f"{g.retain_samples or 'all'}, recompute_every={g.recompute_every}",
        "wall_s (this invocation)": metrics["wall_s"],
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
                          "forget removed": p["forget_drop"], "SR": a["sacrifice_rate"][metric],
                          "reading": sacrifice_flag(p["retain_drop"], p["forget_drop"])})
    page.add_table(parts, caption="Numerator (retain lost) and denominator (forget removed) of every SR, and what "
                                  "its sign means")
    sr_bars = {a["label"]: {SR_LABELS[m]: a["sacrifice_rate"][m] for m in SACRIFICE_METRICS}
               for a in arms.values()}
    page.add_figure("sacrifice_rates", figures.bar_comparison(sr_bars, "Sacrifice rate (lower is better)",
                                                              ylabel="SR"),
                    "Sacrifice rate per arm and metric.")
    curves = {a["label"]: _curve(run_dir / name, "forget_nll") for name, a in arms.items()}
    page.add_figure("unlearning_curves", figures.training_curves(curves, title="Forget NLL during unlearning"),
                    "Mean per-token NLL of the forget batches at each logged step (higher = more forgotten).")
    _report_attribution(page, metrics)
    if metrics.get("attribution_diagnostics"):
        d = metrics["attribution_diagnostics"]
        page.add_heading("How much signal GUARD's scores carry here")
        page.add_paragraph(diagnostics_text(d) + ".")
        findings = []
        if d["retain_coherence"] < 2 * d["retain_coherence_if_unrelated"]:
            findings.append("the mean retain gradient is no larger than the mean of unrelated gradients would be "
                            "(as near a minimum of the retain loss)")
        if d["split_half_correlation"] < 0.5:
            findings.append(f"scores from two halves of the retain set agree poorly "
                            f"(r = {d['split_half_correlation']:.2f}): the ranking of the forget samples is "
                            "largely sampling noise")
        if findings:
            page.add_note("Here " + "; ".join(findings) + ".", kind="warning")
        page.add_paragraph("GUARD predicts, to first order at θ₀, the retain loss that ascending each forget sample "
                           "causes. That prediction is only as good as the mean retain gradient ḡ_R is large and "
                           "stable: near a minimum of the retain loss ḡ_R is small, the damage unlearning does is "
                           "second order (curvature), and the scores can rank forget samples by noise. A "
                           "split-half correlation near 1 means the ranking is stable; the first-order change "
                           "shows how much GUARD's weighting was expected to help.")
    if "investigation" in metrics:
        _report_investigation(page, metrics)
    else:
        page.add_note("One seed per arm: an SR difference may be noise. `lethe demo unlearn investigate=true` on "
                      "the same --run-dir adds other seeds (the noise floor), τ, raw scores, recomputed weights, "
                      "LoRA and another learning rate (about 20 more unlearning runs: ~13 min on 2 busy cores).")
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
    # arms with the same GUARD settings share θ₀ and data, hence their weights: show each weighting once
    unique: dict[str, dict[str, Any]] = {}
    for name, a in attribution.items():
        arm = metrics["arms"][name]
        unique.setdefault(f"τ={arm['tau']:g}, {arm['normalize']}", a["mean_scaled_weight"])
    for key, what in (("template", "question template"), ("author", "forget author")):
        groups = list(dict.fromkeys(g for w in unique.values() for g in w[key]))
        if not groups:
            continue
        bars = {group: {label: w[key].get(group) for label, w in unique.items()} for group in groups}
        page.add_figure(f"guard_weights_by_{key}", figures.bar_comparison(
            bars, f"Mean GUARD weight N·w per {what}", ylabel="N·w (1 = uniform)"),
            f"Mean weight N·w of the forget samples of each {what}: unlearned gently (< 1) or strongly (> 1).")


def _report_investigation(page: Report, metrics: dict[str, Any]) -> None:
    inv = metrics["investigation"]
    page.add_heading("Investigation: what GUARD's effect depends on")
    page.add_paragraph("Each GUARD variant is compared with its base method run alike (same steps, learning rate, "
                       "seed and parameters; LoRA variants with the LoRA base). normalize=none uses the raw scores: "
                       "softmax is shift-invariant, so it equals z-scoring with τ multiplied by the scores' "
                       "standard deviation. 'beyond noise': the SR is lower by more than the seed-to-seed range of "
                       "the method's main arms (seeds: " + ", ".join(
                           f"{name} {n['seeds']}" for name, n in inv["seed_range"].items()) + ").")
    all_arms = {**metrics["arms"], **inv["arms"]}
    rows = []
    for name, row in inv["guard_vs_base"].items():
        a, base = all_arms[name], all_arms[row["base"]]
        att = row.get("attribution") or {}
        entry = {"variant": row["label"], "effective samples": att.get("effective_samples"),
                 "forget ROUGE": a["forget_Q_A_ROUGE"], "model utility": a["model_utility"]}
        for metric in SACRIFICE_METRICS:
            entry[f"SR {SR_LABELS[metric]}"] = a["sacrifice_rate"][metric]
            entry[f"base SR {SR_LABELS[metric]}"] = base["sacrifice_rate"][metric]
        entry["lower SR"] = ", ".join(SR_LABELS[m] for m, v in row["lowers"].items() if v) or "none"
        entry["beyond noise"] = ", ".join(SR_LABELS[m] for m, v in row["lowers_beyond_noise"].items() if v) or "none"
        rows.append(entry)
    page.add_table(rows, caption="GUARD variants vs their base method")
    noise_rows = [{"main arm": all_arms[name]["label"], "seeds": n["seeds"],
                   **{f"SR range ({SR_LABELS[m]})": n[m] for m in SACRIFICE_METRICS}}
                  for name, n in inv["seed_range"].items()]
    page.add_table(noise_rows, caption="Seed-to-seed range of the SRs of the main arms (the noise floor)")
    base_rows = [_report_row(a["label"], a) for a in inv["arms"].values() if not a["guard"]]
    if base_rows:
        page.add_table(base_rows, caption="Base methods of the variants (LoRA, other learning rates, other seeds)")


def _curve(arm_dir: Path, key: str) -> list[tuple[int, float]]:
    points = []
    log = arm_dir / "log.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        event = json.loads(line)
        if event.get("event") == "train" and key in event:
            points.append((int(event["step"]), float(event[key])))
    return points
