"""``lethe demo goldfish``: the goldfish paper's "extreme memorization" experiment in miniature.

Hans et al. 2024 (arXiv 2406.10209) train LLaMA-2-7B for 100 epochs on 100 Wikipedia articles: standard
loss memorizes 84/100 articles exactly, goldfish loss (k=4, h=13) memorizes 0/100. Here two tiny LLaMA
models start from the same weights and see the same biographies of the embedded fictional world for the
same number of steps, one with the standard loss and one with goldfish loss; both are then audited:
greedy extraction of each biography's last ``suffix_len`` tokens from the rest (exact match, per-token
match, ROUGE-L) and the loss on held-out biographies of authors never trained on.

Both models share one BPE tokenizer trained on the whole world (trained and held-out biographies), so
token counts and losses are comparable and the tokenizer carries no membership signal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from lethe.audit.extraction import run_extraction
from lethe.audit.scoring import corpus_loss, score_sequences
from lethe.config import GoldfishSettings, ModelSettings, TrainConfig, TrainSettings, to_yaml
from lethe.data.formatting import encode_document
from lethe.data.text import load_documents
from lethe.data.world import embedded_world
from lethe.errors import LetheError
from lethe.models import load_model, tiny_model, train_bpe_tokenizer
from lethe.runs import RunLog, atomic_write_json, atomic_write_text, new_run_dir
from lethe.train.trainer import train_model

ARMS = ("standard", "goldfish")


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
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=_demo_train_settings)
    goldfish: GoldfishSettings = field(default_factory=lambda: GoldfishSettings(enabled=True))

    def validate(self) -> None:
        if self.documents < 1:
            raise LetheError(f"config: documents must be >= 1, got {self.documents}")
        if self.suffix_len < 1:
            raise LetheError(f"config: suffix_len must be >= 1, got {self.suffix_len}")
        self.train.validate()
        self.goldfish.validate()


def _arm_config(config: GoldfishDemoConfig, arm: str, run_dir: Path) -> TrainConfig:
    goldfish = GoldfishSettings(**{**vars(config.goldfish), "enabled": arm == "goldfish"})
    train = TrainSettings(**{**vars(config.train), "goldfish": goldfish})
    model = ModelSettings(**vars(config.model))
    return TrainConfig(run_dir=str(run_dir / arm), model=model, train=train)


def _train_or_reuse(config: TrainConfig, tokenizer, records, quiet: bool) -> tuple[Any, dict[str, Any]]:
    arm_dir = Path(config.run_dir)
    arm_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = arm_dir / "train_metrics.json"
    if (arm_dir / "model").is_dir() and metrics_path.is_file():  # finished earlier: reuse
        import json

        model, _ = load_model(arm_dir / "model")
        return model, json.loads(metrics_path.read_text())
    atomic_write_text(arm_dir / "config.yaml", to_yaml(config))
    m = config.model
    model = tiny_model(tokenizer, seed=m.seed, hidden_size=m.hidden_size, num_layers=m.num_layers,
                       num_heads=m.num_heads, intermediate_size=m.intermediate_size,
                       max_position_embeddings=m.max_position_embeddings)
    metrics = train_model(config, arm_dir, model=model, tokenizer=tokenizer, records=records, quiet=quiet)
    atomic_write_json(metrics_path, metrics)
    return model, metrics


def _shared_tokenizer(run_dir: Path, texts: list[str], vocab_size: int):
    folder = run_dir / "tokenizer"
    if folder.is_dir():
        return AutoTokenizer.from_pretrained(folder)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.save_pretrained(folder)
    return tokenizer


def run_goldfish_demo(config: GoldfishDemoConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    started = time.perf_counter()
    run_dir = new_run_dir("demo-goldfish", config.run_dir or None)
    log = RunLog(run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    world = embedded_world(config.world_authors, config.world_seed)
    biographies = load_documents(world / "biographies.jsonl")
    heldout = load_documents(world / "biographies_holdout.jsonl")
    if config.documents > len(biographies):
        raise LetheError(f"config: documents={config.documents} but the world has {len(biographies)} biographies")
    members = biographies[: config.documents]
    tokenizer = _shared_tokenizer(run_dir, [d.text for d in biographies + heldout], config.model.vocab_size)
    records = [{"id": d.id, "text": d.text} for d in members]
    heldout_features = [encode_document(tokenizer, d.text, config.max_length) for d in heldout]
    member_features = [encode_document(tokenizer, d.text, config.max_length) for d in members]
    log("demo_start", world=str(world), documents=len(members), heldout=len(heldout))

    metrics: dict[str, Any] = {"world": str(world), "documents": len(members), "heldout_documents": len(heldout)}
    for arm in ARMS:
        arm_config = _arm_config(config, arm, run_dir)
        arm_config.data.max_length = config.max_length
        if not quiet:
            print(f"[{arm}] training {len(members)} biographies for {config.train.max_steps} steps ...")
        model, train_metrics = _train_or_reuse(arm_config, tokenizer, records, quiet)
        extraction = run_extraction(model, tokenizer, [(d.id, d.text) for d in members],
                                    suffix_len=config.suffix_len, batch_size=32)
        report = extraction.to_dict()
        atomic_write_json(run_dir / arm / "extraction.json", report)
        metrics[arm] = {
            "extraction": {k: v for k, v in report.items() if k not in ("items", "rougeL_all")},
            "heldout_loss": corpus_loss(score_sequences(model, heldout_features, pad_id=tokenizer.pad_token_id)),
            "train_loss_eval": corpus_loss(score_sequences(model, member_features, pad_id=tokenizer.pad_token_id)),
            "train": train_metrics,
        }
        log("demo_arm", arm=arm, exact_match_rate=report["exact_match_rate"], rougeL=report["rougeL"])
    metrics["wall_s"] = time.perf_counter() - started
    metrics["headline_holds"] = (metrics["standard"]["extraction"]["exact_match_rate"] >= 0.5
                                 and metrics["goldfish"]["extraction"]["n_exact"] == 0)
    atomic_write_json(run_dir / "metrics.json", metrics)
    table = format_table(metrics)
    atomic_write_text(run_dir / "report.md", "# Goldfish demo\n\n" + table + "\n")
    if not quiet:
        print(table)
        print(f"run directory: {run_dir}")
    return run_dir, metrics


def format_table(metrics: dict[str, Any]) -> str:
    n = metrics["documents"]
    lines = [
        "| model | memorized (exact suffix) | token match | ROUGE-L | held-out loss | supervised tokens |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        m = metrics[arm]
        e = m["extraction"]
        lines.append(
            f"| {arm} | {e['n_exact']}/{n} ({e['exact_match_rate']:.0%}) | {e['token_match_rate']:.3f} "
            f"| {e['rougeL']:.3f} | {m['heldout_loss']:.3f} | {m['train']['supervised_tokens']} |"
        )
    lines.append(f"\nwall time {metrics['wall_s']:.0f} s; headline (standard >= 50% exact, goldfish 0) "
                 f"{'holds' if metrics['headline_holds'] else 'DOES NOT hold'}")
    return "\n".join(lines)
