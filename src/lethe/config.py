"""Typed configs: dataclass schemas, YAML files and dotted overrides (OmegaConf structured configs).

``load_config(TrainConfig, "configs/goldfish.yaml", ["train.goldfish.k=3"])`` merges the schema's
defaults, the YAML file and the overrides, in that order. Unknown keys and values of the wrong type fail
with a one-line :class:`~lethe.errors.LetheError` naming the key.

The configs Lethe ships are package data (``lethe/configs/*.yaml``; the repository's ``configs/`` is a link
to that folder, so there is one copy): ``load_config(TrainConfig, "goldfish")`` loads the shipped
``goldfish.yaml`` when no file of that name exists (:func:`shipped_configs`, ``lethe config list``).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError
from transformers import SchedulerType

from lethe.errors import LetheError
from lethe.train.goldfish import STRATEGIES
from lethe.train.memsinks import SINK_STRATEGIES, check_probabilities

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
    # the weights' dtype when loaded (and so trained and saved); auto = the folder's config.json torch_dtype
    dtype: str = "float32"

    def validate(self) -> None:
        """The ``tiny`` preset's shape, checked before anything is built (HF raises deep inside otherwise)."""
        if self.dtype not in DTYPES:
            raise LetheError(f"config: model.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.name != "tiny":
            return
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
            _check_int(f"model.{key}", getattr(self, key), minimum=1)
        _check_int("model.vocab_size", self.vocab_size, minimum=MIN_TINY_VOCAB)
        if self.hidden_size % self.num_heads:
            raise LetheError(f"config: model.hidden_size={self.hidden_size} is not divisible by "
                             f"model.num_heads={self.num_heads}")
        if (self.hidden_size // self.num_heads) % 2:
            raise LetheError(f"config: model.hidden_size / model.num_heads = {self.hidden_size // self.num_heads} "
                             "must be even (rotary embeddings rotate pairs of dimensions)")


DTYPES = ("float32", "bfloat16", "float16", "auto")
MIN_TINY_VOCAB = 260  # 256 byte-level symbols + the 4 special tokens of the tiny tokenizer
DEFAULT_DATA_FILES = {"documents": "biographies.jsonl", "qa": "full"}  # data.file when left empty


@dataclass
class DataSettings:
    """Training data: plain documents (JSONL/txt) or TOFU-format QA pairs."""

    source: str = "embedded"  # "embedded" = the generated fictional world, or a folder / file path
    format: str = "documents"  # documents | qa
    file: str = ""  # documents: file inside `source`; qa: split name (full, retain90, ...); "" = per-format default
    text_field: str = "text"
    id_field: str = "id"
    max_length: int = 256
    limit: int = 0  # 0 = every record
    pack: bool = False  # pack several documents into each row of max_length tokens (attention stays per document)
    world_authors: int = 100  # embedded world only
    world_seed: int = 0

    def validate(self) -> None:
        if self.format not in DEFAULT_DATA_FILES:
            raise LetheError(f"config: data.format must be 'documents' or 'qa', got {self.format!r}")
        if not self.file:
            self.file = DEFAULT_DATA_FILES[self.format]
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

    def validate(self, key: str = "train.goldfish") -> None:
        """Checked whether or not goldfish is enabled; ``key`` names these settings in the messages."""
        _check_int(f"{key}.k", self.k, minimum=2)
        _check_int(f"{key}.h", self.h, minimum=1)
        _check_int(f"{key}.seed", self.seed)
        if self.strategy not in STRATEGIES:
            raise LetheError(
                f"config: {key}.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )


def _check_int(key: str, value: Any, minimum: int | None = None) -> None:
    """Settings built in Python (not through :func:`load_config`) get the same checks as YAML ones."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LetheError(f"config: {key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise LetheError(f"config: {key} must be >= {minimum}, got {value}")


@dataclass
class MemSinksSettings:
    """MemSinks (DESIGN 3.2): each document's tokens also switch on its own ID-keyed subset of sink neurons."""

    enabled: bool = False
    p_gen: float = 0.7  # fraction of each MLP's hidden units that are shared (always on)
    p_mem: float = 0.3  # fraction of the sink pool a document switches on
    strategy: str = "hash"  # hash (fixed cardinality) | reference (the authors' batch_seqtied_mask_mult)
    seed: int = 0  # `hash` only
    per_layer: bool = False  # `hash` only: a different sink subset per layer (the reference shares one)
    dropout_scale: float = 0.0  # shared-unit factor of the `dropout` mode; 0 = the reference's (p_gen+p_mem)/p_gen
    id_field: str = ""  # "" = the document id the collator computes (record id, else content hash)

    def validate(self, key: str = "train.memsinks") -> None:
        check_probabilities(self.p_gen, self.p_mem, key)
        _check_int(f"{key}.seed", self.seed)
        if self.strategy not in SINK_STRATEGIES:
            raise LetheError(f"config: {key}.strategy must be one of {', '.join(SINK_STRATEGIES)}, "
                             f"got {self.strategy!r}")
        if not self.dropout_scale >= 0 or self.dropout_scale == float("inf"):
            raise LetheError(f"config: {key}.dropout_scale must be >= 0 (0 = the reference's factor), "
                             f"got {self.dropout_scale}")


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
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, more compute
    mixed_precision: str = "no"  # no | bf16 | fp16 (fp16: CUDA only): autocast over model.dtype weights
    # experiment trackers, HF names, comma-separated: none | tensorboard | wandb | trackio | mlflow | ... | all
    report_to: str = "none"
    run_name: str = ""  # the trackers' run name; "" = the run directory's name
    goldfish: GoldfishSettings = field(default_factory=GoldfishSettings)
    memsinks: MemSinksSettings = field(default_factory=MemSinksSettings)

    def validate(self, section: str = "train") -> None:
        """HF / torch settings checked up front: a bad one would fail (or train NaN) after the run started.
        ``section``: the config key these settings sit under, for the messages (the unlearn demo's ``unlearn``)."""
        if self.batch_size < 1 or self.grad_accum < 1:
            raise LetheError(f"config: {section}.batch_size and {section}.grad_accum must be >= 1")
        if not 0 < self.lr < math.inf:  # NaN fails too
            raise LetheError(f"config: {section}.lr must be > 0 and finite, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            raise LetheError(f"config: {section}.weight_decay must be >= 0 and finite, got {self.weight_decay}")
        if not math.isfinite(self.epochs):
            raise LetheError(f"config: {section}.epochs must be finite, got {self.epochs}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise LetheError(f"config: {section}.max_steps must be > 0, or -1 to train {section}.epochs, "
                             f"got {self.max_steps}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise LetheError(f"config: set {section}.epochs > 0 or {section}.max_steps > 0")
        _check_int(f"{section}.warmup_steps", self.warmup_steps, minimum=0)
        _check_int(f"{section}.logging_steps", self.logging_steps, minimum=1)
        _check_int(f"{section}.save_steps", self.save_steps, minimum=1)
        _check_int(f"{section}.save_total_limit", self.save_total_limit, minimum=1)
        _check_int(f"{section}.threads", self.threads, minimum=0)
        if self.mixed_precision not in MIXED_PRECISION:
            raise LetheError(f"config: {section}.mixed_precision must be one of {', '.join(MIXED_PRECISION)}, "
                             f"got {self.mixed_precision!r}")
        if self.mixed_precision == "fp16":
            import torch

            if not torch.cuda.is_available():
                raise LetheError(f"config: {section}.mixed_precision=fp16 needs a CUDA GPU (none here); "
                                 "use bf16 on a CPU")
        report_targets(self.report_to)
        schedulers = [s.value for s in SchedulerType]
        if self.scheduler not in schedulers:
            raise LetheError(f"config: {section}.scheduler must be one of {', '.join(schedulers)}, "
                             f"got {self.scheduler!r}")
        self.goldfish.validate(f"{section}.goldfish")  # a bad k is an error even while goldfish is off
        self.memsinks.validate(f"{section}.memsinks")


MIXED_PRECISION = ("no", "bf16", "fp16")


def report_targets(report_to: str) -> list[str]:
    """``train.report_to`` as HF's list of integrations; an unknown one, or one whose package is missing, is
    a one-line error (HF would raise only when the Trainer is built, after the run directory is claimed)."""
    names = [name.strip() for name in str(report_to).split(",") if name.strip()]
    if names in ([], ["none"]):
        return []
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    if names == ["all"]:
        return ["all"]
    installed = set(get_available_reporting_integrations())
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            raise LetheError(f"config: train.report_to: unknown tracker {name!r} (one of none, all, "
                             f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))})")
        if name not in installed:
            extra = " (pip install 'lethe[tensorboard]')" if name == "tensorboard" else ""
            raise LetheError(f"config: train.report_to={name} needs the {name} package, which is not installed{extra}")
    return names


@dataclass
class LoraSettings:
    """LoRA adapters (peft, Hu et al. 2021): W x + (alpha / r) · B A x with only A, B trained, W frozen."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])

    def validate(self) -> None:
        if self.enabled:
            if self.r < 1:
                raise LetheError(f"config: lora.r must be >= 1, got {self.r}")
            if self.alpha < 1:
                raise LetheError(f"config: lora.alpha must be >= 1, got {self.alpha}")
            if not 0 <= self.dropout < 1:
                raise LetheError(f"config: lora.dropout must be in [0, 1), got {self.dropout}")
            if not self.target_modules:
                raise LetheError("config: lora.target_modules is empty (use [all-linear] or module names)")


@dataclass
class TrainConfig:
    """``lethe train``: causal-LM training / fine-tuning, optionally with goldfish loss."""

    run_dir: str = ""  # empty = runs/train-<timestamp>
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def validate(self) -> None:
        self.model.validate()
        self.data.validate()
        self.lora.validate()
        self.train.validate()
        m = self.model
        if self.lora.enabled and self.train.memsinks.enabled:
            raise LetheError("config: lora and train.memsinks do not combine (MemSinks trains the sink neurons' "
                             "own weights, which LoRA freezes)")
        if self.lora.enabled and m.name == "tiny":
            raise LetheError("config: lora.enabled fine-tunes a pretrained model (a model folder or smollm2-135m); "
                             "the tiny preset is randomly initialised, so train it fully")
        if m.name == "tiny" and self.data.max_length > m.max_position_embeddings:
            raise LetheError(f"config: data.max_length={self.data.max_length} exceeds "
                             f"model.max_position_embeddings={m.max_position_embeddings}")
        if m.trust_remote_code and m.name == "tiny":
            raise LetheError("config: model.trust_remote_code applies to model folders, not the tiny preset")


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
    # ``key=`` is the empty string (OmegaConf alone reads it as null, which no str field takes): the configs'
    # "" settings (eval.retain_eval, data.file, ...) must be reachable from a shell
    items = [f"{item}''" if item.endswith("=") else item for item in overrides]
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as err:
        raise LetheError(_describe(err)) from None


def shipped_configs() -> dict[str, Path]:
    """The configs that ship in the package: ``{name: path}`` (``goldfish`` → ``.../lethe/configs/goldfish.yaml``)."""
    folder = Path(str(importlib.resources.files("lethe") / "configs"))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def shipped_config_path(name: str) -> Path:
    """The shipped config ``name`` (with or without ``.yaml``); an unknown name is an error listing the names."""
    configs = shipped_configs()
    stem = name[:-5] if name.endswith(".yaml") else name
    if stem not in configs:
        raise LetheError(f"no shipped config {name!r}; shipped configs: {', '.join(configs) or 'none'}")
    return configs[stem]


def config_file(path: str | Path) -> Path:
    """A config argument → its file: an existing file wins, else a shipped config name (``goldfish``)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.name == str(path) and path.stem in shipped_configs() and path.suffix in ("", ".yaml"):
        return shipped_config_path(path.name)
    if path.exists():
        raise LetheError(f"config {path} is not a file")
    raise LetheError(f"config file not found: {path} (nor a shipped config: {', '.join(shipped_configs())}; "
                     "see lethe config list)")


def config_kind(path: Path) -> str:
    """``train`` or ``unlearn``: the command a YAML config is for (unlearning keys make it ``unlearn``)."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError):
        return "?"
    if not isinstance(loaded, dict):
        return "?"
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    return "unlearn" if set(loaded) - train_keys else "train"


def config_summary(path: Path, width: int = 100) -> str:
    """The first sentence of a config's leading comment (its prose, not its command line), at most ``width``
    characters."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("#").strip()
        if not line.startswith("#") or (not text and words):
            break
        if text and not text.startswith("lethe "):
            words.extend(text.split())
    summary = " ".join(words)
    if ". " in summary:
        summary = summary[: summary.index(". ") + 1]
    if len(summary) > width:
        summary = summary[: summary.rindex(" ", 0, width)] + " ..."
    return summary


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of ``schema`` ← YAML file (or shipped config name) ← dotted overrides; validated; returned
    as a dataclass."""
    merged = OmegaConf.structured(schema)
    layers: list[Any] = []
    if path:
        path = config_file(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise LetheError(f"config file {path}: not UTF-8 text (byte {err.start})") from None
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


def flatten(config: Any) -> dict[str, Any]:
    """``{"train.goldfish.k": 4, ...}``: every leaf of a config dataclass under its dotted key."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(f"{prefix}{name}.", value)
        else:
            flat[prefix[:-1]] = node

    walk("", OmegaConf.to_container(OmegaConf.structured(config)))
    return flat


def config_changes(old: Any, new: Any, ignore: Sequence[str] = ()) -> list[str]:
    """``key (old -> new)`` for every dotted key whose value differs, except the keys in ``ignore``."""
    before, after = flatten(old), flatten(new)
    return [f"{key} ({before.get(key)!r} -> {after.get(key)!r})" for key in sorted(before.keys() | after.keys())
            if key not in ignore and before.get(key) != after.get(key)]


def saved_config(schema: type[T], path: Path, owner: str) -> T | None:
    """The ``schema`` config saved at ``path`` (None when there is none); a file of another kind is an
    error naming ``owner``, the run directory that holds it."""
    if not path.is_file():
        return None
    try:
        return load_config(schema, path)
    except LetheError as err:
        raise LetheError(f"{owner} holds another run: its config.yaml is no {schema.__name__} ({err})") from None
