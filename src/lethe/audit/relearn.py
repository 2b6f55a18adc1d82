"""The relearning attack: does unlearned knowledge come back after a few steps on related text?

Lynch et al. 2024 (arXiv 2402.16835) and Hu et al. 2024 (arXiv 2406.13356) show that WHP-, GA- and
NPO-unlearned models recover much of the "forgotten" knowledge after briefly fine-tuning on a small slice of
target-related text. ``lethe audit relearn --model M --data D --steps N``: a copy of M is fine-tuned N steps
(default 10, lr 1e-3) on the documents of D (a few hundred tokens) with the training command's machinery,
then the forget audit runs on the model before and after:

- with ``--probes``: familiarity (completion and probability, :mod:`lethe.audit.familiarity`);
- with ``--tofu-data``: TOFU forget ROUGE-L and probability (:mod:`lethe.audit.tofu_metrics`).

Given ``--baseline`` (the model before unlearning), recovery = (F(relearned) − F(unlearned)) /
(F(baseline) − F(unlearned)): the share of what unlearning removed that relearning restored. Works on the
output of every unlearning method.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lethe.config import DataSettings, TrainConfig, TrainSettings, to_yaml
from lethe.data.text import load_documents
from lethe.errors import LetheError
from lethe.models import load_model
from lethe.runs import RunLog, atomic_write_json, atomic_write_text
from lethe.train.trainer import train_model


def relearn_model(model: Any, tokenizer: Any, texts: list[str], *, steps: int = 10, lr: float = 1e-3,
                  folder: Path, max_length: int = 512, batch_size: int = 8, seed: int = 0,
                  quiet: bool = True) -> Any:
    """A copy of ``model`` trained ``steps`` steps on ``texts`` (constant lr) in ``folder``; ``model`` is unchanged."""
    if steps < 1:
        raise LetheError(f"relearn steps must be >= 1, got {steps}")
    if not texts:
        raise LetheError("relearn: no text to relearn on")
    config = TrainConfig(run_dir=str(folder), data=DataSettings(max_length=max_length),
                         train=TrainSettings(max_steps=steps, batch_size=batch_size, lr=lr, scheduler="constant",
                                             seed=seed, logging_steps=max(1, steps // 2), save_steps=10**6))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", to_yaml(config))
    if hasattr(model, "reinforced"):
        raise LetheError("relearn: the inference-time WHP model has no weights of its own to fine-tune")
    copied = copy.deepcopy(model)
    train_model(config, folder, model=copied, tokenizer=tokenizer,
                records=[{"id": f"relearn-{i}", "text": t} for i, t in enumerate(texts)], quiet=quiet)
    copied.eval()
    return copied


@dataclass
class RelearnSettings:
    model: str
    data: str
    steps: int = 10
    lr: float = 1e-3
    probes: str = ""
    terms: str = ""
    baseline: str = ""
    tofu_data: str = ""
    split: str = "forget10"
    limit: int = 0
    max_new_tokens: int = 12
    max_length: int = 512

    def validate(self) -> None:
        if self.steps < 1:
            raise LetheError(f"--steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise LetheError(f"--lr must be > 0, got {self.lr}")
        if bool(self.probes) == bool(self.tofu_data):
            raise LetheError("give exactly one forget audit: --probes (familiarity) or --tofu-data "
                             "(TOFU forget metrics)")


def _forget_audit(settings: RelearnSettings, model: Any, tokenizer: Any) -> dict[str, Any]:
    if settings.probes:
        from lethe.audit.familiarity import familiarity, familiarity_summary, load_probes
        from lethe.unlearn.whp import load_terms

        terms = list(load_terms(settings.terms)) if settings.terms else []
        return familiarity_summary(familiarity(model, tokenizer, load_probes(settings.probes), terms,
                                               max_new_tokens=settings.max_new_tokens))
    from lethe.audit.tofu_metrics import evaluate_tofu
    from lethe.data.world import resolve_source

    result = evaluate_tofu(model, tokenizer, resolve_source(settings.tofu_data), forget_split=settings.split,
                           limit=settings.limit, max_new_tokens=64)
    return {k: result["summary"].get(k) for k in ("forget_Q_A_ROUGE", "forget_Q_A_Prob")}


SCORES = ("completion_familiarity", "probability_familiarity", "forget_Q_A_ROUGE", "forget_Q_A_Prob")


def audit_relearn(settings: RelearnSettings, run_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """``lethe audit relearn``: forget audit of the model, of its relearned copy (and of the baseline)."""
    settings.validate()
    texts = [d.text for d in load_documents(settings.data) if d.text.strip()]
    if not texts:
        raise LetheError(f"{settings.data}: no text to relearn on")
    from lethe.audit.commands import audit_run

    with audit_run("audit-relearn", run_dir, settings) as run:
        model, tokenizer = load_model(settings.model)
        baseline = load_model(settings.baseline) if settings.baseline else None
        return _relearn(run.path, settings, model, tokenizer, baseline, texts)


def _relearn(out: Path, settings: RelearnSettings, model: Any, tokenizer: Any, baseline: Any,
             texts: list[str]) -> tuple[Path, dict[str, Any]]:
    from lethe.report import Report, figures

    before = _forget_audit(settings, model, tokenizer)
    relearned = relearn_model(model, tokenizer, texts, steps=settings.steps, lr=settings.lr, folder=out / "relearned",
                              max_length=settings.max_length)
    after = _forget_audit(settings, relearned, tokenizer)
    summary: dict[str, Any] = {"steps": settings.steps, "lr": settings.lr, "relearn_documents": len(texts),
                               "relearn_tokens": sum(len(tokenizer(t)["input_ids"]) for t in texts),
                               "unlearned": before, "relearned": after}
    if baseline is not None:
        reference = _forget_audit(settings, *baseline)
        summary["baseline"] = reference
        summary["recovery"] = {k: (after[k] - before[k]) / (reference[k] - before[k])
                               if reference[k] != before[k] else None for k in SCORES if k in before}
    atomic_write_json(out / "metrics.json", {"relearn": summary})
    RunLog(out)("audit_relearn", steps=settings.steps)
    page = Report("Relearning attack", subtitle=f"model {settings.model}, {settings.steps} steps on {settings.data}")
    rows = [{"model": name, **{k: v for k, v in summary[name].items() if k in SCORES}}
            for name in ("baseline", "unlearned", "relearned") if name in summary]
    page.add_table(rows, caption="Forget audit before and after relearning")
    if "recovery" in summary:
        page.add_keyvalues(summary["recovery"], caption="Recovery: share of what unlearning removed that came back")
    bars = {row["model"]: {k: v for k, v in row.items() if k != "model" and isinstance(v, float)} for row in rows}
    page.add_figure("relearn", figures.bar_comparison(bars, "Forget audit before / after relearning"), "")
    page.write(out)
    return out, summary
