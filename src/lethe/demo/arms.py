"""What every demo does with its trained arms: one tokenizer for all of them, and tiny models trained from
scratch into ``<run_dir>/<arm>`` (``config.yaml``, the model, ``train_metrics.json``) or reused from there."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from lethe.config import TrainConfig, config_changes, saved_config, to_yaml
from lethe.errors import LetheError
from lethe.models import load_model, tiny_model, train_bpe_tokenizer
from lethe.runs import atomic_write_json, atomic_write_text
from lethe.train.trainer import train_model

TRAIN_METRICS = "train_metrics.json"


def shared_tokenizer(run_dir: Path, texts: list[str], vocab_size: int):
    """``run_dir/tokenizer`` when it exists (a re-run), else a BPE tokenizer trained on ``texts`` and saved there."""
    folder = run_dir / "tokenizer"
    if folder.is_dir():
        return AutoTokenizer.from_pretrained(folder)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.save_pretrained(folder)
    return tokenizer


def finished_metrics(arm_dir: Path) -> dict[str, Any] | None:
    """The training metrics of an arm that finished earlier (its model and metrics are both there), else None."""
    path = arm_dir / TRAIN_METRICS
    if (arm_dir / "model").is_dir() and path.is_file():
        return json.loads(path.read_text())
    return None


def train_fresh_tiny(config: TrainConfig, tokenizer, records: list[dict[str, Any]],
                     quiet: bool, callbacks: Sequence[Any] = ()) -> tuple[Any, dict[str, Any]]:
    """A tiny model of ``config.model`` trained from scratch in ``config.run_dir``; returns (model, metrics)."""
    arm_dir = Path(config.run_dir)
    arm_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(arm_dir / "config.yaml", to_yaml(config))
    m = config.model
    model = tiny_model(tokenizer, seed=m.seed, hidden_size=m.hidden_size, num_layers=m.num_layers,
                       num_heads=m.num_heads, intermediate_size=m.intermediate_size,
                       max_position_embeddings=m.max_position_embeddings)
    metrics = train_model(config, arm_dir, model=model, tokenizer=tokenizer, records=records, quiet=quiet,
                          callbacks=callbacks)
    atomic_write_json(arm_dir / TRAIN_METRICS, metrics)
    return model, metrics


def train_or_reuse(config: TrainConfig, tokenizer, records: list[dict[str, Any]],
                   quiet: bool, callbacks: Sequence[Any] = ()) -> tuple[Any, dict[str, Any]]:
    """The arm's saved model and metrics when it finished earlier, else :func:`train_fresh_tiny` (with the
    Trainer ``callbacks``)."""
    arm_dir = Path(config.run_dir)
    metrics = finished_metrics(arm_dir)
    if metrics is not None:
        model, _ = load_model(arm_dir / "model")
        return model, metrics
    return train_fresh_tiny(config, tokenizer, records, quiet, callbacks)


def headline_context(why: str, config: Any, ignore: tuple[str, ...], *,
                     when_default: str = "at the default settings where it should (a regression: please report it)"
                     ) -> str:
    """A demo's one-line headline failure: ``why``, then either the settings that differ from the demo's
    defaults (the headline is claimed only there) or ``when_default``."""
    changed = config_changes(type(config)(), config, ignore=ignore)
    if changed:
        return f"{why}; it is claimed at the default settings, and these differ: {'; '.join(changed)}"
    return f"{why}, {when_default}"


def table_cell(value: Any, spec: str) -> str:
    """A demo table's cell: ``value`` in format ``spec``, "-" where there is none (an arm not audited)."""
    return "-" if value is None else format(value, spec)


def check_reusable(run_dir: Path, config: Any, ignore: tuple[str, ...]) -> None:
    """Refuse a re-run of ``run_dir`` whose trained arms came from other settings than ``config`` (up to the
    audit-only keys ``ignore``): reusing them would silently mix two experiments."""
    previous = saved_config(type(config), run_dir / "config.yaml", str(run_dir))
    if previous is None or not (run_dir / "tokenizer").exists():
        return
    changed = config_changes(previous, config, ignore=ignore)
    if changed:
        raise LetheError(f"{run_dir} trained its models with other settings: {'; '.join(changed)} "
                         "(use a new --run-dir to retrain, or set them back)")


def save_and_print(run_dir: Path, metrics: dict[str, Any], table: str, quiet: bool) -> None:
    """A demo's last step: ``metrics.json``, then (unless ``quiet``) its table (the CLI says where the report is)."""
    atomic_write_json(run_dir / "metrics.json", metrics)
    if not quiet:
        print(table)
