"""Causal-LM training and fine-tuning through HF ``Trainer`` (so ``accelerate launch`` gives DDP/FSDP/DeepSpeed).

:class:`LetheTrainer` overrides only ``compute_loss``: it computes per-sample summed NLLs (the hook later
objectives re-weight), normalises by the number of supervised tokens of the whole accumulated batch
(the goldfish paper's 1/|G|), and counts supervised tokens so runs can be compared at equal supervision.
:func:`run_training` is the recipe behind ``lethe train``: data → model → Trainer → run directory,
resuming from the last checkpoint when re-run on the same directory.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from lethe.config import TrainConfig, to_yaml
from lethe.data.formatting import encode_document, encode_qa
from lethe.data.text import load_documents
from lethe.data.tofu import load_split
from lethe.data.world import resolve_source
from lethe.errors import LetheError
from lethe.losses import sequence_nll
from lethe.models import build_tiny, check_vocab, load_model, save_model
from lethe.runs import RunLog, atomic_write_json, atomic_write_text, new_run_dir
from lethe.train.collator import CausalLMCollator
from lethe.train.goldfish import canonical_id_table


class LetheTrainer(Trainer):
    """HF Trainer with per-sample losses and a supervised-token counter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.supervised_tokens = 0
        self.input_tokens = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        inputs.pop("doc_ids", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        nll_sum, n_tokens = sequence_nll(outputs.logits, labels)
        supervised = n_tokens.sum()
        if model.training:
            self.supervised_tokens += int(supervised)
            self.input_tokens += int(inputs["attention_mask"].sum())
        if num_items_in_batch is not None:
            loss = nll_sum.sum() / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # the gathered count spans every rank
        else:
            loss = nll_sum.sum() / supervised.clamp(min=1)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        logs = dict(logs)
        logs["supervised_tokens"] = self.supervised_tokens
        logs["input_tokens"] = self.input_tokens
        super().log(logs, *args, **kwargs)


COUNTERS_FILE = "lethe_counters.json"


class TokenCounterCallback(TrainerCallback):
    """Save the supervised / input token counters inside each checkpoint, so a resumed run keeps counting."""

    def __init__(self, trainer: LetheTrainer) -> None:
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                atomic_write_json(folder / COUNTERS_FILE, {
                    "supervised_tokens": self.trainer.supervised_tokens,
                    "input_tokens": self.trainer.input_tokens,
                })

    @staticmethod
    def restore(trainer: LetheTrainer, checkpoint: str | None) -> None:
        path = Path(checkpoint) / COUNTERS_FILE if checkpoint else None
        if path is not None and path.is_file():
            counters = json.loads(path.read_text())
            trainer.supervised_tokens = int(counters["supervised_tokens"])
            trainer.input_tokens = int(counters["input_tokens"])


class JsonlLogCallback(TrainerCallback):
    """Mirror the Trainer's log records into the run directory's ``log.jsonl``."""

    def __init__(self, log: RunLog) -> None:
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.log("train", **{"step": state.global_step, "epoch": state.epoch, **logs})


def load_training_texts(config: TrainConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """Records (id, text or question/answer) and the raw texts (for training a tiny tokenizer)."""
    data = config.data
    source = resolve_source(data.source, n_authors=data.world_authors, seed=data.world_seed)
    if data.format == "documents":
        path = source / data.file if source.is_dir() else source
        documents = load_documents(path, text_field=data.text_field, id_field=data.id_field)
        records = [{"id": d.id, "text": d.text} for d in documents]
        texts = [d.text for d in documents]
    else:
        if not source.is_dir():
            raise LetheError(f"data.source {source} must be a folder of TOFU split files for data.format=qa")
        rows = load_split(source, data.file)
        records = [{"id": str(r.get("id", i)), "question": r["question"], "answer": r["answer"]}
                   for i, r in enumerate(rows)]
        texts = [f"{r['question']}\n{r['answer']}" for r in records]
    if data.limit:
        records, texts = records[: data.limit], texts[: data.limit]
    if not records:
        raise LetheError(f"no training records in {source}")
    return records, texts


def encode_records(records: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                   max_length: int) -> list[dict[str, Any]]:
    features = []
    for index, record in enumerate(records):
        if "text" in record:
            feature = encode_document(tokenizer, record["text"], max_length)
        else:
            feature = encode_qa(tokenizer, record["question"], record["answer"], max_length)
        feature["doc_id"] = index
        features.append(feature)
    return features


def _prepare_model(config: TrainConfig, texts: list[str], run_dir: Path):
    settings = config.model
    if settings.name != "tiny":
        return load_model(settings.name, trust_remote_code=settings.trust_remote_code)
    tokenizer_dir = run_dir / "tokenizer"
    model, tokenizer = build_tiny(
        texts, vocab_size=settings.vocab_size, seed=settings.seed, hidden_size=settings.hidden_size,
        num_layers=settings.num_layers, num_heads=settings.num_heads,
        intermediate_size=settings.intermediate_size,
        max_position_embeddings=settings.max_position_embeddings,
    )
    if tokenizer_dir.is_dir():  # resuming: keep the tokenizer the checkpoints were trained with
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer.save_pretrained(tokenizer_dir)
    return model, tokenizer


def training_arguments(config: TrainConfig, output_dir: Path, quiet: bool) -> TrainingArguments:
    t = config.train
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_steps,
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        data_seed=t.seed,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=quiet,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )


def train_model(config: TrainConfig, run_dir: Path, *, model=None, tokenizer=None,
                records: list[dict[str, Any]] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train in ``run_dir`` (resuming from its last checkpoint) and save ``run_dir/model``; return metrics."""
    log = RunLog(run_dir)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    texts: list[str] = []
    if records is None:
        records, texts = load_training_texts(config)
    if model is None or tokenizer is None:
        model, tokenizer = _prepare_model(config, texts, run_dir)
    check_vocab(model, tokenizer)
    features = encode_records(records, tokenizer, config.data.max_length)
    goldfish = config.train.goldfish
    collator = CausalLMCollator(
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        goldfish=goldfish if goldfish.enabled else None,
        special_ids=tuple(tokenizer.all_special_ids),
        canonical_ids=canonical_id_table(tokenizer) if goldfish.enabled and goldfish.normalize else None,
    )
    checkpoints = run_dir / "checkpoints"
    trainer = LetheTrainer(
        model=model, args=training_arguments(config, checkpoints, quiet), train_dataset=features,
        data_collator=collator, processing_class=tokenizer, callbacks=[JsonlLogCallback(log)],
    )
    trainer.add_callback(TokenCounterCallback(trainer))
    if quiet:
        trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the progress bar for printed logs
    resume = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    TokenCounterCallback.restore(trainer, resume)
    log("train_start", records=len(features), resume_from=resume)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - started
    staging = run_dir / "model.partial"
    shutil.rmtree(staging, ignore_errors=True)
    save_model(trainer.model, tokenizer, staging)
    final = run_dir / "model"
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    metrics = {
        "train_loss": output.training_loss,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "records": len(features),
        "supervised_tokens": trainer.supervised_tokens,
        "input_tokens": trainer.input_tokens,
        "supervised_fraction": trainer.supervised_tokens / max(trainer.input_tokens, 1),
        "goldfish": {"enabled": goldfish.enabled, "k": goldfish.k, "h": goldfish.h,
                     "strategy": goldfish.strategy} if goldfish.enabled else {"enabled": False},
        "train_wall_s": wall,
        "resumed_from": resume,
        "model_dir": str(final),
    }
    log("train_end", **{k: v for k, v in metrics.items() if k != "goldfish"})
    return metrics


def run_training(config: TrainConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    """``lethe train``: make the run directory, write config.yaml, train, write metrics.json."""
    run_dir = new_run_dir("train", config.run_dir or None)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    metrics = train_model(config, run_dir, quiet=quiet)
    atomic_write_json(run_dir / "metrics.json", metrics)
    return run_dir, metrics
