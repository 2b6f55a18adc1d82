"""Causal-LM training and fine-tuning through HF ``Trainer`` (so ``accelerate launch`` gives DDP/FSDP/DeepSpeed).

:class:`LetheTrainer` overrides only ``compute_loss``: it computes per-sample summed NLLs (the hook later
objectives re-weight), normalises by the number of supervised tokens of the whole accumulated batch
(the goldfish paper's 1/|G|), and counts supervised tokens so runs can be compared at equal supervision.
The counts are summed over every process (DDP/FSDP/DeepSpeed ranks): each rank accumulates its own on the
device and the ranks are summed when the Trainer logs or saves, so no micro-step waits on the host.
:func:`run_training` is the recipe behind ``lethe train``: data → model → Trainer → run directory,
resuming from the newest complete (sealed, :mod:`lethe.checkpoints`) checkpoint when re-run on the same
directory; the counters and the running loss are restored with it, so a resumed run reports the numbers of
an uninterrupted one. A finished run re-run with the same settings does nothing; one killed after its last
checkpoint is finished from it without another step. Training stops before any update with a NaN/inf loss
or gradient, and no non-finite weights are saved (:mod:`lethe.finite`).

Resuming: the run directory's ``config.yaml`` must match the new config except for the keys in
:data:`RESUME_MAY_CHANGE` — the length of training (``train.max_steps``, ``train.epochs``: a finished run
can be extended, and the LR schedule is then the one of the new length from the resumed step on) and the
logging / checkpoint cadence. Any other difference (model, data, optimisation, goldfish) is refused,
because the checkpoint's weights, optimizer state and data order would silently mix two runs. The
``tiny`` preset's tokenizer is the one saved in the run directory, never one retrained on changed data.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import TrainerState

from lethe import finite
from lethe.checkpoints import SealedCheckpoints, checkpoint_step, clean_incomplete, latest_complete
from lethe.config import TrainConfig, config_changes, report_targets, saved_config, to_yaml
from lethe.data.formatting import encode_document, encode_qa
from lethe.data.text import load_documents, read_text_file, stable_doc_id
from lethe.data.tofu import available_splits, load_split
from lethe.data.world import resolve_source
from lethe.errors import LetheError
from lethe.losses import sequence_nll
from lethe.models import (
    check_vocab,
    load_model,
    load_tokenizer_folder,
    model_positions,
    resolve_model_path,
    save_model,
    tiny_model,
    torch_dtype,
    train_bpe_tokenizer,
)
from lethe.runs import RunLog, already_finished, atomic_write_json, open_run, publish_dir
from lethe.train.collator import CausalLMCollator
from lethe.train.goldfish import canonical_id_table
from lethe.train.lora import apply_lora, lora_summary, merged, publish_adapter
from lethe.train.manifest import record_text as record_content
from lethe.train.manifest import write_manifest
from lethe.train.memsinks import MemSinks, MemSinksSpec, spec_for
from lethe.train.progress_callback import show_training_progress


class LetheTrainer(SealedCheckpoints, Trainer):
    """HF Trainer with per-sample losses, supervised / input token counters summed over all processes,
    sealed checkpoints that carry the counters and the loss (:mod:`lethe.checkpoints`) and a NaN/inf guard
    (:mod:`lethe.finite`): it stops before any update with a non-finite loss or gradient and never saves
    non-finite weights."""

    def __init__(self, *args: Any, memsinks: MemSinks | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memsinks = memsinks  # MemSinks hooks in `train` mode: they read each batch's doc_ids
        self.supervised_tokens = 0  # totals over every process, as of the last sync
        self.input_tokens = 0
        self._pending: torch.Tensor | None = None  # this process's [supervised, input] since the last sync
        self.add_callback(finite.FiniteGradientCallback(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        doc_ids = inputs.pop("doc_ids", None)
        labels = inputs.pop("labels")
        if self.memsinks is not None:
            self.memsinks.set_ids(doc_ids)  # kept until the next batch: checkpointing recomputes with it
        outputs = model(**inputs, use_cache=False)  # no cache: packed rows are masked per document
        nll_sum, n_tokens = sequence_nll(outputs.logits, labels)
        supervised = n_tokens.sum()
        if model.training:
            self._count(supervised, inputs["attention_mask"] if "attention_mask" in inputs else doc_ids.ge(0))
        if num_items_in_batch is not None:
            loss = nll_sum.sum() / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # the gathered count spans every rank
        else:
            loss = nll_sum.sum() / supervised.clamp(min=1)
        if model.training and finite.check_loss(self, loss):
            raise self._stop(self.state.global_step + 1, f"the loss is not finite ({float(loss.detach()):.6g})")
        return (loss, outputs) if return_outputs else loss

    def _stop(self, step: int, what: str) -> LetheError:
        return finite.stop_error(self, step, what, latest_complete(self.args.output_dir),
                                 "lower train.lr (or raise train.warmup_steps) and re-run")

    def check_gradients(self) -> None:
        """Before the optimizer step: a finite loss can still give non-finite gradients."""
        if not finite.gradients_finite(self):
            raise self._stop(self.state.global_step + 1, "a gradient is not finite (NaN/inf); the update was "
                                                         "not applied")

    def check_parameters(self) -> None:
        if not finite.check_parameters(self):
            raise self._stop(self.state.global_step, "the weights are not finite after the update (train.lr too "
                                                     "high?); nothing was saved from this step")

    def _save_checkpoint(self, model, trial) -> None:
        self.check_parameters()  # a non-finite checkpoint would pass for a good one
        super()._save_checkpoint(model, trial)

    def _count(self, supervised: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Accumulate on the device: no host sync per micro-step."""
        counts = torch.stack([supervised.detach().long(), attention_mask.detach().sum().long()])
        self._pending = counts if self._pending is None else self._pending.add_(counts)

    def sync_token_counts(self) -> tuple[int, int]:
        """Add every process's pending counts to the totals; a collective, so every rank must call it."""
        pending = self._pending
        if pending is None:
            pending = torch.zeros(2, dtype=torch.long, device=self.accelerator.device)
        supervised, inputs = self.accelerator.reduce(pending, reduction="sum").tolist()
        self._pending = None
        self.supervised_tokens += int(supervised)
        self.input_tokens += int(inputs)
        return self.supervised_tokens, self.input_tokens

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        supervised, inputs = self.sync_token_counts()  # Trainer.log runs on every rank
        super().log({**logs, "supervised_tokens": supervised, "input_tokens": inputs}, *args, **kwargs)

    def checkpoint_state(self) -> dict[str, Any]:
        supervised, inputs = self.sync_token_counts()  # on every rank
        return {"supervised_tokens": supervised, "input_tokens": inputs}

    def restore_state(self, checkpoint: str | Path | None) -> dict[str, Any]:
        """Counters and loss of a sealed checkpoint (sealed together with the weights: never out of step)."""
        state = super().restore_state(checkpoint)
        if state:
            self.supervised_tokens = int(state.get("supervised_tokens") or 0)
            self.input_tokens = int(state.get("input_tokens") or 0)
        return state


class CollatorEpochCallback(TrainerCallback):
    """Tell the collator which epoch starts (``random`` goldfish masks are drawn per epoch). On a resume
    the restored ``state.epoch`` (e.g. 2.4) names the epoch being finished."""

    def __init__(self, collator: CausalLMCollator) -> None:
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int(state.epoch or 0)


class JsonlLogCallback(TrainerCallback):
    """Mirror the Trainer's log records into the run directory's ``log.jsonl``."""

    def __init__(self, log: RunLog) -> None:
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.log("train", **{"step": state.global_step, "epoch": state.epoch, **logs})


# trackers and the activation recomputation change neither the model nor the data order
NOT_IN_MODEL = ("train.threads", "train.gradient_checkpointing", "train.report_to", "train.run_name")
RESUME_MAY_CHANGE = ("run_dir", "train.max_steps", "train.epochs", "train.logging_steps", "train.save_steps",
                     "train.save_total_limit", *NOT_IN_MODEL)


def load_training_records(config: TrainConfig) -> list[dict[str, Any]]:
    """Records ``{"id": str | None, "text": ...}`` or ``{"id", "question", "answer"}``; id None = none given."""
    data = config.data
    source = resolve_source(data.source, n_authors=data.world_authors, seed=data.world_seed)
    records = _document_records(source, config) if data.format == "documents" else _qa_records(source, config)
    if data.limit:
        records = records[: data.limit]
    if not records:
        raise LetheError(f"no training records in {source}")
    return records


def _document_records(source: Path, config: TrainConfig) -> list[dict[str, Any]]:
    data = config.data
    path = source / data.file if source.is_dir() else source
    documents = load_documents(path, text_field=data.text_field, id_field=data.id_field)
    records = [{"id": None if d.generated_id else d.id, "text": d.text} for d in documents]
    field = config.train.memsinks.id_field
    if config.train.memsinks.enabled and field not in ("", "content", data.id_field):
        for record, document in zip(records, documents, strict=True):
            if document.meta.get(field) is None:
                raise LetheError(f"{path}: document {document.id!r} has no field {field!r} "
                                 "(train.memsinks.id_field)")
            value = document.meta[field]
            record["sink_key"] = value if isinstance(value, int) and not isinstance(value, bool) else str(value)
    return records


def _qa_records(source: Path, config: TrainConfig) -> list[dict[str, Any]]:
    split = config.data.file
    if not source.is_dir():
        raise LetheError(f"data.source {source} must be a folder of TOFU split files for data.format=qa")
    try:
        rows = load_split(source, split)
    except LetheError as err:
        found = ", ".join(available_splits(source)) or "no TOFU split files"
        raise LetheError(f"data.file={split!r} with data.format=qa: {err}; set data.file to a QA split name "
                         f"(this folder has: {found})") from None
    return [{"id": None if r.get("id") is None else str(r["id"]), "question": r["question"], "answer": r["answer"]}
            for r in rows]


def encode_records(records: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase,
                   max_length: int, id_source: str = "") -> list[dict[str, Any]]:
    """Features with ``doc_id`` = :func:`stable_doc_id` of the record's id, or of its content if it has none
    (``id_source="content"``: always of the content; a record's ``sink_key``, when set, wins), and
    ``sample_index`` = the record's position (for ``random`` goldfish masks)."""
    features = []
    for index, record in enumerate(records):
        if "text" in record:
            feature = encode_document(tokenizer, record["text"], max_length)
        else:
            feature = encode_qa(tokenizer, record["question"], record["answer"], max_length)
        feature["doc_id"] = _document_key(record, id_source)
        feature["sample_index"] = index
        features.append(feature)
    return features


def _document_key(record: dict[str, Any], id_source: str) -> int:
    """A record's ``doc_id``: an integer ``sink_key`` as is (>= 1, e.g. the authors' sequential IDs), a string
    one hashed, else the hash of the record's id (or content when it has none, or with ``id_source="content"``)."""
    key = record.get("sink_key")
    if isinstance(key, int):
        if key < 1:
            raise LetheError(f"memsinks: document IDs must be >= 1, got {key} (ID 0 would switch on every sink)")
        return key
    if key is None and id_source != "content":
        key = record.get("id")
    return stable_doc_id(key, record_content(record))


def _tiny_tokenizer(config: TrainConfig, records: list[dict[str, Any]], folder: Path):
    """The run directory's saved tokenizer when resuming, else one trained on the records (and saved)."""
    if folder.is_dir():
        return load_tokenizer_folder(folder)
    tokenizer = train_bpe_tokenizer([record_content(r) for r in records], vocab_size=config.model.vocab_size)
    # the ranks of one launch each train one (identically); when another rank saved first, use that one
    publish_dir(folder, tokenizer.save_pretrained, keep_existing=Path.is_dir)
    return load_tokenizer_folder(folder)


def _prepare_model(config: TrainConfig, records: list[dict[str, Any]], run_dir: Path):
    """The model to train (in ``model.dtype``) and its tokenizer."""
    settings = config.model
    if settings.name != "tiny":
        return load_model(settings.name, trust_remote_code=settings.trust_remote_code, dtype=settings.dtype)
    tokenizer = _tiny_tokenizer(config, records, run_dir / "tokenizer")
    model = tiny_model(
        tokenizer, seed=settings.seed, hidden_size=settings.hidden_size, num_layers=settings.num_layers,
        num_heads=settings.num_heads, intermediate_size=settings.intermediate_size,
        max_position_embeddings=settings.max_position_embeddings,
    )
    if settings.dtype != "auto":  # a fresh model has no saved dtype: auto = float32
        model = model.to(torch_dtype(settings.dtype))
    return model, tokenizer


def check_resume(config: TrainConfig, run_dir: Path) -> list[str]:
    """Refuse to resume ``run_dir`` with other training settings; return the allowed changes. Only a run
    that left a complete checkpoint or a model counts: a config.yaml of a run that failed before its first
    checkpoint describes nothing on disk and never blocks the corrected re-run."""
    if not has_progress(run_dir):
        return []
    previous = saved_config(TrainConfig, run_dir / "config.yaml", f"cannot resume {run_dir}: it")
    if previous is None:
        return []
    refused = config_changes(previous, config, ignore=RESUME_MAY_CHANGE)
    if refused:
        raise LetheError(f"cannot resume {run_dir} with other settings than its config.yaml: {'; '.join(refused)} "
                         "(use a new --run-dir, or set them back)")
    return config_changes(previous, config, ignore=("run_dir",))


def has_progress(run_dir: Path) -> bool:
    """A complete checkpoint or a final model: what a re-run must continue from, not overwrite."""
    return latest_complete(run_dir / "checkpoints") is not None or (run_dir / "model").is_dir()


# changes that leave a finished run's model as it is: a re-run with only these does nothing
FINISHED_MAY_CHANGE = ("run_dir", "train.logging_steps", "train.save_steps", "train.save_total_limit",
                       *NOT_IN_MODEL)


def finished_metrics(config: TrainConfig, run_dir: Path, changes: list[str]) -> dict[str, Any] | None:
    """The metrics of a finished run that ``config`` would not change (a re-run has nothing to do), else None."""
    path = run_dir / "metrics.json"
    if not ((run_dir / "model").is_dir() and path.is_file()):
        return None
    if any(change.split(" ", 1)[0] not in FINISHED_MAY_CHANGE for change in changes):
        return None  # e.g. train.max_steps raised: the run is extended
    try:
        return json.loads(read_text_file(path, "metrics file"))
    except json.JSONDecodeError:
        return None


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
        save_total_limit=None,  # rotation is Lethe's, after the seal (lethe.checkpoints.rotate)
        seed=t.seed,
        data_seed=t.seed,
        report_to=report_targets(t.report_to) or "none",
        run_name=t.run_name or output_dir.parent.name,  # output_dir is RUN_DIR/checkpoints
        bf16=t.mixed_precision == "bf16",
        fp16=t.mixed_precision == "fp16",
        remove_unused_columns=False,
        disable_tqdm=quiet,
        activation_checkpointing=t.gradient_checkpointing,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )


def train_model(config: TrainConfig, run_dir: Path, *, model=None, tokenizer=None,
                records: list[dict[str, Any]] | None = None, quiet: bool = False,
                callbacks: Sequence[TrainerCallback] = ()) -> dict[str, Any]:
    """Train in ``run_dir`` (resuming from its last checkpoint) and save ``run_dir/model``; return metrics.
    ``callbacks`` join the Trainer's (e.g. a held-out evaluation on every log)."""
    log = RunLog(run_dir)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    if records is None:
        records = load_training_records(config)
    if model is None or tokenizer is None:
        model, tokenizer = _prepare_model(config, records, run_dir)
    check_vocab(model, tokenizer)
    memsinks = config.train.memsinks
    features = encode_records(records, tokenizer, config.data.max_length,
                              id_source=memsinks.id_field if memsinks.enabled else "")
    spec = memsinks_spec(model, config) if memsinks.enabled else None
    goldfish = config.train.goldfish
    collator = CausalLMCollator(
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        goldfish=goldfish if goldfish.enabled else None,
        special_ids=tuple(tokenizer.all_special_ids),
        canonical_ids=canonical_id_table(tokenizer) if goldfish.enabled and goldfish.normalize else None,
        pack_length=config.data.max_length if config.data.pack else 0,
    )
    check_positions(model, config.data.max_length)
    checkpoints = run_dir / "checkpoints"
    hooks = MemSinks(model, spec, "train") if spec is not None else None
    if config.lora.enabled:
        model = apply_lora(model, config.lora, config.train.seed)  # after the hooks: they sit on the base model's MLPs
    trainer = LetheTrainer(
        model=model, args=training_arguments(config, checkpoints, quiet), train_dataset=features,
        data_collator=collator, processing_class=tokenizer,
        callbacks=[JsonlLogCallback(log), CollatorEpochCallback(collator), *callbacks], memsinks=hooks,
        keep_checkpoints=config.train.save_total_limit,
    )
    show_training_progress(trainer, quiet)
    if trainer.is_world_process_zero():
        clean_incomplete(checkpoints)  # a kill during a save: never resumed from, never kept
    trainer.accelerator.wait_for_everyone()
    resume = latest_complete(checkpoints)
    trainer.restore_state(resume)
    log("train_start", records=len(features), resume_from=str(resume) if resume else None,
        target_steps=planned_steps(trainer))
    started = time.perf_counter()
    try:
        train_loss = train_from(trainer, resume)
    finally:
        if hooks is not None:
            hooks.remove()  # the model leaves in its plain form; memsinks.json says how to evaluate it
    wall = time.perf_counter() - started
    supervised, inputs = trainer.sync_token_counts()
    trainer.check_parameters()  # never save a non-finite model
    lora = lora_summary(config.lora, trainer.model)
    final = _save_final_model(trainer, tokenizer, run_dir, spec, config)
    if trainer.is_world_process_zero():  # what the model was trained on, for the audits (--data RUN)
        write_manifest(run_dir, records, config.data, epochs=float(trainer.state.epoch or 0.0))
    metrics = {
        "train_loss": train_loss,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "records": len(features),
        "supervised_tokens": supervised,
        "input_tokens": inputs,
        "supervised_fraction": supervised / max(inputs, 1),
        "goldfish": {"enabled": goldfish.enabled, "k": goldfish.k, "h": goldfish.h,
                     "strategy": goldfish.strategy} if goldfish.enabled else {"enabled": False},
        "memsinks": {"enabled": True, **vars(spec)} if spec is not None else {"enabled": False},
        "lora": lora,
        "train_wall_s": wall,
        "resumed_from": str(resume) if resume else None,
        "model_dir": str(final),
    }
    log("train_end", **{k: v for k, v in metrics.items() if k not in ("goldfish", "memsinks", "lora")})
    return metrics


def check_positions(model, max_length: int) -> None:
    """Sequences of ``max_length`` tokens must fit the model's positions (else: an IndexError deep in the
    model, or, with rotary embeddings, silent training past the context)."""
    positions = model_positions(model)
    if positions is not None and max_length > positions:
        raise LetheError(f"config: data.max_length={max_length} exceeds the model's {positions} positions "
                         f"(max_position_embeddings); set data.max_length <= {positions}")


def planned_steps(trainer: Trainer) -> int:
    """The optimizer steps this run trains in total (train.max_steps, or the epochs' steps), as HF counts them."""
    if trainer.args.max_steps > 0:
        return int(trainer.args.max_steps)
    return int(trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1])


def train_from(trainer: Trainer, resume: Path | None) -> float:
    """Train a :class:`~lethe.checkpoints.SealedCheckpoints` trainer from the sealed checkpoint ``resume`` (or
    from the start) to its planned steps; a run killed after its last checkpoint, before its model was saved,
    is only loaded (nothing left to train). Returns the mean per-step loss of the whole run, resumed steps
    included."""
    done = checkpoint_step(resume) if resume is not None else 0
    if done >= planned_steps(trainer):
        finish_from_checkpoint(trainer, resume)
        return trainer.run_loss(0.0)
    with safe_resume(resume):
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return trainer.run_loss(output.training_loss)


def finish_from_checkpoint(trainer: Trainer, checkpoint: Path) -> None:
    """Load a final checkpoint's weights and state without training (HF would train one more step when the
    run's length is not a multiple of the epoch length)."""
    with safe_resume(checkpoint):
        trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


@contextlib.contextmanager
def safe_resume(checkpoint: Path | None):
    """A checkpoint file that only unpickles unsafely (``weights_only`` refuses it) is a one-line error."""
    try:
        yield
    except (pickle.UnpicklingError, RuntimeError, ValueError) as err:
        text = str(err)
        unsafe = isinstance(err, pickle.UnpicklingError) or "weights_only" in text or "pickle" in text.lower()
        if checkpoint is None or not unsafe:
            raise
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
        raise LetheError(f"cannot resume from {checkpoint}: a file there cannot be loaded safely ({first[:200]}); "
                         "delete that checkpoint to resume from an earlier one, or use a new --run-dir") from None


def memsinks_spec(model, config: TrainConfig) -> MemSinksSpec:
    """The MemSinks spec of ``model`` under the run's ``train.memsinks`` settings."""
    m = config.train.memsinks
    return spec_for(model, p_gen=m.p_gen, p_mem=m.p_mem, strategy=m.strategy, seed=m.seed,
                    per_layer=m.per_layer, dropout_scale=m.dropout_scale)


def _save_final_model(trainer: LetheTrainer, tokenizer: PreTrainedTokenizerBase, run_dir: Path,
                      memsinks: MemSinksSpec | None = None, config: TrainConfig | None = None) -> Path:
    """``run_dir/model`` (staged, then renamed), written by the main process only; a MemSinks model gets
    its ``memsinks.json`` beside the weights, in the same rename. With LoRA, ``run_dir/adapter`` (the
    adapter alone) is published first and ``model/`` holds the merged weights (:mod:`lethe.train.lora`)."""
    final = run_dir / "model"
    model = trainer.accelerator.unwrap_model(trainer.model)

    def write(staging: Path) -> None:
        save_model(merged(model), tokenizer, staging)
        if memsinks is not None:
            memsinks.save(staging)

    if trainer.is_world_process_zero():
        if config is not None:
            publish_adapter(model, tokenizer, run_dir, config.model.name)
        publish_dir(final, write)
    trainer.accelerator.wait_for_everyone()
    return final


def run_training(config: TrainConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    """``lethe train``: check data and model, claim the run directory, train (or resume, or do nothing for a
    finished run), write config.yaml and metrics.json."""
    config.validate()  # a config built in Python gets the checks (and defaults) that load_config applies
    records = load_training_records(config)  # bad data fails before any folder is made
    if config.model.name != "tiny":
        resolve_model_path(config.model.name)
    with open_run("train", config.run_dir or None) as run:
        run_dir = run.path
        changes = check_resume(config, run_dir)
        done = finished_metrics(config, run_dir, changes) if run.finished or run.legacy else None
        if done is not None:
            return run_dir, already_finished(run, done, "raise train.max_steps to train further, or use a new "
                                                        "--run-dir")
        if not has_progress(run_dir):  # a fresh start: nothing of a failed earlier attempt is reused
            shutil.rmtree(run_dir / "tokenizer", ignore_errors=True)
            shutil.rmtree(run_dir / "adapter", ignore_errors=True)
            (run_dir / "metrics.json").unlink(missing_ok=True)
        if changes:
            RunLog(run_dir)("resume_config_changes", changes=changes)
        run.mark("running")
        run.write_text("config.yaml", to_yaml(config))
        run.started = True
        progress = latest_complete(run_dir / "checkpoints")
        try:
            metrics = train_model(config, run_dir, records=records, quiet=quiet)
        except BaseException:
            run.keep = latest_complete(run_dir / "checkpoints") != progress  # this attempt saved a checkpoint
            raise
        atomic_write_json(run_dir / "metrics.json", metrics)
        run.mark("finished")
    return run_dir, metrics
