"""Typed configs: dataclass schemas, YAML files and dotted overrides (OmegaConf structured configs).

``load_config(TrainConfig, "configs/goldfish.yaml", ["train.goldfish.k=3"])`` merges the schema's
defaults, the YAML file and the overrides, in that order. Unknown keys and values of the wrong type fail
with a one-line :class:`~lethe.errors.LetheError` naming the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from lethe.errors import LetheError
from lethe.train.goldfish import STRATEGIES

T = TypeVar("T")


@dataclass
class ModelSettings:
    """Which model to train or load: a preset (``tiny``, ``smollm2-135m``) or a local HF folder."""

    name: str = "tiny"
    # `tiny` preset only: a small LLaMA-architecture config, tokenizer trained on the training corpus
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    vocab_size: int = 2048
    max_position_embeddings: int = 512
    seed: int = 0
    trust_remote_code: bool = False


@dataclass
class DataSettings:
    """Training data: plain documents (JSONL/txt) or TOFU-format QA pairs."""

    source: str = "embedded"  # "embedded" = the generated fictional world, or a folder / file path
    format: str = "documents"  # documents | qa
    file: str = "biographies.jsonl"  # documents: file inside `source`; qa: split name (e.g. full, retain90)
    text_field: str = "text"
    id_field: str = "id"
    max_length: int = 256
    limit: int = 0  # 0 = every record
    world_authors: int = 100  # embedded world only
    world_seed: int = 0

    def validate(self) -> None:
        if self.format not in ("documents", "qa"):
            raise LetheError(f"config: data.format must be 'documents' or 'qa', got {self.format!r}")
        if self.max_length < 2:
            raise LetheError(f"config: data.max_length must be >= 2, got {self.max_length}")
        if self.limit < 0:
            raise LetheError(f"config: data.limit must be >= 0, got {self.limit}")


@dataclass
class GoldfishSettings:
    """Goldfish loss (DESIGN 3.1): drop a hashed 1/k of the tokens from the loss."""

    enabled: bool = False
    k: int = 4
    h: int = 13
    strategy: str = "hash"
    seed: int = 0  # `random` strategy only
    normalize: bool = False  # `hash` only: NFKC / whitespace / dash-normalized canonical ids

    def validate(self) -> None:
        if self.k < 2:
            raise LetheError(f"config: train.goldfish.k must be >= 2, got {self.k}")
        if self.h < 1:
            raise LetheError(f"config: train.goldfish.h must be >= 1, got {self.h}")
        if self.strategy not in STRATEGIES:
            raise LetheError(
                f"config: train.goldfish.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )


@dataclass
class TrainSettings:
    """Optimisation; passed to HF ``TrainingArguments``."""

    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: str = "linear"
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int = 2
    threads: int = 0  # torch CPU threads; 0 = leave as is
    goldfish: GoldfishSettings = field(default_factory=GoldfishSettings)

    def validate(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1:
            raise LetheError("config: train.batch_size and train.grad_accum must be >= 1")
        if self.lr <= 0:
            raise LetheError(f"config: train.lr must be > 0, got {self.lr}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise LetheError("config: set train.epochs > 0 or train.max_steps > 0")
        if self.goldfish.enabled:
            self.goldfish.validate()


@dataclass
class TrainConfig:
    """``lethe train``: causal-LM training / fine-tuning, optionally with goldfish loss."""

    run_dir: str = ""  # empty = runs/train-<timestamp>
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def validate(self) -> None:
        self.data.validate()
        self.train.validate()


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, ConfigKeyError):
        return f"config: unknown key '{key}'" if key else f"config: {first}"
    if isinstance(err, ValidationError):
        return f"config: bad value for '{key}': {first}" if key else f"config: {first}"
    return f"config: {first}"


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise LetheError(f"config: override {item!r} is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise LetheError(_describe(err)) from None


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of ``schema`` ← YAML file ← dotted overrides; validated; returned as a dataclass."""
    merged = OmegaConf.structured(schema)
    layers: list[Any] = []
    if path:
        path = Path(path)
        if not path.is_file():
            raise LetheError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise LetheError(f"config file {path}: invalid YAML ({str(err).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise LetheError(f"config file {path}: top level must be a mapping, got {type(loaded).__name__}")
        layers.append(OmegaConf.create(loaded or {}))
    layers.append(parse_overrides(overrides))
    try:
        for layer in layers:
            merged = OmegaConf.merge(merged, layer)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise LetheError(_describe(err)) from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj  # type: ignore[return-value]


def to_yaml(config: Any) -> str:
    """The resolved config as YAML (what a run directory's ``config.yaml`` holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
