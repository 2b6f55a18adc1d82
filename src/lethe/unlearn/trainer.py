"""Unlearning through HF ``Trainer`` (so ``accelerate launch`` gives DDP): L = γ·L_forget + α·L_retain.

Each batch holds forget samples i, a random retain sample for each (drawn per rank and epoch, see
:mod:`lethe.unlearn.data`) and, for IdkPO, the forget question with a refusal answer. For the forget
samples the trainer computes S_i (summed NLL) and n_i, turns them into the method's per-sample terms f_i
(:mod:`lethe.unlearn.objectives`) and averages them, plainly or with GUARD weights N_f·w_i
(:mod:`lethe.unlearn.guard`, DESIGN 3.4). The reference π_ref (KL, NPO, IdkPO) is a frozen copy of θ₀,
or, with LoRA, the same model with its adapters disabled (no second copy).

:class:`UnlearnTrainer` overrides only ``compute_loss`` (and ``log``, to report the two loss terms). It
stops the run with a :class:`~lethe.errors.LetheError` as soon as L is NaN/inf or |L| exceeds
``objective.max_loss``, before that step's update, so the checkpoints on disk stay good.
:func:`run_unlearning` is the recipe behind ``lethe unlearn``: data → model → (GUARD) → Trainer → run
directory, resuming from the last checkpoint when re-run on the same directory.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from lethe.config import to_yaml
from lethe.data.tofu import RETAIN_OF, load_split
from lethe.data.world import resolve_source
from lethe.errors import LetheError
from lethe.losses import sequence_nll
from lethe.models import load_model, save_model
from lethe.runs import RunLog, atomic_write_json, atomic_write_text, new_run_dir
from lethe.train.trainer import JsonlLogCallback, training_arguments
from lethe.unlearn import guard as guard_lib
from lethe.unlearn.config import GuardSettings, LoraSettings, UnlearnConfig, UnlearnDataSettings
from lethe.unlearn.data import (
    ForgetRetainDataset,
    PairCollator,
    Refusals,
    batches,
    check_forget_retain,
    encode_all,
    group,
    record_ids,
    seed_of,
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


def _is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class UnlearnTrainer(Trainer):
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
        if method.reference and ref_model is None and not _is_peft(self.model):
            raise LetheError(f"method {method.name} needs a reference model (a frozen copy, or LoRA adapters "
                             "to disable)")
        self.sample_weights: torch.Tensor | None = None
        self.set_sample_weights(sample_weights)
        self._sums: dict[str, list[float]] = {}

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

    def _check_loss(self, loss: torch.Tensor, forget_loss: torch.Tensor, retain_loss: torch.Tensor) -> None:
        value = loss.detach().float()
        bad = (~torch.isfinite(value) | (value.abs() > self.max_loss)).float().reshape(1)
        if self.accelerator.num_processes > 1:  # every rank must stop, or the others hang in all-reduce
            bad = self.accelerator.reduce(bad, reduction="sum")
        if bad.item() == 0:
            return
        output_dir = Path(self.args.output_dir)
        last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        kept = f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
        reason = ("is not finite" if not torch.isfinite(value)
                  else f"exceeds objective.max_loss={self.max_loss:g}")
        raise LetheError(
            f"unlearning stopped at step {self.state.global_step + 1}: loss {float(value):.6g} {reason} "
            f"(method {self.method.name}, forget term {float(forget_loss.detach()):.6g}, retain term "
            f"{float(retain_loss.detach()):.6g}); {kept}; lower train.lr or change the method"
        )

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        logs = dict(logs)
        for key, (total, count) in self._sums.items():
            if count:
                logs[key] = total / count
        self._sums = {}
        super().log(logs, *args, **kwargs)


class EpochCallback(TrainerCallback):
    """Tell the dataset the epoch, so the retain / refusal pairing is redrawn (alike on resume)."""

    def __init__(self, dataset: ForgetRetainDataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int((state.epoch or 0) + 1e-6))


class GuardRecomputeCallback(TrainerCallback):
    """GUARD with ``recompute_every`` N: recompute the weights at the current θ every N optimizer steps;
    keep the current weights in each checkpoint so a resumed run continues with them."""

    def __init__(self, trainer: UnlearnTrainer, recompute, run_dir: Path, every: int) -> None:
        self.trainer, self.recompute, self.run_dir, self.every = trainer, recompute, run_dir, every

    def on_step_end(self, args, state, control, **kwargs):
        if self.every > 0 and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            scores, weights = self.recompute(self.trainer.accelerator.unwrap_model(self.trainer.model))
            self.trainer.set_sample_weights(weights)
            if args.should_save:
                atomic_write_json(self.run_dir / "attribution" / f"step-{state.global_step}.json",
                                  {"scores": scores.tolist(), "weights": weights.tolist()})

    def on_save(self, args, state, control, **kwargs):
        weights = self.trainer.sample_weights
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if weights is not None and args.should_save and folder.is_dir():
            atomic_write_json(folder / GUARD_STATE_FILE, (weights / weights.numel()).tolist())

    @staticmethod
    def restore(trainer: UnlearnTrainer, checkpoint: str | None) -> bool:
        path = Path(checkpoint) / GUARD_STATE_FILE if checkpoint else None
        if path is None or not path.is_file():
            return False
        trainer.set_sample_weights(torch.tensor(json.loads(path.read_text()), dtype=torch.float32))
        return True


# --- the recipe ----------------------------------------------------------------------------------------


def load_forget_retain(data: UnlearnDataSettings) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """(forget records, retain records, retain split name) from a TOFU-format folder; validated."""
    source = resolve_source(data.source, n_authors=data.world_authors, seed=data.world_seed)
    if not source.is_dir():
        raise LetheError(f"data.source {source} must be a folder of TOFU split files (e.g. forget10.json)")
    retain_split = data.retain_split or RETAIN_OF.get(data.forget_split, "")
    if not retain_split:
        raise LetheError(f"config: data.retain_split is empty and forget split {data.forget_split!r} has no "
                         "standard complement; set data.retain_split")
    forget = load_split(source, data.forget_split)
    retain = load_split(source, retain_split)
    check_forget_retain(forget, retain, forget_name=data.forget_split, retain_name=retain_split)
    return forget, retain, retain_split


def apply_lora(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets: str | list[str] = list(settings.target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LetheError(f"config: lora.target_modules {settings.target_modules}: {first}") from None


@torch.no_grad()
def mean_nll(model: torch.nn.Module, features: list[dict[str, list[int]]], batch_size: int,
             pad_id: int) -> dict[str, float]:
    """Mean per-sample NLL ℓ and TOFU probability mean exp(−ℓ) of ``features`` (eval mode)."""
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


def run_unlearning(config: UnlearnConfig, *, quiet: bool = False,
                   callbacks: Sequence[TrainerCallback] = ()) -> tuple[Path, dict[str, Any]]:
    """``lethe unlearn``: unlearn ``data.forget_split`` from ``model.name`` into a run directory.

    Writes config.yaml, attribution.json (GUARD), checkpoints/, model/ (safetensors; LoRA merged),
    metrics.json and log.jsonl; re-running on the same directory resumes from the last checkpoint."""
    config.validate()
    method = get_method(config.method)
    o = config.objective
    hyper = resolve_hyper(method, o.gamma, o.alpha, o.beta, o.delta)
    forget_records, retain_records, retain_split = load_forget_retain(config.data)  # fail before any writes
    refusals = refusal_answers(config.data.idk_file) if method.refusals else []
    run_dir = new_run_dir("unlearn", config.run_dir or None)
    log = RunLog(run_dir)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    model, tokenizer = load_model(config.model.name, trust_remote_code=config.model.trust_remote_code)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    max_length = config.data.max_length
    forget = encode_all(tokenizer, forget_records, max_length)
    retain = encode_all(tokenizer, retain_records, max_length)

    checkpoints = run_dir / "checkpoints"
    args = training_arguments(config, checkpoints, quiet)
    if args.should_save:
        atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    set_seed(config.train.seed)
    ref_model = None
    if config.lora.enabled:
        model = apply_lora(model, config.lora)
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
    )
    if quiet:
        trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the progress bar for printed logs
    resume = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    batch_size = config.train.batch_size
    retain_eval = _sample(retain, len(forget), config.train.seed)
    before = {"forget": mean_nll(trainer.model, forget, batch_size, pad_id),
              "retain": mean_nll(trainer.model, retain_eval, batch_size, pad_id)}

    g = config.guard
    guard_info: dict[str, Any] = {"enabled": g.enabled}
    if g.enabled:
        guard_retain = _sample(retain, g.retain_samples, config.train.seed)
        recompute = guard_recompute(g, forget, guard_retain, g.batch_size or batch_size, pad_id)
        ids = record_ids(forget_records, config.data.forget_split)
        path = run_dir / "attribution.json"
        started = time.perf_counter()
        if path.is_file() and resume is not None:  # resumed: the θ₀ attribution is already on disk
            stored_ids, scores, _ = guard_lib.read_attribution(path)
            if stored_ids != ids:
                raise LetheError(f"{path}: forget ids differ from data.forget_split; use a new run directory")
            weights = guard_lib.guard_weights(scores, g.tau, g.normalize)
        else:
            scores, weights = recompute(trainer.accelerator.unwrap_model(trainer.model))
            if args.should_save:
                guard_lib.write_attribution(path, ids, scores, weights)
        trainer.set_sample_weights(weights)
        if g.recompute_every > 0:
            trainer.add_callback(GuardRecomputeCallback(trainer, recompute, run_dir, g.recompute_every))
            GuardRecomputeCallback.restore(trainer, resume)
        guard_info.update({
            "tau": g.tau, "normalize": g.normalize, "recompute_every": g.recompute_every,
            "retain_samples": len(guard_retain), "attribution_file": str(path),
            "attribution_wall_s": time.perf_counter() - started,
            "weight_min": float(weights.min()), "weight_max": float(weights.max()),
            "effective_samples": float(1.0 / (weights.double() ** 2).sum()),
        })
        log("guard", **guard_info)

    log("unlearn_start", method=method.name, forget=len(forget), retain=len(retain), resume_from=resume)
    started = time.perf_counter()
    try:
        output = trainer.train(resume_from_checkpoint=resume)
    except LetheError as err:
        log("unlearn_stopped", error=str(err), step=trainer.state.global_step)
        raise
    wall = time.perf_counter() - started
    after = {"forget": mean_nll(trainer.model, forget, batch_size, pad_id),
             "retain": mean_nll(trainer.model, retain_eval, batch_size, pad_id)}

    final = run_dir / "model"
    if args.should_save:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        to_save = unwrapped.merge_and_unload() if _is_peft(unwrapped) else unwrapped
        staging = run_dir / "model.partial"
        shutil.rmtree(staging, ignore_errors=True)
        save_model(to_save, tokenizer, staging)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    reference = "none"
    if method.reference:
        reference = "adapters-disabled" if config.lora.enabled else "frozen-copy"
    metrics = {
        "method": method.name,
        "objective": {"gamma": hyper.gamma, "alpha": hyper.alpha, "beta": hyper.beta, "delta": hyper.delta},
        "train_loss": output.training_loss,
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
        "lora": {"enabled": config.lora.enabled, "r": config.lora.r, "alpha": config.lora.alpha,
                 "dropout": config.lora.dropout, "target_modules": list(config.lora.target_modules)},
        "reference": reference,
        "train_wall_s": wall,
        "resumed_from": resume,
        "model_dir": str(final),
    }
    if args.should_save:
        atomic_write_json(run_dir / "metrics.json", metrics)
    log("unlearn_end", **{k: v for k, v in metrics.items() if not isinstance(v, dict)})
    return run_dir, metrics
