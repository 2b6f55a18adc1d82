"""``lethe demo memsinks``: the MemSinks paper's TinyStories experiment in miniature.

Ghosal, Maini, Raghunathan 2025 (arXiv 2507.09937) train a model from scratch on 20K unrepeated TinyStories
plus 100 stories repeated 128×: with standard training the repeated stories' loss falls far below the
held-out loss; with MemSinks, switching the sinks off ("dropout") closes more than half of that gap,

    gap closed = (L_rep(dropout) − L_rep(standard)) / (L_heldout(standard) − L_rep(standard)),

while the validation loss matches standard training. Here: a tiny LLaMA trained from scratch on many
unrepeated biographies of the embedded world plus a few biographies repeated many times, once with the
standard loss and once with MemSinks (same initial weights, data and order). IDs are sequential as in the
authors' code (repeated documents 1 … R, the others R+1 …). Measured on the repeated biographies and on
biographies the models never saw: loss of standard, MemSinks ``all`` and ``dropout``; the gap closed; and,
beyond the paper, exact-match extraction and MIA AUC of the repeated biographies (members) against the
held-out ones (non-members). Per-document deletion: ``exclude`` of the first ``exclude`` repeated IDs, its
gap closed on them and on the other repeated documents, for the ``hash`` strategy and (with
``compare_reference=true``, a third arm) the authors' ``reference`` one, whose overlapping subsets make a
deletion bleed into other documents.

Evaluation sets: the *validation* set is the world's unused training-split biographies, the *held-out* set
the world's holdout authors; neither is trained on, and no setting of the demo was chosen on the held-out set.
Re-running on the same run directory reuses the trained arms (the audit-only settings may change).
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lethe.audit.commands import extraction_summary, mia_summary
from lethe.audit.extraction import run_extraction
from lethe.audit.mia import run_mia
from lethe.audit.mia_protocol import DEFAULT_PROTOCOL as DEFAULT_MIA_PROTOCOL
from lethe.audit.scoring import corpus_loss, score_sequences
from lethe.config import (
    MemSinksSettings,
    ModelSettings,
    TrainConfig,
    TrainSettings,
    to_yaml,
)
from lethe.data.formatting import encode_document
from lethe.data.text import Document, load_documents
from lethe.data.world import embedded_world
from lethe.demo.arms import check_reusable, headline_context, shared_tokenizer, table_cell, train_or_reuse
from lethe.errors import LetheError
from lethe.report import Report, figures
from lethe.runs import RunLog, atomic_write_json, atomic_write_text, demo_run
from lethe.train.memsinks import MemSinksSpec, bake, sink_mask

# audit-only settings, and compare_reference: it adds or leaves out the third arm, the other two are reused
DEMO_MAY_CHANGE = ("run_dir", "suffix_len", "mia_bootstrap", "exclude", "compare_reference", "train.logging_steps",
                   "train.save_steps", "train.save_total_limit", "train.threads")
HEADLINE_GAP = 0.5
HEADLINE_HELDOUT = 0.03


def _demo_train_settings() -> TrainSettings:
    return TrainSettings(max_steps=250, batch_size=16, lr=3e-3, warmup_steps=20, scheduler="cosine",
                         logging_steps=25, save_steps=100, weight_decay=0.0)


def _demo_model() -> ModelSettings:
    return ModelSettings(intermediate_size=1024)


@dataclass
class MemSinksDemoConfig:
    run_dir: str = ""
    world_authors: int = 3100
    world_seed: int = 0
    repeated: int = 10  # documents repeated (the paper: 100 stories)
    repetitions: int = 100  # copies of each (the paper: 128)
    unrepeated: int = 3000  # documents seen once per epoch (the paper: 20K stories)
    exclude: int = 1  # per-document deletion: exclude the first N repeated IDs (their sinks: 1-(1-p_mem)^N of all)
    # a third arm with the authors' reference sink hash, for the deletion comparison (off by default: a third
    # training run would take the demo past 10 minutes on 2 cores; re-run the same --run-dir with
    # compare_reference=true to add it, reusing the other two)
    compare_reference: bool = False
    max_length: int = 320
    suffix_len: int = 50
    mia_bootstrap: int = 200
    model: ModelSettings = field(default_factory=_demo_model)
    train: TrainSettings = field(default_factory=_demo_train_settings)
    memsinks: MemSinksSettings = field(default_factory=lambda: MemSinksSettings(enabled=True))

    def validate(self) -> None:
        for key in ("repeated", "repetitions", "unrepeated"):
            if getattr(self, key) < 1:
                raise LetheError(f"config: {key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.exclude < self.repeated:
            raise LetheError(f"config: exclude must be in [0, repeated), got {self.exclude}")
        if self.model.name != "tiny":
            raise LetheError("config: the MemSinks demo trains tiny models from scratch, so model.name must be "
                             f"'tiny', got {self.model.name!r}")
        self.train.validate()
        self.memsinks.validate(key="memsinks")


def _arm_settings(config: MemSinksDemoConfig) -> dict[str, MemSinksSettings]:
    hashed = MemSinksSettings(**{**vars(config.memsinks), "enabled": True})
    arms = {"standard": MemSinksSettings(enabled=False), "memsinks": hashed}
    if config.compare_reference:
        arms["memsinks_reference"] = MemSinksSettings(**{**vars(hashed), "strategy": "reference"})
    return arms


def _split_world(config: MemSinksDemoConfig) -> tuple[list[Document], list[Document], list[Document], list[Document]]:
    world = embedded_world(config.world_authors, config.world_seed)
    biographies = load_documents(world / "biographies.jsonl")
    heldout = load_documents(world / "biographies_holdout.jsonl")
    used = config.repeated + config.unrepeated
    if used >= len(biographies):
        raise LetheError(f"config: repeated + unrepeated = {used} must be below the world's {len(biographies)} "
                         "biographies (the rest are the validation set); raise world_authors")
    return biographies[: config.repeated], biographies[config.repeated : used], biographies[used:], heldout


def training_records(repeated: list[Document], unrepeated: list[Document], repetitions: int,
                     seed: int) -> list[dict[str, Any]]:
    """Repeated documents get the sequential IDs 1 … R (every copy the same), the others R+1 …; shuffled once."""
    records = [{"id": d.id, "text": d.text, "sink_key": i + 1} for i, d in enumerate(repeated)
               for _ in range(repetitions)]
    records += [{"id": d.id, "text": d.text, "sink_key": len(repeated) + 1 + i} for i, d in enumerate(unrepeated)]
    random.Random(seed).shuffle(records)
    return records


def _arm_config(config: MemSinksDemoConfig, arm: str, settings: MemSinksSettings, run_dir: Path) -> TrainConfig:
    train = TrainSettings(**{**vars(config.train), "memsinks": settings})
    arm_config = TrainConfig(run_dir=str(run_dir / arm), model=ModelSettings(**vars(config.model)), train=train)
    arm_config.data.max_length = config.max_length
    arm_config.validate()
    return arm_config


def gap_closed(repeated_loss: float, standard_repeated: float, standard_heldout: float) -> float:
    """(L_rep(model) − L_rep(standard)) / (L_heldout(standard) − L_rep(standard))."""
    gap = standard_heldout - standard_repeated
    return (repeated_loss - standard_repeated) / gap if gap > 0 else float("nan")


class _Evaluator:
    """Losses, extraction and MIA of one model (or mode) on the demo's fixed evaluation sets."""

    def __init__(self, config: MemSinksDemoConfig, tokenizer, sets: dict[str, list[Document]]) -> None:
        self.config, self.tokenizer, self.sets = config, tokenizer, sets
        self.features = {name: [encode_document(tokenizer, d.text, config.max_length) for d in docs]
                         for name, docs in sets.items()}

    def loss(self, model, name: str, indices: list[int] | None = None) -> float:
        features = self.features[name] if indices is None else [self.features[name][i] for i in indices]
        return corpus_loss(score_sequences(model, features, pad_id=self.tokenizer.pad_token_id))

    def evaluate(self, model, audits: bool = True) -> dict[str, Any]:
        result = {f"{name}_loss": self.loss(model, name) for name in ("repeated", "validation", "heldout")}
        if audits:
            repeated = self.sets["repeated"]
            extraction = run_extraction(model, self.tokenizer, [(d.id, d.text) for d in repeated],
                                        suffix_len=self.config.suffix_len, batch_size=32).to_dict()
            mia = run_mia(model, self.tokenizer, [d.text for d in repeated], [d.text for d in self.sets["heldout"]],
                          max_length=self.config.max_length, n_bootstrap=self.config.mia_bootstrap)
            result["extraction"] = extraction_summary(extraction)
            result["mia"] = mia_summary(mia)["attacks"]
        return result


def _deletion(evaluator: _Evaluator, model, spec: MemSinksSpec, n_exclude: int,
              standard: dict[str, Any], standard_model) -> dict[str, Any]:
    """``exclude`` of repeated IDs 1 … n: the gap closed on those documents and on the other repeated ones."""
    removed, kept = list(range(n_exclude)), list(range(n_exclude, evaluator.config.repeated))
    excluded = bake(copy.deepcopy(model), spec, "exclude", exclude_ids=[i + 1 for i in removed])
    all_mode = bake(copy.deepcopy(model), spec, "all")
    held = standard["heldout_loss"]
    out: dict[str, Any] = {"excluded_ids": [i + 1 for i in removed]}
    for name, indices in (("excluded", removed), ("kept", kept)):
        reference = evaluator.loss(standard_model, "repeated", indices)
        for mode, candidate in (("exclude", excluded), ("all", all_mode)):
            loss = evaluator.loss(candidate, "repeated", indices)
            out[f"{name}_{mode}_loss"] = loss
            out[f"{name}_{mode}_gap_closed"] = gap_closed(loss, reference, held)
    out["excluded_heldout_loss"] = evaluator.loss(excluded, "heldout")
    # the share of the excluded IDs' sinks that other repeated documents also use (the bleed's cause)
    out["sink_overlap_with_kept"] = _sink_overlap(spec, [i + 1 for i in removed], [i + 1 for i in kept])
    return out


def _sink_overlap(spec: MemSinksSpec, removed: list[int], kept: list[int]) -> float:
    gone = sink_mask(torch.tensor(removed), spec.n_sink, spec.p_mem, spec.strategy, spec.seed).any(0)
    others = sink_mask(torch.tensor(kept), spec.n_sink, spec.p_mem, spec.strategy, spec.seed)
    used = others.sum(-1).clamp(min=1)
    return float(((others & gone).sum(-1) / used).mean())


def run_memsinks_demo(config: MemSinksDemoConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    started = time.perf_counter()
    config.validate()
    if config.run_dir:
        check_reusable(Path(config.run_dir), config, DEMO_MAY_CHANGE)
    repeated, unrepeated, validation, heldout = _split_world(config)
    with demo_run("demo-memsinks", config.run_dir or None) as run_dir:
        return _run(config, run_dir, quiet, started, (repeated, unrepeated, validation, heldout))


def _run(config: MemSinksDemoConfig, run_dir: Path, quiet: bool, started: float,
         splits: tuple[list[Any], list[Any], list[Any], list[Any]]) -> tuple[Path, dict[str, Any]]:
    repeated, unrepeated, validation, heldout = splits
    log = RunLog(run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    tokenizer = shared_tokenizer(run_dir, [d.text for d in repeated + unrepeated + validation + heldout],
                           config.model.vocab_size)
    records = training_records(repeated, unrepeated, config.repetitions, config.train.seed)
    evaluator = _Evaluator(config, tokenizer, {"repeated": repeated, "validation": validation, "heldout": heldout})
    log("demo_start", repeated=len(repeated), repetitions=config.repetitions, unrepeated=len(unrepeated),
        validation=len(validation), heldout=len(heldout))
    metrics: dict[str, Any] = {"repeated_documents": len(repeated), "repetitions": config.repetitions,
                               "unrepeated_documents": len(unrepeated), "validation_documents": len(validation),
                               "heldout_documents": len(heldout), "train": {}}
    models: dict[str, Any] = {}
    for arm, settings in _arm_settings(config).items():
        if not quiet:
            print(f"[{arm}] training on {len(records)} sequences ({len(repeated)} x {config.repetitions} repeated "
                  f"+ {len(unrepeated)} unrepeated) for {config.train.max_steps} steps ...")
        model, train_metrics = train_or_reuse(_arm_config(config, arm, settings, run_dir), tokenizer, records, quiet)
        models[arm] = model
        metrics["train"][arm] = {k: train_metrics[k] for k in ("train_loss", "steps", "train_wall_s")}
    if not quiet:
        print("evaluating: losses, extraction and MIA of every model and mode ...")
    metrics["standard"] = evaluator.evaluate(models["standard"])
    for arm in [a for a in models if a != "standard"]:
        spec = MemSinksSpec.load(run_dir / arm / "model")
        for mode in ("all", "dropout"):
            key = f"{arm}_{mode}"
            metrics[key] = evaluator.evaluate(bake(copy.deepcopy(models[arm]), spec, mode),
                                              audits=arm == "memsinks")
            metrics[key]["gap_closed"] = gap_closed(metrics[key]["repeated_loss"],
                                                    metrics["standard"]["repeated_loss"],
                                                    metrics["standard"]["heldout_loss"])
            log("demo_mode", model=key, **{k: v for k, v in metrics[key].items() if k.endswith(("loss", "closed"))})
        if config.exclude:
            metrics.setdefault("deletion", {})[spec.strategy] = _deletion(
                evaluator, models[arm], spec, config.exclude, metrics["standard"], models["standard"])
    standard, dropout = metrics["standard"], metrics["memsinks_dropout"]
    metrics["gap_closed"] = dropout["gap_closed"]
    metrics["heldout_loss_ratio"] = dropout["heldout_loss"] / standard["heldout_loss"]
    metrics["validation_loss_ratio"] = dropout["validation_loss"] / standard["validation_loss"]
    metrics["headline_holds"] = (metrics["gap_closed"] > HEADLINE_GAP
                                 and metrics["heldout_loss_ratio"] <= 1 + HEADLINE_HELDOUT)
    metrics["wall_s"] = time.perf_counter() - started
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_demo_report(run_dir, config, metrics)
    if not quiet:
        print(format_table(metrics))
    return run_dir, metrics


ROWS = (("standard", "standard"), ("memsinks_all", "MemSinks all"), ("memsinks_dropout", "MemSinks dropout"),
        ("memsinks_reference_all", "MemSinks (reference hash) all"),
        ("memsinks_reference_dropout", "MemSinks (reference hash) dropout"))


def _rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, label in ROWS:
        if key not in metrics:
            continue
        m = metrics[key]
        extraction, mia = m.get("extraction"), m.get("mia")
        rows.append({"model": label, "repeated loss": m["repeated_loss"], "held-out loss": m["heldout_loss"],
                     "validation loss": m["validation_loss"], "gap closed": m.get("gap_closed", 0.0),
                     "exact-match rate": extraction["exact_match_rate"] if extraction else None,
                     "ROUGE-L": extraction["rougeL"] if extraction else None,
                     "MIA loss AUC": mia["loss"]["auc"] if mia else None})
    return rows


def _id_range(ids: list[int]) -> str:
    return str(ids[0]) if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"


def format_table(metrics: dict[str, Any]) -> str:
    lines = ["| model | repeated loss | held-out loss | validation loss | gap closed | exact match | ROUGE-L "
             "| MIA loss AUC |", "|---|---|---|---|---|---|---|---|"]

    for row in _rows(metrics):
        lines.append(f"| {row['model']} | {row['repeated loss']:.3f} | {row['held-out loss']:.3f} "
                     f"| {row['validation loss']:.3f} | {row['gap closed']:.1%} "
                     f"| {table_cell(row['exact-match rate'], '.0%')} | {table_cell(row['ROUGE-L'], '.3f')} "
                     f"| {table_cell(row['MIA loss AUC'], '.3f')} |")
    for strategy, d in metrics.get("deletion", {}).items():
        lines.append(f"\nexclude ID(s) {_id_range(d['excluded_ids'])} ({strategy} sinks): gap closed "
                     f"{d['excluded_exclude_gap_closed']:.1%} on them vs {d['kept_exclude_gap_closed']:.1%} on the "
                     f"other repeated documents (all mode: {d['excluded_all_gap_closed']:.1%} / "
                     f"{d['kept_all_gap_closed']:.1%}); their sinks overlap {d['sink_overlap_with_kept']:.0%} of "
                     "the others'")
    verdict = "holds" if metrics["headline_holds"] else "DOES NOT hold"
    lines.append(f"\nwall time {metrics['wall_s']:.0f} s; headline (gap closed > {HEADLINE_GAP:.0%}, held-out loss "
                 f"of dropout within {HEADLINE_HELDOUT:.0%} of standard: gap {metrics['gap_closed']:.1%}, held-out "
                 f"{metrics['heldout_loss_ratio'] - 1:+.1%}) {verdict}")
    return "\n".join(lines)


def headline_failure(config: MemSinksDemoConfig, metrics: dict[str, Any]) -> str:
    why = (f"the headline does not hold: dropping the sinks closed {metrics['gap_closed']:.1%} of the "
           f"repeated/held-out loss gap (needs > {HEADLINE_GAP:.0%}) at a held-out loss "
           f"{metrics['heldout_loss_ratio'] - 1:+.1%} from standard training (needs within {HEADLINE_HELDOUT:.0%})")
    return headline_context(why, config, DEMO_MAY_CHANGE)


def write_demo_report(run_dir: Path, config: MemSinksDemoConfig, metrics: dict[str, Any]) -> None:
    ms = config.memsinks
    page = Report("MemSinks demo", subtitle=f"standard vs MemSinks (p_gen={ms.p_gen}, p_mem={ms.p_mem}, "
                                            f"{ms.strategy} sinks) with {metrics['repeated_documents']} biographies "
                                            f"repeated {metrics['repetitions']}x among "
                                            f"{metrics['unrepeated_documents']} unrepeated")
    holds = metrics["headline_holds"]
    page.add_note(f"{'' if holds else 'The headline fails: '}switching the sinks off closes "
                  f"{metrics['gap_closed']:.1%} of the gap between the repeated and the held-out loss of standard "
                  f"training, at a held-out loss {metrics['heldout_loss_ratio'] - 1:+.1%} from standard "
                  "(paper: more than 50% closed, validation loss matching standard training).",
                  kind="ok" if holds else "warning")
    page.add_keyvalues({"model": f"tiny LLaMA ({config.model.num_layers} layers, {config.model.hidden_size} hidden, "
                                 f"MLP {config.model.intermediate_size})",
                        "steps": config.train.max_steps, "batch size": config.train.batch_size,
                        "learning rate": f"{config.train.lr:g}", "wall time": f"{metrics['wall_s']:.0f} s"})
    page.add_heading("Results")
    rows = [{**row, "gap closed": f"{row['gap closed']:.1%}"} for row in _rows(metrics)]
    page.add_table(rows, caption="Mean loss (nats/token) on the repeated biographies, on held-out biographies "
                                 "(never trained on) and on the validation biographies; gap closed = (L_rep − "
                                 "L_rep(standard)) / (L_heldout(standard) − L_rep(standard)); exact 50-token suffix "
                                 "extraction of the repeated biographies and MIA (members = repeated, non-members "
                                 f"= held-out; MIA input protocol {DEFAULT_MIA_PROTOCOL}, see docs/protocols.md) "
                                 "on the hash arm")
    bars = {label: {"repeated": metrics[key]["repeated_loss"], "held-out": metrics[key]["heldout_loss"]}
            for key, label in ROWS if key in metrics}
    page.add_figure("loss_by_arm", figures.bar_comparison(bars, "Loss on repeated vs held-out biographies",
                                                          ylabel="loss (nats/token)"),
                    "Standard training drives the repeated biographies' loss far below the held-out loss; with the "
                    "sinks switched off (dropout) the repeated loss rises towards the held-out one.")
    deletion = metrics.get("deletion", {})
    if deletion:
        page.add_heading("Per-document deletion")
        page.add_table([{"sink hash": strategy, "excluded IDs": _id_range(d["excluded_ids"]),
                         "gap closed on excluded": f"{d['excluded_exclude_gap_closed']:.1%}",
                         "gap closed on the others": f"{d['kept_exclude_gap_closed']:.1%}",
                         "all mode, excluded": f"{d['excluded_all_gap_closed']:.1%}",
                         "all mode, others": f"{d['kept_all_gap_closed']:.1%}",
                         "sink overlap with the others": f"{d['sink_overlap_with_kept']:.0%}"}
                        for strategy, d in deletion.items()],
                       caption="exclude = all mode with the sinks of the excluded IDs switched off")
    page.write(run_dir)
