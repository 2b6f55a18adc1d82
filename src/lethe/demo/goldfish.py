"""``lethe demo goldfish``: the goldfish paper's "extreme memorization" experiment in miniature.

Hans et al. 2024 (arXiv 2406.10209) train LLaMA-2-7B for 100 epochs on 100 Wikipedia articles: standard
loss memorizes 84/100 articles exactly, goldfish loss (k=4, h=13) memorizes 0/100. Here two tiny LLaMA
models start from the same weights and see the same biographies of the embedded fictional world for the
same number of steps, one with the standard loss and one with goldfish loss; both are then audited:
greedy extraction of each biography's last ``suffix_len`` tokens from the rest (exact match, per-token
match, ROUGE-L), the loss on biographies of authors never trained on, membership inference (members =
trained biographies, non-members = the never-trained ones; every attack of ``lethe audit mia``) and the
exposure of secret canaries inserted into the training data with chosen repetition counts.

Both models share one BPE tokenizer trained on the whole world (trained and held-out biographies), so
token counts and losses are comparable and the tokenizer carries no membership signal.

Re-running on the same run directory reuses the trained arms and re-runs the audits, so the audit-only
settings (:data:`DEMO_MAY_CHANGE`) may change; any other change from the directory's ``config.yaml`` is
refused (it would need new models: use a new ``--run-dir``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lethe.audit.canaries import canary_exposure
from lethe.audit.commands import (
    add_extraction_examples,
    exposure_points,
    extraction_summary,
    max_exposure,
    mia_protocol_line,
    mia_summary,
    roc_series,
)
from lethe.audit.extraction import run_extraction
from lethe.audit.mia import run_mia
from lethe.audit.scoring import corpus_loss, score_sequences
from lethe.config import (
    GoldfishSettings,
    ModelSettings,
    TrainConfig,
    TrainSettings,
    config_changes,
    saved_config,
    to_yaml,
)
from lethe.data.formatting import encode_document
from lethe.data.text import load_documents
from lethe.data.world import embedded_world
from lethe.demo.arms import headline_context, shared_tokenizer, train_or_reuse
from lethe.errors import LetheError
from lethe.report import Report, figures
from lethe.report.tables import mia_rows
from lethe.runs import RunLog, atomic_write_json, atomic_write_text, demo_run

ARMS = ("standard", "goldfish")
# keys that only change the audits (or logging), so a re-run may change them and still reuse trained arms
DEMO_MAY_CHANGE = ("run_dir", "suffix_len", "canary_samples", "mia_bootstrap", "train.logging_steps",
                   "train.save_steps", "train.save_total_limit", "train.threads")


def _demo_train_settings() -> TrainSettings:
    return TrainSettings(max_steps=300, batch_size=8, lr=3e-3, warmup_steps=20, scheduler="cosine",
                         logging_steps=25, save_steps=100, weight_decay=0.0)


@dataclass
class GoldfishDemoConfig:
    run_dir: str = ""
    world_authors: int = 100
    world_seed: int = 0
    documents: int = 40  # biographies trained on (the memorization targets)
    max_length: int = 320
    suffix_len: int = 50
    canary_max_repetitions: int = 5  # world canaries repeated at most this often are inserted (0 = none)
    canary_samples: int = 1000  # sampled candidates per canary for the exposure estimate
    mia_bootstrap: int = 1000
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=_demo_train_settings)
    goldfish: GoldfishSettings = field(default_factory=lambda: GoldfishSettings(enabled=True))

    def validate(self) -> None:
        if self.documents < 1:
            raise LetheError(f"config: documents must be >= 1, got {self.documents}")
        if self.suffix_len < 1:
            raise LetheError(f"config: suffix_len must be >= 1, got {self.suffix_len}")
        if self.model.name != "tiny":
            raise LetheError(f"config: the goldfish demo trains tiny models from scratch, so model.name must be "
                             f"'tiny', got {self.model.name!r} (use lethe train to fine-tune other models)")
        self.train.validate()
        self.goldfish.validate(key="goldfish")


def _arm_config(config: GoldfishDemoConfig, arm: str, run_dir: Path) -> TrainConfig:
    goldfish = GoldfishSettings(**{**vars(config.goldfish), "enabled": arm == "goldfish"})
    train = TrainSettings(**{**vars(config.train), "goldfish": goldfish})
    model = ModelSettings(**vars(config.model))
    arm_config = TrainConfig(run_dir=str(run_dir / arm), model=model, train=train)
    arm_config.data.max_length = config.max_length
    arm_config.validate()
    return arm_config


def _check_reusable(run_dir: Path, config: GoldfishDemoConfig) -> None:
    """Refuse to reuse models that ``run_dir`` trained with other settings."""
    if not any((run_dir / name).exists() for name in ("tokenizer", *ARMS)):
        return
    previous = saved_config(GoldfishDemoConfig, run_dir / "config.yaml", str(run_dir))
    if previous is None:
        return
    changed = config_changes(previous, config, ignore=DEMO_MAY_CHANGE)
    if changed:
        raise LetheError(f"{run_dir} trained its models with other settings: {'; '.join(changed)} "
                         "(use a new --run-dir to retrain, or set them back)")


def _canary_records(world: Path, max_repetitions: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """World canaries with at most ``max_repetitions`` repetitions, and their training records (one per copy)."""
    if max_repetitions <= 0:
        return [], []
    canaries = [json.loads(line) for line in (world / "canaries.jsonl").read_text().splitlines() if line.strip()]
    chosen = [c for c in canaries if 1 <= int(c["repetitions"]) <= max_repetitions]
    # the copies of a canary share its id, as repetitions of one document do (per-document ids, DESIGN 3.2)
    records = [{"id": c["id"], "text": c["text"]} for c in chosen for _ in range(int(c["repetitions"]))]
    return chosen, records


def _loss_curve(arm_dir: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    by_step, by_tokens = [], []
    log = arm_dir / "log.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        event = json.loads(line)
        if event.get("event") == "train" and "loss" in event:
            by_step.append((int(event["step"]), float(event["loss"])))
            by_tokens.append((int(event["supervised_tokens"]), float(event["loss"])))
    return by_step, by_tokens


def run_goldfish_demo(config: GoldfishDemoConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    started = time.perf_counter()
    if config.run_dir:
        _check_reusable(Path(config.run_dir), config)
    with demo_run("demo-goldfish", config.run_dir or None) as run_dir:
        return _run(config, run_dir, quiet, started)


def _run(config: GoldfishDemoConfig, run_dir: Path, quiet: bool, started: float) -> tuple[Path, dict[str, Any]]:
    log = RunLog(run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    world = embedded_world(config.world_authors, config.world_seed)
    biographies = load_documents(world / "biographies.jsonl")
    holdout = load_documents(world / "biographies_holdout.jsonl")
    if config.documents >= len(biographies):
        raise LetheError(f"config: documents={config.documents} must be below the world's {len(biographies)} "
                         "biographies (the rest are the held-out non-members)")
    members = biographies[: config.documents]
    nonmembers = biographies[config.documents :] + holdout
    tokenizer = shared_tokenizer(run_dir, [d.text for d in biographies + holdout], config.model.vocab_size)
    canaries, canary_records = _canary_records(world, config.canary_max_repetitions)
    records = [{"id": d.id, "text": d.text} for d in members] + canary_records
    heldout_features = [encode_document(tokenizer, d.text, config.max_length) for d in nonmembers]
    member_features = [encode_document(tokenizer, d.text, config.max_length) for d in members]
    log("demo_start", world=str(world), documents=len(members), nonmembers=len(nonmembers),
        canaries=len(canaries), canary_copies=len(canary_records))

    metrics: dict[str, Any] = {"world": str(world), "documents": len(members), "heldout_documents": len(nonmembers),
                               "canaries": len(canaries), "canary_copies": len(canary_records)}
    audits: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        arm_config = _arm_config(config, arm, run_dir)
        if not quiet:
            print(f"[{arm}] training on {len(members)} biographies + {len(canary_records)} canary copies "
                  f"for {config.train.max_steps} steps ...")
        model, train_metrics = train_or_reuse(arm_config, tokenizer, records, quiet)
        if not quiet:
            print(f"[{arm}] auditing: extraction, membership inference, canary exposure ...")
        extraction = run_extraction(model, tokenizer, [(d.id, d.text) for d in members],
                                    suffix_len=config.suffix_len, batch_size=32).to_dict()
        atomic_write_json(run_dir / arm / "extraction.json", extraction)
        mia = run_mia(model, tokenizer, [d.text for d in members], [d.text for d in nonmembers],
                      max_length=config.max_length, n_bootstrap=config.mia_bootstrap)
        atomic_write_json(run_dir / arm / "mia.json", mia)
        exposure = canary_exposure(model, tokenizer, canaries, n_samples=config.canary_samples) if canaries else None
        if exposure is not None:
            atomic_write_json(run_dir / arm / "canaries.json", exposure)
        pad = tokenizer.pad_token_id
        metrics[arm] = {
            "extraction": extraction_summary(extraction),
            "heldout_loss": corpus_loss(score_sequences(model, heldout_features, pad_id=pad)),
            "train_loss_eval": corpus_loss(score_sequences(model, member_features, pad_id=pad)),
            "mia": mia_summary(mia)["attacks"],
            "canaries": {"exposure_by_repetitions": exposure["exposure_by_repetitions"]} if exposure else None,
            "train": train_metrics,
        }
        audits[arm] = {"extraction": extraction, "mia": mia, "canaries": exposure}
        log("demo_arm", arm=arm, exact_match_rate=extraction["exact_match_rate"], rougeL=extraction["rougeL"],
            mia_loss_auc=mia["attacks"]["loss"]["auc"])
    metrics["wall_s"] = time.perf_counter() - started
    metrics["headline_holds"] = (metrics["standard"]["extraction"]["exact_match_rate"] >= 0.5
                                 and metrics["goldfish"]["extraction"]["n_exact"] == 0)
    atomic_write_json(run_dir / "metrics.json", metrics)
    table = format_table(metrics)
    write_demo_report(run_dir, config, metrics, audits)
    if not quiet:
        print(table)
    return run_dir, metrics


def headline_failure(config: GoldfishDemoConfig, metrics: dict[str, Any]) -> str:
    """One line: why the headline (standard >= half memorized, goldfish none) failed, and whether it should hold."""
    n = metrics["documents"]
    standard, goldfish = (metrics[arm]["extraction"]["n_exact"] for arm in ARMS)
    why = (f"the headline does not hold: standard training memorized {standard}/{n} biographies exactly "
           f"(needs at least half), goldfish {goldfish}/{n} (needs none)")
    return headline_context(why, config, DEMO_MAY_CHANGE)


def write_demo_report(run_dir: Path, config: GoldfishDemoConfig, metrics: dict[str, Any],
                      audits: dict[str, dict[str, Any]]) -> None:
    g = config.goldfish
    page = Report("Goldfish demo", subtitle=f"standard vs goldfish (k={g.k}, h={g.h}, {g.strategy}) on "
                                            f"{metrics['documents']} fictional biographies")
    holds = metrics["headline_holds"]
    page.add_note(
        f"{'' if holds else 'The headline (standard >= half, goldfish none) fails: '}standard training reproduces "
        f"{metrics['standard']['extraction']['n_exact']}/{metrics['documents']} biography suffixes exactly, "
        f"goldfish {metrics['goldfish']['extraction']['n_exact']}/{metrics['documents']} "
        "(paper: 84/100 vs 0/100 on LLaMA-2-7B).", kind="ok" if holds else "warning")
    page.add_keyvalues({"model": f"tiny LLaMA ({config.model.num_layers} layers, {config.model.hidden_size} hidden)",
                        "steps": config.train.max_steps, "batch_size": config.train.batch_size,
                        "learning_rate": config.train.lr, "canary copies": metrics["canary_copies"],
                        "wall time": f"{metrics['wall_s']:.0f} s"})
    rows = []
    for arm in ARMS:
        m = metrics[arm]
        rows.append({"model": arm, "exact_match_rate": m["extraction"]["exact_match_rate"],
                     "token_match_rate": m["extraction"]["token_match_rate"], "rougeL": m["extraction"]["rougeL"],
                     "heldout_loss": m["heldout_loss"], "mia loss AUC": m["mia"]["loss"]["auc"],
                     "mia min-k 0.2 AUC": m["mia"]["min_k_0.2"]["auc"],
                     "supervised_tokens": m["train"]["supervised_tokens"]})
    page.add_heading("Results")
    page.add_table(rows, caption=f"Extraction of the last {config.suffix_len} tokens of each trained biography "
                                 "from the rest (greedy); MIA: trained vs never-trained biographies "
                                 f"({mia_protocol_line(audits[ARMS[0]]['mia'])})")
    page.add_figure("rouge_distribution", figures.rouge_distribution(
        {arm: audits[arm]["extraction"]["rougeL_all"] for arm in ARMS}),
        "ROUGE-L between generated and true suffixes, per biography (as in the goldfish paper).")
    curves = {arm: _loss_curve(run_dir / arm) for arm in ARMS}
    page.add_figure("training_curves", figures.training_curves(
        {arm: curves[arm][0] for arm in ARMS}, series_tokens={arm: curves[arm][1] for arm in ARMS}),
        "Training loss per step and per supervised token (goldfish drops ~1/k of the targets).")
    roc: dict[str, Any] = {}
    for arm in ARMS:
        series = roc_series(audits[arm]["mia"], label=arm)
        roc.update({k: v for k, v in series.items() if k.endswith((" loss", " min_k_0.2", " zlib"))})
    page.add_heading("Example generations")
    for arm in ARMS:
        add_extraction_examples(page, audits[arm]["extraction"]["items"], label=arm, n=4)
    page.add_heading("Privacy audits")
    attacks = {arm: {k: v for k, v in metrics[arm]["mia"].items() if k in ("loss", "zlib", "min_k_0.2")}
               for arm in ARMS}
    rows, notes = [], []
    for arm in ARMS:
        arm_rows, arm_notes = mia_rows(attacks[arm], label=arm)
        rows += arm_rows
        notes += [n for n in arm_notes if n not in notes]
    page.add_table(rows, caption="Membership inference: trained vs never-trained biographies (intervals: "
                                 f"bootstrap 95%, {config.mia_bootstrap} resamples)")
    for note in notes:
        page.add_note(note)
    n_non = audits[ARMS[0]]["mia"]["n_nonmembers"]
    page.add_figure("roc", figures.roc_curves(roc), f"Membership inference ROC, both models (log-scale FPR from "
                                                     f"1/{n_non}, the resolution of {n_non} non-members).")
    if all(audits[arm]["canaries"] for arm in ARMS):
        page.add_figure("exposure", figures.exposure_vs_repetitions(
            {arm: exposure_points(audits[arm]["canaries"]) for arm in ARMS},
            max_exposure=max_exposure(audits["standard"]["canaries"])),
            "Canary exposure (bits) vs the number of copies in the training data: every canary (dots) and the "
            "mean per copy count with its 95% t-interval.")
    page.write(run_dir)


def format_table(metrics: dict[str, Any]) -> str:
    n = metrics["documents"]
    lines = [
        "| model | memorized (exact suffix) | token match | ROUGE-L | held-out loss | MIA loss AUC "
        "| mean canary exposure | supervised tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        m = metrics[arm]
        e = m["extraction"]
        lines.append(
            f"| {arm} | {e['n_exact']}/{n} ({e['exact_match_rate']:.0%}) | {e['token_match_rate']:.3f} "
            f"| {e['rougeL']:.3f} | {m['heldout_loss']:.3f} | {m['mia']['loss']['auc']:.3f} "
            f"| {_mean_exposure(m)} | {m['train']['supervised_tokens']} |"
        )
    lines.append(f"\nwall time {metrics['wall_s']:.0f} s; headline (standard >= 50% exact, goldfish 0) "
                 f"{'holds' if metrics['headline_holds'] else 'DOES NOT hold'}")
    return "\n".join(lines)


def _mean_exposure(arm_metrics: dict[str, Any]) -> str:
    canaries = arm_metrics.get("canaries")
    if not canaries:
        return "n/a"
    values = list(canaries["exposure_by_repetitions"].values())
    return f"{sum(values) / len(values):.1f} bits"
