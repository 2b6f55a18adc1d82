"""Lethe: prevent, remove and audit memorization in large language models.

Python API (mirrors the CLI):

    import lethe
    run_dir, metrics = lethe.train("configs/goldfish.yaml", ["train.goldfish.k=3"])
    run_dir, metrics = lethe.unlearn("configs/unlearn.yaml", ["method=npo", "guard.enabled=true"])
    run_dir, summary = lethe.eval_tofu("runs/x/model", data="embedded", split="forget10")
    run_dir, summary = lethe.audit_extraction("runs/x/model", data="embedded")
    mask = lethe.goldfish_mask(input_ids, k=4, h=13)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lethe.errors import LetheError

__version__ = "0.1.0"
__all__ = ["GoldfishCollator", "LetheError", "audit_all", "audit_extraction", "audit_familiarity", "demo_goldfish",
           "demo_memsinks", "demo_whp", "eval_tofu", "goldfish_mask", "train", "unlearn", "__version__"]


def _check_settings(schema: type, settings: dict[str, Any]) -> None:
    """Unknown keyword settings are a one-line error naming them and the known ones."""
    from dataclasses import fields

    known = {f.name for f in fields(schema)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise LetheError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def __getattr__(name: str) -> Any:
    """``lethe.GoldfishCollator``, imported on first use (``import lethe`` stays light)."""
    if name == "GoldfishCollator":
        from lethe.train.goldfish_collator import GoldfishCollator

        return GoldfishCollator
    raise AttributeError(f"module 'lethe' has no attribute {name!r}")


def goldfish_mask(*args: Any, **kwargs: Any):
    """See :func:`lethe.train.goldfish.goldfish_mask`."""
    from lethe.train.goldfish import goldfish_mask as _mask

    return _mask(*args, **kwargs)


def _train(config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
          quiet: bool = True) -> tuple[Path, dict[str, Any]]:
    """``lethe train CONFIG overrides...``: returns (run directory, metrics)."""
    from lethe.config import TrainConfig, load_config
    from lethe.train.trainer import run_training

    return run_training(load_config(TrainConfig, config, overrides), quiet=quiet)


# ``lethe.train`` and ``lethe.unlearn`` are also subpackages: importing one rebinds the attribute to the
# package, which is therefore callable and forwards here (lethe/_callable.py)
train = _train


def _unlearn(config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
             quiet: bool = True) -> tuple[Path, dict[str, Any]]:
    """``lethe unlearn CONFIG overrides...``: unlearning plus, with ``eval.enabled``, the TOFU evaluation
    before and after and the sacrifice rates; returns (run directory, metrics)."""
    from lethe.config import load_config
    from lethe.unlearn.config import UnlearnConfig
    from lethe.unlearn.evaluation import unlearn_and_evaluate

    return unlearn_and_evaluate(load_config(UnlearnConfig, config, list(overrides)), quiet=quiet)


unlearn = _unlearn


def eval_tofu(model: str | Path, data: str = "embedded", split: str = "forget10",
              retain_eval: str | Path | None = None, run_dir: str | Path | None = None,
              **settings: Any) -> tuple[Path, dict[str, Any]]:
    """``lethe eval tofu --model M --data D --split S [--retain-eval FILE]``: the TOFU metrics of one
    model (``settings``: limit, max_new_tokens, batch_size, protocol, system_prompt, date_string); returns
    (run directory, summary)."""
    from lethe.audit.commands import TofuEvalSettings
    from lethe.audit.commands import eval_tofu as _eval

    _check_settings(TofuEvalSettings, settings)
    tofu = TofuEvalSettings(model=str(model), data=str(data), split=split,
                            retain_eval=str(retain_eval) if retain_eval else "", **settings)
    return _eval(tofu, run_dir)


def audit_extraction(model: str | Path, data: str = "embedded", run_dir: str | Path | None = None,
                     **settings: Any) -> tuple[Path, dict[str, Any]]:
    """``lethe audit extraction --model M --data D``: returns (run directory, summary)."""
    from lethe.audit.commands import ExtractionSettings
    from lethe.audit.commands import audit_extraction as _audit

    _check_settings(ExtractionSettings, settings)
    return _audit(ExtractionSettings(model=str(model), data=data, **settings), run_dir)


def audit_all(data: str | Path, model: str | Path | None = None, run_dir: str | Path | None = None,
              **settings: Any) -> tuple[Path, dict[str, Any]]:
    """``lethe audit all --data RUN [--model M]``: extraction, MIA and canaries (those that apply) of a
    training run's model (default ``RUN/model``); returns (run directory, summary)."""
    from lethe.audit.suite import AuditAllSettings
    from lethe.audit.suite import audit_all as _audit

    _check_settings(AuditAllSettings, settings)
    return _audit(AuditAllSettings(data=str(data), model=str(model) if model else "", **settings), run_dir)


def demo_goldfish(overrides: list[str] | tuple[str, ...] = (), quiet: bool = True) -> tuple[Path, dict[str, Any]]:
    """``lethe demo goldfish overrides...``: returns (run directory, metrics)."""
    from lethe.config import load_config
    from lethe.demo.goldfish import GoldfishDemoConfig, run_goldfish_demo

    return run_goldfish_demo(load_config(GoldfishDemoConfig, None, overrides), quiet=quiet)


def demo_memsinks(overrides: list[str] | tuple[str, ...] = (), quiet: bool = True) -> tuple[Path, dict[str, Any]]:
    """``lethe demo memsinks overrides...``: returns (run directory, metrics)."""
    from lethe.config import load_config
    from lethe.demo.memsinks import MemSinksDemoConfig, run_memsinks_demo

    return run_memsinks_demo(load_config(MemSinksDemoConfig, None, overrides), quiet=quiet)


def demo_whp(overrides: list[str] | tuple[str, ...] = (), quiet: bool = True) -> tuple[Path, dict[str, Any]]:
    """``lethe demo whp overrides...``: returns (run directory, metrics)."""
    from lethe.config import load_config
    from lethe.demo.whp import WHPDemoConfig, run_whp_demo

    return run_whp_demo(load_config(WHPDemoConfig, None, overrides), quiet=quiet)


def audit_familiarity(model: str | Path, probes: str = "embedded", run_dir: str | Path | None = None,
                      **settings: Any) -> tuple[Path, dict[str, Any]]:
    """``lethe audit familiarity --model M --probes P``: returns (run directory, summary); ``settings``: terms,
    reinforced, alpha (the inference-time WHP model), max_new_tokens, batch_size."""
    from lethe.audit.commands import FamiliaritySettings
    from lethe.audit.commands import audit_familiarity as _audit

    _check_settings(FamiliaritySettings, settings)
    return _audit(FamiliaritySettings(model=str(model), probes=str(probes), **settings), run_dir)

