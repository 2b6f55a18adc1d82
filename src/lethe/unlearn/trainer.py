"""Unlearning through HF ``Trainer`` (so ``accelerate launch`` gives DDP): L = γ·L_forget + α·L_retain.

Each batch holds forget samples i, a random retain sample for each (drawn per rank and epoch, see
:mod:`lethe.unlearn.data`) and, for IdkPO, the forget question with a refusal answer. For the forget
samples the trainer computes S_i (summed NLL) and n_i, turns them into the method's per-sample terms f_i
(:mod:`lethe.unlearn.objectives`) and averages them, plainly or with GUARD weights N_f·w_i
(:mod:`lethe.unlearn.guard`, DESIGN 3.4). The reference π_ref (KL, NPO, IdkPO) is a frozen copy of θ₀,
or, with LoRA, the same model with its adapters disabled (no second copy).

:class:`UnlearnTrainer` overrides ``compute_loss`` (and ``log``, to report the two loss terms). It
stops the run with a :class:`~lethe.errors.LetheError` before any update that could poison the weights:
as soon as L is NaN/inf or |L| exceeds ``objective.max_loss``, or, for a finite L, when an accumulated
gradient is NaN/inf (checked before the optimizer step); and it refuses to save a checkpoint whose
parameters are not finite. So every checkpoint on disk, the "last good checkpoint" of the message, is good.
:func:`run_unlearning` is the recipe behind ``lethe unlearn``: data → model → (GUARD) → Trainer → run
directory, resuming from the last checkpoint when re-run on the same directory.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, set_seed

from lethe.checkpoints import SealedCheckpoints, clean_incomplete, latest_complete, read_state
from lethe.config import config_changes, saved_config, to_yaml
from lethe.data.text import read_text_file
from lethe.data.tofu import RETAIN_OF
from lethe.data.world import resolve_source
from lethe.errors import LetheError
from lethe.losses import sequence_nll
from lethe.models import load_model, save_model
from lethe.runs import Run, RunLog, already_finished, atomic_write_json, open_run, publish_dir
from lethe.train.lora import apply_lora, is_peft, lora_summary, merged, publish_adapter
from lethe.train.trainer import (
    NOT_IN_MODEL,
    JsonlLogCallback,
    check_positions,
    planned_steps,
    show_training_progress,
    train_from,
    training_arguments,
)
from lethe.unlearn import guard as guard_lib
from lethe.unlearn.config import GuardSettings, UnlearnConfig, UnlearnDataSettings
from lethe.unlearn.data import (
    ForgetRetainDataset,
    PairCollator,
    Refusals,
    batches,
    check_answer_tokens,
    check_forget_retain,
    encode_all,
    group,
    load_qa_set,
    record_ids,
    seed_of,
    split_exists,
)
from lethe.unlearn.objectives import (
    Hyper,
    Method,
    forget_terms,
    get_method,
    kl_retain,
    nll_retain,
    refusal_answers,
    resolve_hyper,
    total_loss,
    weighted_mean,
)

GUARD_STATE_FILE = "lethe_guard_weights.json"


class UnlearnTrainer(SealedCheckpoints, Trainer):
    """HF Trainer whose loss is an unlearning objective over paired forget/retain batches."""

    # compute_loss returns a per-micro-batch mean: let Trainer divide it by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, method: Method, hyper: Hyper, ref_model: torch.nn.Module | None = None,
                 sample_weights: torch.Tensor | None = None, max_loss: float = 1e4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method, self.hyper, self.max_loss = method, hyper, float(max_loss)
        self.ref_model = ref_model
        if ref_model is not None:
            ref_model.requires_grad_(False)
            ref_model.eval()
            self.ref_model = ref_model.to(self.args.device)
        if method.reference and ref_model is None and not is_peft(self.model):
            raise LetheError(f"method {method.name} needs a reference model (a frozen copy, or LoRA adapters "
                             "to disable)")
        self.sample_weights: torch.Tensor | None = None
        self.checkpoint_guard_weights = False  # GUARD recomputed during the run: checkpoints carry the weights
        self.set_sample_weights(sample_weights)
        self._sums: dict[str, list[float]] = {}
        self.add_callback(FiniteGradientCallback(self))

    def set_sample_weights(self, weights: torch.Tensor | None) -> None:
        """GUARD weights w (Σ w = 1); stored scaled to N_f·w (mean 1), indexed by forget sample."""
        if weights is None:
            self.sample_weights = None
        else:
            self.sample_weights = (weights.float() * weights.numel()).to(self.args.device)

    @contextlib.contextmanager
    def reference(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """π_ref in eval mode without gradients: the frozen copy, or the model with adapters disabled."""
        if self.ref_model is not None:
            with torch.no_grad():
                yield self.ref_model
            return
        unwrapped = self.accelerator.unwrap_model(model)
        was_training = unwrapped.training
        unwrapped.eval()
        try:
            with torch.no_grad(), unwrapped.disable_adapter():
                yield unwrapped
        finally:
            unwrapped.train(was_training)

    @staticmethod
    def _forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return model(**inputs, use_cache=False).logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        method, hyper = self.method, self.hyper
        forget = group(inputs, "forget")
        outputs = self._forward(model, forget)
        nll, n_tokens = sequence_nll(outputs, forget["labels"])
        extra: dict[str, torch.Tensor] = {}
        if method.reference and method.name != "kl":
            with self.reference(model) as ref:
                extra["ref_nll_sum"] = sequence_nll(self._forward(ref, forget), forget["labels"])[0]
        if method.refusals:
            idk = group(inputs, "idk")
            extra["idk_nll_sum"] = sequence_nll(self._forward(model, idk), idk["labels"])[0]
            with self.reference(model) as ref:
                extra["idk_ref_nll_sum"] = sequence_nll(self._forward(ref, idk), idk["labels"])[0]
        terms = forget_terms(method, hyper, nll, n_tokens, **extra)
        weights = None if self.sample_weights is None else self.sample_weights[inputs["forget_index"]]
        forget_loss = weighted_mean(terms, weights)
        retain_loss = torch.zeros((), device=forget_loss.device)
        if method.retain != "none":
            retain = group(inputs, "retain")
            retain_logits = self._forward(model, retain)
            if method.retain == "kl":
                with self.reference(model) as ref:
                    ref_logits = self._forward(ref, retain)
                retain_loss = kl_retain(retain_logits, ref_logits, retain["labels"])
            else:
                retain_loss = nll_retain(*sequence_nll(retain_logits, retain["labels"]))
        loss = total_loss(hyper, forget_loss, retain_loss)
        self._check_loss(loss, forget_loss, retain_loss)
        if model.training:
            for key, value in (("forget_loss", forget_loss), ("retain_loss", retain_loss),
                               ("forget_nll", (nll / n_tokens.clamp(min=1)).mean())):
                total = self._sums.setdefault(key, [0.0, 0])
                total[0] += float(value.detach())
                total[1] += 1
        return (loss, {"logits": outputs}) if return_outputs else loss

    def _any_rank(self, bad: bool | torch.Tensor) -> bool:
        """True when ``bad`` holds on any rank (every rank must stop, or the others hang in all-reduce)."""
        flag = torch.as_tensor(bad, dtype=torch.float32, device=self.args.device).reshape(1)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        return bool(flag.item() > 0)

    def _stop(self, step: int, what: str, detail: str = "") -> LetheError:
        """The error that ends the run at ``step``, naming the last good checkpoint on disk."""
        last = _last_checkpoint(Path(self.args.output_dir))
        kept = f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
        return LetheError(f"unlearning stopped at step {step}: {what} (method {self.method.name}{detail}); "
                          f"{kept}; lower train.lr or change the method")

    def _check_loss(self, loss: torch.Tensor, forget_loss: torch.Tensor, retain_loss: torch.Tensor) -> None:
        value = loss.detach().float()
        if not self._any_rank(~torch.isfinite(value) | (value.abs() > self.max_loss)):
            return
        reason = ("is not finite" if not torch.isfinite(value)
                  else f"exceeds objective.max_loss={self.max_loss:g}")
        raise self._stop(self.state.global_step + 1, f"loss {float(value):.6g} {reason}",
                         f", forget term {float(forget_loss.detach()):.6g}, "
                         f"retain term {float(retain_loss.detach()):.6g}")

    def check_gradients(self) -> None:
        """Before the optimizer step (gradients accumulated and synchronised): a finite loss can still give
        NaN/inf gradients, and stepping with them would put non-finite weights into the next checkpoint."""
        finite = [torch.isfinite(p.grad).all() for p in self.model.parameters() if p.grad is not None]
        if self._any_rank(bool(finite) and not bool(torch.stack(finite).all())):
            raise self._stop(self.state.global_step + 1, "a gradient is not finite (NaN/inf) although the "
                                                         "loss is finite; the update was not applied")

    def _save_checkpoint(self, model, trial) -> None:
        """Never write a checkpoint whose parameters are not finite (it would pass for a good one)."""
        finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()
        if self._any_rank(not bool(finite)):
            raise self._stop(self.state.global_step, "the parameters are not finite after the update; "
                                                     "this step's checkpoint was not saved")
        super()._save_checkpoint(model, trial)

    def checkpoint_state(self) -> dict[str, Any]:
        weights = self.sample_weights
        if not self.checkpoint_guard_weights or weights is None:
            return {}
        return {"guard_weights": (weights / weights.numel()).tolist()}

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        logs = dict(logs)
        for key, (total, count) in self._sums.items():
            if count:
                logs[key] = total / count
        self._sums = {}
        super().log(logs, *args, **kwargs)


class FiniteGradientCallback(TrainerCallback):
    """Stops the run before an optimizer step with non-finite gradients (:meth:`UnlearnTrainer.check_gradients`)."""

    def __init__(self, trainer: UnlearnTrainer) -> None:
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.check_gradients()


class EpochCallback(TrainerCallback):
    """Tell the dataset the epoch, so the retain / refusal pairing is redrawn (alike on resume)."""

    def __init__(self, dataset: ForgetRetainDataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int((state.epoch or 0) + 1e-6))


class GuardRecomputeCallback(TrainerCallback):
    """GUARD with ``recompute_every`` N: recompute the weights at the current θ every N optimizer steps;
    keep the current weights in each checkpoint so a resumed run continues with them."""

    def __init__(self, trainer: UnlearnTrainer, recompute, run_dir: Path, every: int,
                 ids: Sequence[str]) -> None:
        self.trainer, self.recompute, self.run_dir, self.every = trainer, recompute, run_dir, every
        self.ids = list(ids)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every > 0 and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            scores, weights = self.recompute(self.trainer.accelerator.unwrap_model(self.trainer.model))
            self.trainer.set_sample_weights(weights)
            if args.should_save:  # same per-sample layout as attribution.json
                guard_lib.write_attribution(self.run_dir / "attribution" / f"step-{state.global_step}.json",
                                            self.ids, scores, weights)

    @staticmethod
    def restore(trainer: UnlearnTrainer, checkpoint: str | Path | None) -> bool:
        """The weights the resumed checkpoint was trained with (sealed with it), else those of an older
        Lethe's ``lethe_guard_weights.json``."""
        state = read_state(checkpoint) if checkpoint else None
        weights = state.get("guard_weights") if state else None
        path = Path(checkpoint) / GUARD_STATE_FILE if checkpoint else None
        if weights is None and path is not None and path.is_file():
            weights = json.loads(path.read_text(encoding="utf-8"))
        if weights is None:
            return False
        trainer.set_sample_weights(torch.tensor(weights, dtype=torch.float32))
        return True


# --- the recipe ----------------------------------------------------------------------------------------

# what a resumed run may change; every other setting must equal the interrupted run's config.yaml
UNLEARN_RESUME_MAY_CHANGE = ("run_dir", "train.max_steps", "train.epochs", "train.logging_steps",
                             "train.save_steps", "train.save_total_limit", *NOT_IN_MODEL,
                             *(f"eval.{key}" for key in ("enabled", "limit", "max_new_tokens", "batch_size",
                                                         "retain_eval", "before")))  # evaluation runs after


def load_forget_retain(data: UnlearnDataSettings, *, need_retain: bool = True,
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """(forget records, retain records, retain split name) from a TOFU-format folder; validated.

    ``need_retain=False`` (GA without GUARD: no retain term, no ḡ_R) makes the retain set optional: when
    data.retain_split is unset and the standard complement (forget10 -> retain90) is absent, or the retain
    file is empty, the result has no retain records and retain split "". A named retain split that is
    present is still loaded and checked for overlap."""
    source = resolve_source(data.source, n_authors=data.world_authors, seed=data.world_seed)
    if not source.is_dir():
        raise LetheError(f"data.source {source} must be a folder of TOFU split files (e.g. forget10.json)")
    forget = load_qa_set(source, data.forget_split, "forget")
    retain_split = data.retain_split or RETAIN_OF.get(data.forget_split, "")
    optional = not need_retain and not data.retain_split
    if optional and not (retain_split and split_exists(source, retain_split)):
        check_forget_retain(forget, [], forget_name=data.forget_split, retain_required=False)
        return forget, [], ""
    if not retain_split:
        raise LetheError(f"config: data.retain_split is empty and forget split {data.forget_split!r} has no "
                         "standard complement; set data.retain_split")
    retain = load_qa_set(source, retain_split, "retain")
    check_forget_retain(forget, retain, forget_name=data.forget_split, retain_name=retain_split,
                        retain_required=need_retain)
    return forget, retain, retain_split if retain else ""


UnlearnData = tuple[list[dict[str, Any]], list[dict[str, Any]], str]  # forget, retain records, retain split


def load_unlearn_data(config: UnlearnConfig) -> UnlearnData:
    """:func:`load_forget_retain` for ``config``: the retain set is required unless the method has no
    retain term and GUARD (which averages retain gradients) is off."""
    need_retain = get_method(config.method).retain != "none" or config.guard.enabled
    return load_forget_retain(config.data, need_retain=need_retain)


@torch.no_grad()
def mean_nll(model: torch.nn.Module, features: list[dict[str, list[int]]], batch_size: int,
             pad_id: int) -> dict[str, float | None]:
    """Mean per-sample NLL ℓ and TOFU probability mean exp(−ℓ) of ``features`` (eval mode); None values
    for no features (GA without a retain set)."""
    if not features:
        return {"nll": None, "prob": None}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = []
    try:
        for batch in batches(features, batch_size, pad_id):
            batch = {k: v.to(device) for k, v in batch.items()}
            losses.append(guard_lib.per_sample_losses(model, batch).float())
    finally:
        model.train(was_training)
    ell = torch.cat(losses)
    return {"nll": float(ell.mean()), "prob": float(torch.exp(-ell).mean())}


def _sample(features: list[Any], k: int, seed: int) -> list[Any]:
    if k <= 0 or k >= len(features):
        return list(features)
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed_of(seed, 1)))[:k]
    return [features[int(i)] for i in sorted(order.tolist())]


def guard_recompute(settings: GuardSettings, forget: list[dict[str, list[int]]],
                    retain: list[dict[str, list[int]]], batch_size: int, pad_id: int):
    """A function model → (scores a [N_f], weights w [N_f]) at the model's current parameters."""
    forget_batches = batches(forget, batch_size, pad_id)
    retain_batches = batches(retain, batch_size, pad_id)

    def recompute(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        grad = guard_lib.retain_mean_gradient(model, retain_batches)
        scores = guard_lib.attribution_scores(model, forget_batches, grad)
        return scores, guard_lib.guard_weights(scores, settings.tau, settings.normalize)

    return recompute


def check_resume(run_dir: Path, config: UnlearnConfig) -> None:
    """Refuse to resume with other settings than the checkpoints were trained with.

    Another method, objective, data split, learning rate or GUARD setting would mix two runs in one: the
    stored attribution (and the weights in the checkpoints) follow from guard.tau, guard.normalize,
    guard.retain_samples and guard.recompute_every. Only :data:`UNLEARN_RESUME_MAY_CHANGE` may differ from the
    interrupted run's config.yaml (written before its first step)."""
    previous = saved_config(UnlearnConfig, run_dir / "config.yaml", f"cannot resume {run_dir}: it")
    if previous is None:
        return
    refused = config_changes(previous, config, ignore=UNLEARN_RESUME_MAY_CHANGE)
    if refused:
        raise LetheError(f"cannot resume {run_dir} with other settings than its checkpoints were trained with: "
                         f"{'; '.join(refused)} (use a new run directory, or set them back)")


def _last_checkpoint(checkpoints: Path) -> str | None:
    """The newest complete (sealed) checkpoint, as a string; None when there is none."""
    last = latest_complete(checkpoints)
    return str(last) if last is not None else None


def _encode_checked(tokenizer, records: list[dict[str, Any]], ids: list[str], role: str,
                    max_length: int) -> list[dict[str, list[int]]]:
    features = encode_all(tokenizer, records, max_length)
    check_answer_tokens(features, ids, role, max_length)
    return features


def _setup_guard(trainer: UnlearnTrainer, config: UnlearnConfig, forget: list[dict[str, list[int]]],
                 retain: list[dict[str, list[int]]], ids: list[str], run_dir: Path, resume: str | None,
                 pad_id: int) -> dict[str, Any]:
    """GUARD weights into ``trainer``: computed at θ₀ and written to attribution.json, or, on resume,
    read back from it (the settings are checked by :func:`check_resume`)."""
    g = config.guard
    guard_retain = _sample(retain, g.retain_samples, config.train.seed)
    recompute = guard_recompute(g, forget, guard_retain, g.batch_size or config.train.batch_size, pad_id)
    path = run_dir / "attribution.json"
    started = time.perf_counter()
    if path.is_file() and resume is not None:  # resumed: the θ₀ attribution is already on disk
        stored_ids, _, weights = guard_lib.read_attribution(path)
        if stored_ids != ids:
            raise LetheError(f"{path}: forget ids differ from data.forget_split; use a new run directory")
    else:
        scores, weights = recompute(trainer.accelerator.unwrap_model(trainer.model))
        if trainer.args.should_save:
            guard_lib.write_attribution(path, ids, scores, weights)
    trainer.set_sample_weights(weights)
    if g.recompute_every > 0:
        trainer.checkpoint_guard_weights = True
        trainer.add_callback(GuardRecomputeCallback(trainer, recompute, run_dir, g.recompute_every, ids))
        GuardRecomputeCallback.restore(trainer, resume)
    return {
        "enabled": True, "tau": g.tau, "normalize": g.normalize, "recompute_every": g.recompute_every,
        "retain_samples": len(guard_retain), "attribution_file": str(path),
        "attribution_wall_s": time.perf_counter() - started,
        "weight_min": float(weights.min()), "weight_max": float(weights.max()),
        "effective_samples": float(1.0 / (weights.double() ** 2).sum()),
    }


def _save_final(trainer: UnlearnTrainer, tokenizer, run_dir: Path, base_name: str) -> Path:
    """model/ (LoRA merged; the adapters alone in adapter/ first), staged and renamed
    (:func:`lethe.runs.publish_dir`)."""
    final = run_dir / "model"
    if trainer.args.should_save:
        model = trainer.accelerator.unwrap_model(trainer.model)
        publish_adapter(model, tokenizer, run_dir, base_name)
        to_save = merged(model)
        publish_dir(final, lambda staging: save_model(to_save, tokenizer, staging))
    trainer.accelerator.wait_for_everyone()  # no rank reads model/ before it is complete
    return final


def run_unlearning(config: UnlearnConfig, *, quiet: bool = False, callbacks: Sequence[TrainerCallback] = (),
                   data: UnlearnData | None = None,
                   after: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None,
                   ) -> tuple[Path, dict[str, Any]]:
    """``lethe unlearn``: unlearn ``data.forget_split`` from ``model.name`` into a run directory.

    Writes config.yaml, attribution.json (GUARD), checkpoints/, model/ (safetensors; LoRA merged, the adapters
    alone in adapter/),
    metrics.json and log.jsonl; re-running on the same directory resumes from the last checkpoint (with
    the same GUARD settings). Data, model and truncation are checked before anything is written. ``data``:
    what :func:`load_unlearn_data` returned for ``config``, when the caller has loaded it already. ``after``
    (run directory, metrics) -> metrics runs once the model is saved, still holding the directory's lock
    (the TOFU evaluation); if it fails, the unlearned model and its metrics stay."""
    config.validate()
    method = get_method(config.method)
    o = config.objective
    hyper = resolve_hyper(method, o.gamma, o.alpha, o.beta, o.delta)
    forget_records, retain_records, retain_split = data if data is not None else load_unlearn_data(config)
    refusals = refusal_answers(config.data.idk_file) if method.refusals else []
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    model, tokenizer = load_model(config.model.name, trust_remote_code=config.model.trust_remote_code,
                                  dtype=config.model.dtype)
    max_length = config.data.max_length
    check_positions(model, max_length)
    ids = record_ids(forget_records, config.data.forget_split)
    forget = _encode_checked(tokenizer, forget_records, ids, "forget", max_length)
    retain = _encode_checked(tokenizer, retain_records, record_ids(retain_records, retain_split), "retain",
                             max_length)
    job = _Job(config, method, hyper, model, tokenizer, forget, retain, forget_records, retain_split, refusals,
               ids, quiet, tuple(callbacks))
    with open_run("unlearn", config.run_dir or None) as run:
        run_dir, metrics = _unlearn_in(run, job)
        if after is not None:
            run.settled = True  # model/ and metrics.json are complete: a failure after them leaves them
            metrics = after(run_dir, metrics)
        return run_dir, metrics


@dataclass
class _Job:
    """What :func:`run_unlearning` checked and prepared before claiming the run directory."""

    config: UnlearnConfig
    method: Method
    hyper: Hyper
    model: torch.nn.Module
    tokenizer: Any
    forget: list[dict[str, list[int]]]
    retain: list[dict[str, list[int]]]
    forget_records: list[dict[str, Any]]
    retain_split: str
    refusals: list[str]
    ids: list[str]
    quiet: bool
    callbacks: tuple[TrainerCallback, ...]


# changes that leave a finished unlearning run's model as it is (evaluation settings are not among them:
# a finished run re-run with other eval.* settings is evaluated again, its model is kept)
FINISHED_MAY_CHANGE = ("run_dir", "train.logging_steps", "train.save_steps", "train.save_total_limit",
                       *NOT_IN_MODEL)


def _finished_metrics(run: Run, config: UnlearnConfig) -> dict[str, Any] | None:
    """The metrics of a finished run that ``config`` would not change, else None."""
    run_dir = run.path
    path = run_dir / "metrics.json"
    if not (run.finished or run.legacy) or not (run_dir / "model").is_dir() or not path.is_file():
        return None
    previous = saved_config(UnlearnConfig, run_dir / "config.yaml", f"cannot resume {run_dir}: it")
    if previous is None or config_changes(previous, config, ignore=FINISHED_MAY_CHANGE):
        return None
    try:
        return json.loads(read_text_file(path, "metrics file"))
    except json.JSONDecodeError:
        return None


def _unlearn_in(run: Run, job: _Job) -> tuple[Path, dict[str, Any]]:
    """The body of :func:`run_unlearning` in its claimed run directory."""
    return resume_or_finish(run, job.config, job.quiet,
                            lambda args, resume: _train_and_save(run, job, args, resume))


def resume_or_finish(run: Run, config: UnlearnConfig, quiet: bool,
                     train: Callable[[Any, str | None], tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    """In a claimed unlearning run directory: nothing for a finished run (its metrics), else
    ``train(args, resume)`` from the newest complete checkpoint (or from the start) after config.yaml is
    written; a failure keeps the directory only if this attempt sealed a new checkpoint. Shared by every
    unlearning recipe (the objectives here, WHP's generic-label fine-tuning)."""
    run_dir = run.path
    checkpoints = run_dir / "checkpoints"
    args = training_arguments(config, checkpoints, quiet)
    if args.should_save:
        clean_incomplete(checkpoints)  # a kill during a save: never resumed from, never kept
    resume = _last_checkpoint(checkpoints)
    if resume is not None or (run_dir / "model").is_dir():
        check_resume(run_dir, config)
    done = _finished_metrics(run, config)
    if done is not None:
        return run_dir, already_finished(run, done, "raise train.max_steps to unlearn further, or use a new run "
                                                    "directory")
    run.mark("running")
    if args.should_save:
        run.write_text("config.yaml", to_yaml(config))
    run.started = True
    try:
        return train(args, resume)
    except BaseException:
        run.keep = _last_checkpoint(checkpoints) != resume  # this attempt saved a checkpoint
        raise


def _train_and_save(run: Run, job: _Job, args, resume: str | None) -> tuple[Path, dict[str, Any]]:
    """Unlearn (GUARD weights first), save model/ and metrics.json; mark the run finished."""
    run_dir, config, method, hyper, model, tokenizer = (run.path, job.config, job.method, job.hyper, job.model,
                                                        job.tokenizer)
    forget, retain, ids, quiet, callbacks = job.forget, job.retain, job.ids, job.quiet, job.callbacks
    forget_records, retain_split, refusals = job.forget_records, job.retain_split, job.refusals
    o = config.objective
    log = RunLog(run_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    max_length = config.data.max_length
    set_seed(config.train.seed)
    ref_model = None
    if config.lora.enabled:
        model = apply_lora(model, config.lora, config.train.seed)
    elif method.reference:
        ref_model = copy.deepcopy(model)
    model.train()
    idk = None
    if method.refusals:
        idk = Refusals.encode(tokenizer, [r["question"] for r in forget_records], refusals, max_length)
    dataset = ForgetRetainDataset(forget, retain if method.retain != "none" else None,
                                  seed=config.train.seed, rank=args.process_index, idk=idk)
    trainer = UnlearnTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=PairCollator(pad_id),
        processing_class=tokenizer, callbacks=[JsonlLogCallback(log), EpochCallback(dataset), *callbacks],
        method=method, hyper=hyper, ref_model=ref_model, max_loss=o.max_loss,
        keep_checkpoints=config.train.save_total_limit,
    )
    trainer.restore_state(resume)
    show_training_progress(trainer, quiet)
    batch_size = config.train.batch_size
    retain_eval = _sample(retain, len(forget), config.train.seed)
    before = {"forget": mean_nll(trainer.model, forget, batch_size, pad_id),
              "retain": mean_nll(trainer.model, retain_eval, batch_size, pad_id)}

    guard_info: dict[str, Any] = {"enabled": False}
    if config.guard.enabled:
        guard_info = _setup_guard(trainer, config, forget, retain, ids, run_dir, resume, pad_id)
        log("guard", **guard_info)

    log("unlearn_start", method=method.name, forget=len(forget), retain=len(retain), resume_from=resume,
        target_steps=planned_steps(trainer))
    started = time.perf_counter()
    try:
        train_loss = train_from(trainer, Path(resume) if resume else None)
    except LetheError as err:
        log("unlearn_stopped", error=str(err), step=trainer.state.global_step)
        raise
    wall = time.perf_counter() - started
    after = {"forget": mean_nll(trainer.model, forget, batch_size, pad_id),
             "retain": mean_nll(trainer.model, retain_eval, batch_size, pad_id)}
    lora = lora_summary(config.lora, trainer.model)
    final = _save_final(trainer, tokenizer, run_dir, config.model.name)
    reference = "none"
    if method.reference:
        reference = "adapters-disabled" if config.lora.enabled else "frozen-copy"
    metrics = {
        "method": method.name,
        "objective": {"gamma": hyper.gamma, "alpha": hyper.alpha, "beta": hyper.beta, "delta": hyper.delta},
        "train_loss": train_loss,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "forget_split": config.data.forget_split,
        "retain_split": retain_split,
        "forget_samples": len(forget),
        "retain_samples": len(retain),
        "refusals": len(refusals),
        "forget_nll_before": before["forget"]["nll"], "forget_nll_after": after["forget"]["nll"],
        "forget_prob_before": before["forget"]["prob"], "forget_prob_after": after["forget"]["prob"],
        "retain_nll_before": before["retain"]["nll"], "retain_nll_after": after["retain"]["nll"],
        "retain_prob_before": before["retain"]["prob"], "retain_prob_after": after["retain"]["prob"],
        "guard": guard_info,
        "lora": lora,
        "reference": reference,
        "train_wall_s": wall,
        "resumed_from": resume,
        "model_dir": str(final),
    }
    if args.should_save:
        atomic_write_json(run_dir / "metrics.json", metrics)
        run.mark("finished")
    log("unlearn_end", **{k: v for k, v in metrics.items() if not isinstance(v, dict)})
    return run_dir, metrics
