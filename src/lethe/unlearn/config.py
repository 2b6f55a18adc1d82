"""``lethe unlearn`` config: method, data splits, objective hyper-parameters, GUARD, LoRA and training.

``load_config(UnlearnConfig, "configs/unlearn.yaml", ["method=npo", "guard.enabled=true"])``. Objective
values left at ``null`` take the method's defaults (DESIGN 3.3, :data:`lethe.unlearn.objectives.METHODS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lethe.config import LoraSettings, ModelSettings, TrainSettings
from lethe.errors import LetheError
from lethe.unlearn.guard import NORMALIZATIONS
from lethe.unlearn.objectives import get_method, resolve_hyper


@dataclass
class UnlearnDataSettings:
    """Forget / retain splits of a TOFU-format folder (or the embedded world)."""

    source: str = "embedded"  # "embedded" = the generated fictional world, or a TOFU-format folder
    forget_split: str = "forget10"
    retain_split: str = ""  # "" = the complement of forget_split (forget10 -> retain90)
    idk_file: str = ""  # IdkPO refusals; "" = Lethe's built-in list
    max_length: int = 256
    world_authors: int = 100  # embedded world only
    world_seed: int = 0

    def validate(self) -> None:
        if not self.forget_split:
            raise LetheError("config: data.forget_split must name a split (e.g. forget10)")
        if self.max_length < 2:
            raise LetheError(f"config: data.max_length must be >= 2, got {self.max_length}")


@dataclass
class ObjectiveSettings:
    """L = γ·L_forget + α·L_retain; null = the method's default."""

    gamma: float | None = None
    alpha: float | None = None
    beta: float | None = None
    delta: float | None = None
    max_loss: float = 1e4  # stop the run when |L| exceeds this (or L is NaN/inf)

    def validate(self) -> None:
        if not self.max_loss > 0:
            raise LetheError(f"config: objective.max_loss must be > 0, got {self.max_loss}")
        for key in ("gamma", "alpha", "beta", "delta"):
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                raise LetheError(f"config: objective.{key} must be finite, got {value}")


@dataclass
class GuardSettings:
    """GUARD attribution weights (DESIGN 3.4)."""

    enabled: bool = False
    tau: float = 1.0  # softmax temperature (in standard deviations of a with normalize=zscore)
    # none | zscore. zscore by default (the paper uses raw scores = "none"): raw a_i scale with model,
    # trainable parameters and loss, so one τ would not fit all; see lethe.unlearn.guard's docstring
    normalize: str = "zscore"
    recompute_every: int = 0  # > 0: recompute the weights at the current θ every N optimizer steps
    retain_samples: int = 0  # retain samples averaged into ḡ_R; 0 = the whole retain set
    batch_size: int = 0  # attribution batch size; 0 = train.batch_size

    def validate(self) -> None:
        if not 0 < self.tau < float("inf"):  # NaN fails too
            raise LetheError(f"config: guard.tau must be > 0 and finite, got {self.tau}")
        if self.normalize not in NORMALIZATIONS:
            raise LetheError(f"config: guard.normalize must be one of {', '.join(NORMALIZATIONS)}, "
                             f"got {self.normalize!r}")
        for key in ("recompute_every", "retain_samples", "batch_size"):
            if getattr(self, key) < 0:
                raise LetheError(f"config: guard.{key} must be >= 0, got {getattr(self, key)}")


@dataclass
class EvalSettings:
    """TOFU evaluation before and after unlearning, for forget/utility metrics and the sacrifice rate."""

    enabled: bool = True
    limit: int = 0  # items per split (0 = all); small values for quick runs
    max_new_tokens: int = 200
    batch_size: int = 16
    retain_eval: str = ""  # retain model's tofu_eval.json / open-unlearning TOFU_EVAL.json: forget_quality, privleak
    before: str = ""  # tofu_eval.json of the model before unlearning (reused instead of recomputed)
    # input protocol (lethe.audit.tofu_protocol): open-unlearning = leaderboard-comparable; lethe = clean
    protocol: str = "open-unlearning"
    system_prompt: str = ""  # open-unlearning's instruct configs use "You are a helpful assistant."
    date_string: str = ""  # for chat templates that print a date (Llama 3.x)

    def validate(self) -> None:
        if self.limit < 0 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise LetheError("config: eval.limit must be >= 0, eval.max_new_tokens and eval.batch_size >= 1")
        if self.protocol not in ("open-unlearning", "lethe"):
            raise LetheError(f"config: eval.protocol must be open-unlearning or lethe, got {self.protocol!r}")


@dataclass
class WHPSettings:
    """``whp.*`` of ``lethe unlearn method=whp``."""

    target: str = ""  # the text to forget: .txt / JSONL / JSON documents (a folder: its saga.jsonl)
    terms: str = ""  # the anchored-term dictionary {term: [alternatives]} (a folder: its anchored_terms.json)
    reinforced: str = "train"  # a model folder, or `train`: fine-tune one from the baseline on the target
    alpha: float = 5.0
    block: int = 512
    # beyond the paper (lethe.unlearn.whp): compare log-probabilities instead of logits, and forbid the
    # target-specific tokens as the label right before a term (both off: the paper's recipe)
    space: str = "logits"  # logits | logprobs
    forbid_terms: bool = False
    seed: int = 0  # the per-block choice of alternatives
    label_batch_size: int = 8  # blocks per forward pass when computing the labels
    reinforced_steps: int = 100  # `train` only
    reinforced_lr: float = 1e-3
    reinforced_batch_size: int = 8
    mix_documents: str = ""  # non-target documents fine-tuned on with their own labels ("" = none, the paper)
    mix_count: int = 0  # how many of them (0 = all)
    retain_kl: float = 0.0  # > 0: the mixed documents kept near the baseline by λ·KL instead of their own labels

    def validate(self) -> None:
        if not self.target:
            raise LetheError("config: whp.target must name the text to forget (a .txt / JSONL file)")
        if not self.terms:
            raise LetheError("config: whp.terms must name the anchored-term dictionary (JSON)")
        if not self.alpha > 0:
            raise LetheError(f"config: whp.alpha must be > 0, got {self.alpha}")
        if self.block < 2:
            raise LetheError(f"config: whp.block must be >= 2, got {self.block}")
        if self.space not in ("logits", "logprobs"):
            raise LetheError(f"config: whp.space must be logits or logprobs, got {self.space!r}")
        if self.label_batch_size < 1 or self.reinforced_steps < 1 or self.reinforced_batch_size < 1:
            raise LetheError("config: whp.label_batch_size, whp.reinforced_steps and whp.reinforced_batch_size "
                             "must be >= 1")
        if not self.reinforced_lr > 0:
            raise LetheError(f"config: whp.reinforced_lr must be > 0, got {self.reinforced_lr}")
        if self.mix_count < 0:
            raise LetheError(f"config: whp.mix_count must be >= 0, got {self.mix_count}")
        if self.retain_kl < 0 or (self.retain_kl > 0 and not self.mix_documents):
            raise LetheError(f"config: whp.retain_kl must be >= 0 and needs whp.mix_documents, got {self.retain_kl}")


def _unlearn_train_defaults() -> TrainSettings:
    # TOFU unlearning defaults: lr 1e-5, weight decay 0.01, 5 epochs, effective batch 32
    return TrainSettings(lr=1e-5, weight_decay=0.01, epochs=5.0, batch_size=8, grad_accum=4,
                         logging_steps=5, save_steps=50)


@dataclass
class UnlearnConfig:
    """``lethe unlearn``: remove a forget set from a trained model."""

    run_dir: str = ""  # empty = runs/unlearn-<timestamp>
    method: str = "npo"  # ga | gd | kl | npo | simnpo | idkpo | whp
    model: ModelSettings = field(default_factory=lambda: ModelSettings(name=""))
    data: UnlearnDataSettings = field(default_factory=UnlearnDataSettings)
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    guard: GuardSettings = field(default_factory=GuardSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=_unlearn_train_defaults)
    eval: EvalSettings = field(default_factory=EvalSettings)
    whp: WHPSettings = field(default_factory=WHPSettings)  # method=whp only

    def validate(self) -> None:
        if str(self.method).lower() == "whp":
            self._validate_whp()
            return
        method = get_method(self.method)
        self.method = method.name
        if not self.model.name:
            raise LetheError("config: set model.name to the model to unlearn from (a trained model folder "
                             "such as runs/train-.../model, or a preset: smollm2-135m)")
        self.data.validate()
        self.objective.validate()
        self.eval.validate()
        resolve_hyper(method, self.objective.gamma, self.objective.alpha, self.objective.beta,
                      self.objective.delta)
        self.guard.validate()
        self.lora.validate()
        self.train.validate()
        if self.train.goldfish.enabled:
            raise LetheError("config: train.goldfish is a training-time method; "
                             "it does not apply to unlearning")

    def _validate_whp(self) -> None:
        """``method=whp``: the WHP settings; GUARD, LoRA and goldfish do not apply."""
        self.method = "whp"
        if not self.model.name:
            raise LetheError("config: set model.name to the baseline model to unlearn from")
        if self.guard.enabled or self.lora.enabled or self.train.goldfish.enabled:
            raise LetheError("config: guard, lora and train.goldfish do not apply to method=whp")
        self.data.validate()
        self.whp.validate()
        self.train.validate()
