"""``lethe unlearn method=whp``: the WHP recipe (DESIGN 3.5) on the unlearning machinery.

1. baseline = ``model.name``; target = ``whp.target`` (text / JSONL documents), tokenized into blocks of
   ``whp.block`` tokens; dictionary = ``whp.terms`` (pruned of keys that split into other keys);
2. reinforced model = ``whp.reinforced`` (a folder), or ``train``: the baseline fine-tuned on the target
   with the training command's machinery (:func:`lethe.train.trainer.train_model`) into ``reinforced/``;
3. generic labels (:func:`lethe.unlearn.whp.generic_labels`); their statistics go to ``generic_labels.json``;
4. fine-tune the baseline on (original block → generic labels) with cross-entropy through HF Trainer
   (:class:`WHPTrainer`, the unlearning trainer's NaN/inf guard and checkpoints; re-running the same
   directory resumes). Optionally (``whp.mix_documents``) mixed with non-target documents under their own
   labels, or (``whp.retain_kl`` = λ > 0) kept close to the baseline's next-token distribution on them by
   λ·KL(π_base ‖ π_θ), open-unlearning's KL retain term — both beyond the paper, which fine-tunes on the
   target text only: on a tiny model that has seen little else, the generic-label fine-tuning otherwise
   drifts the rest of its knowledge.
"""

from __future__ import annotations

import copy
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from lethe.checkpoints import clean_incomplete, latest_complete
from lethe.config import DataSettings, TrainConfig, TrainSettings, to_yaml
from lethe.data.formatting import encode_document
from lethe.data.text import load_documents, read_text_file
from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX, sequence_nll
from lethe.models import load_model
from lethe.runs import Run, RunLog, atomic_write_json, atomic_write_text, open_run
from lethe.train.collator import CausalLMCollator
from lethe.train.progress_callback import show_training_progress
from lethe.train.trainer import JsonlLogCallback, train_model, training_arguments
from lethe.unlearn import whp
from lethe.unlearn.config import WHPSettings
from lethe.unlearn.objectives import Hyper, Method, kl_retain
from lethe.unlearn.trainer import UnlearnTrainer

WHP_METHOD = Method("whp", retain="none", reference=False, refusals=False, alpha=0.0)
LABELS_FILE = "generic_labels.json"


class WHPTrainer(UnlearnTrainer):
    """Cross-entropy on the generic labels (batches of ``input_ids`` / ``labels``), with the unlearning
    trainer's guards: a NaN/inf or huge loss, non-finite gradients or parameters stop the run.

    With ``retain_kl`` = λ > 0 and a frozen ``ref_model`` (the baseline), the rows whose ``doc_id`` exceeds
    ``target_documents`` (the mixed-in non-target documents of :func:`training_features`) are not fitted on
    their own tokens but kept close to the baseline's whole next-token distribution, as open-unlearning's KL
    retain term does: L = CE(target rows → generic labels) + λ · KL(π_ref ‖ π_θ)(retain rows), each a mean over
    its supervised positions (:func:`lethe.unlearn.objectives.kl_retain`). Beyond the paper (which has no
    retain term)."""

    def __init__(self, *args: Any, retain_kl: float = 0.0, target_documents: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, method=WHP_METHOD, hyper=Hyper(1.0, 0.0, 0.0, 0.0), **kwargs)
        if retain_kl > 0 and self.ref_model is None:
            raise LetheError("whp: a KL retain term needs the baseline as a reference model")
        self.retain_kl, self.target_documents = float(retain_kl), int(target_documents)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False).logits
        labels = inputs["labels"]
        retain_loss = torch.zeros((), device=logits.device)
        if self.retain_kl > 0:
            retain = inputs["doc_ids"][:, 0] > self.target_documents
            if retain.any():
                with self.reference(model) as ref:
                    ref_logits = self._forward(ref, {k: v[retain] for k, v in inputs.items()})
                retain_loss = kl_retain(logits[retain], ref_logits, labels[retain])
            labels = labels.masked_fill(retain[:, None], IGNORE_INDEX)
        nll, n_tokens = sequence_nll(logits, labels)
        target_loss = nll.sum() / n_tokens.sum().clamp(min=1)
        loss = target_loss + self.retain_kl * retain_loss
        self._check_loss(loss, target_loss, retain_loss)
        if model.training:
            for key, value in (("whp_loss", target_loss), ("retain_kl", retain_loss)):
                total = self._sums.setdefault(key, [0.0, 0])
                total[0] += float(value.detach())
                total[1] += 1
        return (loss, {"logits": logits}) if return_outputs else loss


def load_target(path: str | Path) -> list[str]:
    """The target documents' texts; LetheError when there is no text."""
    path = Path(path)
    if path.is_dir():
        path = path / "saga.jsonl"
    if not read_text_file(path, "whp.target").strip():
        raise LetheError(f"whp.target {path}: empty target text (nothing to forget)")
    texts = [d.text for d in load_documents(path) if d.text.strip()]
    if not texts:
        raise LetheError(f"whp.target {path}: empty target text (nothing to forget)")
    return texts


def load_dictionary(path: str | Path, texts: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The pruned dictionary and what pruning / matching found (dropped keys, keys absent from the target,
    with a warning naming their count)."""
    path = Path(path)
    if path.is_dir():
        path = path / "anchored_terms.json"
    terms, dropped = whp.prune_terms(whp.load_terms(path))
    missing = whp.missing_terms(terms, texts)
    if missing:
        warnings.warn(f"{len(missing)} anchored term(s) of {path} do not occur in the target text "
                      f"(e.g. {missing[0]!r}); they are ignored", stacklevel=2)
    return terms, {"dictionary": str(path), "terms": len(terms), "dropped_split_keys": dropped,
                   "absent_from_target": missing}


@dataclass
class LabelledBlocks:
    blocks: list[list[int]]
    labels: list[list[int]]
    translations: list[whp.Translation]
    statistics: dict[str, Any]


def label_target(baseline: Any, reinforced: Any, tokenizer: Any, texts: Sequence[str],
                 terms: dict[str, list[str]], *, alpha: float, block: int, seed: int = 0,
                 batch_size: int = 8, space: str = "logits", forbid_terms: bool = False) -> LabelledBlocks:
    """Blocks of the tokenized target, their translations and generic labels, and the label statistics."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    documents = [encode_document(tokenizer, text, 10**9)["input_ids"] for text in texts]
    blocks = whp.make_blocks(documents, block)
    table = whp.build_term_table(tokenizer, terms, texts)
    translations = [whp.translate_block(b, table, whp.block_choices(table, seed, i), forbid_terms)
                    for i, b in enumerate(blocks)]
    labels = whp.generic_labels(baseline, reinforced, blocks, translations, alpha, batch_size=batch_size, pad_id=pad,
                                space=space)
    stats = whp.label_statistics(blocks, labels, translations, table)
    return LabelledBlocks(blocks, labels, translations, stats)


def training_features(labelled: LabelledBlocks, mix: Sequence[dict[str, list[int]]] = ()) -> list[dict[str, Any]]:
    """The fine-tuning set: each block with its generic labels, then the mixed-in documents as they are."""
    features = [{"input_ids": b, "labels": labels, "doc_id": i + 1}
                for i, (b, labels) in enumerate(zip(labelled.blocks, labelled.labels, strict=True))]
    return features + [{**f, "doc_id": len(features) + 1 + i} for i, f in enumerate(mix)]


def mix_features(tokenizer: Any, path: str, count: int, max_length: int, seed: int) -> list[dict[str, list[int]]]:
    if not path:
        return []
    documents = load_documents(path)
    if count and count < len(documents):
        documents = random.Random(seed).sample(documents, count)
    return [encode_document(tokenizer, d.text, max_length) for d in documents]


def reinforce(baseline: Any, tokenizer: Any, texts: Sequence[str], folder: Path, *, steps: int, lr: float,
              batch_size: int, max_length: int, seed: int = 0, threads: int = 0,
              quiet: bool = True) -> tuple[Any, dict[str, Any]]:
    """The reinforced model: a copy of the baseline trained ``steps`` steps on the target texts into
    ``folder`` (reused when ``folder/model`` exists)."""
    if (folder / "model").is_dir():
        model, _ = load_model(folder / "model")
        return model, {"reused": str(folder / "model")}
    config = TrainConfig(run_dir=str(folder), data=DataSettings(max_length=max_length),
                         train=TrainSettings(max_steps=steps, batch_size=batch_size, lr=lr, scheduler="constant",
                                             seed=seed, threads=threads, logging_steps=max(1, steps // 5),
                                             save_steps=10**6))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", to_yaml(config))
    model = copy.deepcopy(baseline)
    records = [{"id": f"target-{i}", "text": t} for i, t in enumerate(texts)]
    metrics = train_model(config, folder, model=model, tokenizer=tokenizer, records=records, quiet=quiet)
    model.eval()
    return model, metrics


def finetune(model: Any, tokenizer: Any, features: list[dict[str, Any]], train: TrainSettings, run_dir: Path, *,
             args: Any = None, resume: str | None = None, quiet: bool = True, log: RunLog | None = None,
             max_loss: float = 1e4, reference: Any = None, retain_kl: float = 0.0,
             target_documents: int = 0) -> tuple[Any, dict[str, Any]]:
    """Fine-tune ``model`` on the generic-label features in ``run_dir`` (checkpoints/, model/); returns
    (model, metrics). ``args`` / ``resume``: the ``TrainingArguments`` and the sealed checkpoint to resume from,
    as :func:`lethe.unlearn.trainer.resume_or_finish` gives them; without ``args`` they are built here (from
    ``train``, checkpoints in ``run_dir/checkpoints``: unsealed ones deleted, the newest sealed one resumed).
    ``retain_kl`` > 0: the features past the first ``target_documents`` are kept close to ``reference`` (the
    baseline, frozen) by a KL term instead of being fitted on their own tokens (:class:`WHPTrainer`)."""
    from lethe.train.trainer import train_from
    from lethe.unlearn.trainer import _save_final

    log = log or RunLog(run_dir)
    if train.threads > 0:
        torch.set_num_threads(train.threads)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if args is None:
        args = training_arguments(TrainConfig(train=train), run_dir / "checkpoints", quiet)
        clean_incomplete(run_dir / "checkpoints")
        newest = latest_complete(run_dir / "checkpoints")
        resume = str(newest) if newest is not None else None
    set_seed(train.seed)
    model.train()
    trainer = WHPTrainer(model=model, args=args, train_dataset=features, data_collator=CausalLMCollator(pad_id=pad),
                         processing_class=tokenizer, callbacks=[JsonlLogCallback(log)], max_loss=max_loss,
                         keep_checkpoints=train.save_total_limit, ref_model=reference, retain_kl=retain_kl,
                         target_documents=target_documents)
    trainer.restore_state(resume)
    show_training_progress(trainer, quiet)
    log("whp_finetune_start", sequences=len(features), resume_from=resume)
    started = time.perf_counter()
    try:
        train_loss = train_from(trainer, Path(resume) if resume else None)
    except LetheError as err:
        log("unlearn_stopped", error=str(err), step=trainer.state.global_step)
        raise
    wall = time.perf_counter() - started
    final = _save_final(trainer, tokenizer, run_dir, base_name="")  # a plain model: method=whp refuses lora.*
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    return model, {"train_loss": train_loss, "steps": trainer.state.global_step,
                   "epochs": trainer.state.epoch, "train_wall_s": wall, "resumed_from": resume,
                   "model_dir": str(final)}


def run_whp(config: Any, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    """``lethe unlearn method=whp``: every input checked before anything is written, then the recipe above in
    the claimed run directory (lock, resume from the newest sealed checkpoint, a finished run left as it is)."""
    from lethe.unlearn.trainer import resume_or_finish

    w: WHPSettings = config.whp
    texts = load_target(w.target)
    terms, term_info = load_dictionary(w.terms, texts)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    baseline, tokenizer = load_model(config.model.name, trust_remote_code=config.model.trust_remote_code,
                                     dtype=config.model.dtype)
    reinforced = None
    if w.reinforced != "train":
        reinforced, reinforced_tokenizer = load_model(w.reinforced)
        whp.check_same_vocabulary(tokenizer, reinforced_tokenizer, baseline, reinforced)
    mix = mix_features(tokenizer, w.mix_documents, w.mix_count, config.data.max_length, w.seed)
    with open_run("unlearn", config.run_dir or None) as run:
        def recipe(args: Any, resume: str | None) -> tuple[Path, dict[str, Any]]:
            return _whp_in(run, config, args, resume, texts, terms, term_info, baseline, reinforced, tokenizer,
                           mix, quiet)

        return resume_or_finish(run, config, quiet, recipe)


def _whp_in(run: Run, config: Any, args: Any, resume: str | None, texts: list[str], terms: Any,
            term_info: dict[str, Any], baseline: Any, reinforced: Any, tokenizer: Any, mix: list[dict[str, Any]],
            quiet: bool) -> tuple[Path, dict[str, Any]]:
    """Reinforce (unless given), label, fine-tune, save metrics and the report; mark the run finished."""
    w: WHPSettings = config.whp
    run_dir = run.path
    log = RunLog(run_dir)
    reinforced_info: dict[str, Any] = {"model": w.reinforced}
    if reinforced is None:
        reinforced, reinforced_info = reinforce(
            baseline, tokenizer, texts, run_dir / "reinforced", steps=w.reinforced_steps, lr=w.reinforced_lr,
            batch_size=w.reinforced_batch_size, max_length=w.block, seed=config.train.seed,
            threads=config.train.threads, quiet=quiet)
        reinforced_info = {"model": str(run_dir / "reinforced" / "model"),
                           **{k: v for k, v in reinforced_info.items() if k in ("steps", "train_loss")}}
    started = time.perf_counter()
    labelled = label_target(baseline, reinforced, tokenizer, texts, terms, alpha=w.alpha, block=w.block,
                            seed=w.seed, batch_size=w.label_batch_size, space=w.space, forbid_terms=w.forbid_terms)
    stats = {**labelled.statistics, **term_info, "alpha": w.alpha, "block": w.block, "blocks": len(labelled.blocks),
             "labels_wall_s": time.perf_counter() - started}
    atomic_write_json(run_dir / LABELS_FILE, stats)
    log("whp_labels", **{k: v for k, v in stats.items() if not isinstance(v, dict | list)})
    before = target_loss(baseline, tokenizer, texts)
    reference = copy.deepcopy(baseline) if w.retain_kl > 0 else None
    model, fit = finetune(baseline, tokenizer, training_features(labelled, mix), config.train, run_dir, args=args,
                          resume=resume, quiet=quiet, log=log, max_loss=config.objective.max_loss, reference=reference,
                          retain_kl=w.retain_kl, target_documents=len(labelled.blocks))
    metrics = {"method": "whp", **fit, "target_documents": len(texts), "mixed_documents": len(mix),
               "reinforced": reinforced_info, "generic_labels": {k: v for k, v in stats.items() if k != "per_term"},
               "target_nll_before": before, "target_nll_after": target_loss(model, tokenizer, texts)}
    if args.should_save:
        atomic_write_json(run_dir / "metrics.json", metrics)
        write_whp_report(run_dir, config, metrics, stats)
        run.mark("finished")
    log("unlearn_end", **{k: v for k, v in metrics.items() if not isinstance(v, dict)})
    return run_dir, metrics


def target_loss(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 512) -> float:
    from lethe.audit.scoring import corpus_loss, score_sequences

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return corpus_loss(score_sequences(model, [encode_document(tokenizer, t, max_length) for t in texts], pad_id=pad))


def write_whp_report(run_dir: Path, config: Any, metrics: dict[str, Any], stats: dict[str, Any]) -> None:
    from lethe.report import Report

    page = Report("Unlearning: Who's Harry Potter", subtitle=f"target {config.whp.target}, model {config.model.name}")
    page.add_keyvalues({"alpha": config.whp.alpha, "block": config.whp.block, "blocks": stats["blocks"],
                        "labels changed": stats["changed_fraction"],
                        "labels changed before a term": stats["before_term_changed_fraction"],
                        "steps": metrics["steps"], "target NLL before": metrics["target_nll_before"],
                        "target NLL after": metrics["target_nll_after"]})
    page.add_table([{"term": k, **v} for k, v in stats["per_term"].items()],
                   caption="Per anchored term: occurrences in the target, labeled positions right before it, and "
                           "the fraction of those whose generic label differs from the original next token")
    if stats["absent_from_target"]:
        page.add_note(f"{len(stats['absent_from_target'])} term(s) absent from the target: "
                      f"{', '.join(stats['absent_from_target'])}", kind="warning")
    page.write(run_dir)
