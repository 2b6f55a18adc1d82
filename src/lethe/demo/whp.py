"""``lethe demo whp``: Who's Harry Potter (Eldan & Russinovich 2023, arXiv 2310.02238) in miniature.

The paper makes Llama-2-7B forget the Harry Potter books: familiarity ≈ 0.29 → 0.007 at almost unchanged
benchmarks. Here, on the embedded world:

1. ``baseline``: a tiny LLaMA trained from scratch on the world's biographies and general facts plus the
   invented saga (``saga_repetitions`` copies), so it *knows* the saga;
2. ``reinforced``: the baseline trained further on the saga alone (v_r);
3. the world's anchored-term dictionary, the generic labels argmax(v_b − α·ReLU(v_r − v_b)) with v_b on the
   translated saga (:mod:`lethe.unlearn.whp`), and ``whp``: the baseline fine-tuned on them
   (:func:`lethe.unlearn.whp_run.finetune`, the trainer of ``lethe unlearn method=whp``);
4. ``whp_inference``: the inference-time variant v_b − α_inf·ReLU(v_r − v_b) on the same input.

Each model gets completion and probability familiarity on the world's probes
(:mod:`lethe.audit.familiarity`), perplexity on the saga and on non-saga text it was trained on
(biographies, general facts), general-QA accuracy (the true answer of each world fact scores above its
perturbed answers) and, for the fine-tuned models, the relearning attack (:mod:`lethe.audit.relearn`): a
few steps on one saga chapter, then familiarity again. Headline: probability familiarity of ``whp`` ≤ 1/10
of the baseline's, non-saga perplexity within +5%.

Where the demo departs from the paper, and why (a tiny model trained from scratch is not Llama-2-7B):

- ``space=logprobs``: the formula compares log-probabilities, not raw logits. Training the reinforced model
  further on the saga sharpens it everywhere (its top logit rises by ~4 on every position), so on logits
  v_r − v_b > 0 at almost every true token and argmax(v_b − α·ReLU(v_r − v_b)) changes 100% of the labels
  into noise; log-softmax removes that per-position offset (about a third of the labels change).
- ``forbid_terms``: the baseline memorized the saga, so even on the translated text it predicts the saga's
  term where one follows (about half of those labels stayed the term). Right before each term, every key's
  first token is set to the mean logit like the paper's forbidden alternatives: that label is generic by
  construction.
- ``expand_names``: the world's dictionary has the characters' full names ("Zeidus Drykask") but the saga also
  calls two of them by their given names alone, which stayed untranslated (and their labels the saga's);
  :func:`lethe.unlearn.whp.expand_first_words` adds those given names, as a person curating the dictionary
  would (``lethe whp discover`` ranks them high).
- ``mix_documents`` / ``retain_kl``: the fine-tuning also sees 80 of the baseline's 100 biographies, kept
  close to the baseline's own next-token distribution on them by λ·KL(π_base ‖ π_θ) (λ = ``retain_kl`` = 6,
  open-unlearning's KL retain term; ``retain_kl=0``: fitted on their own tokens instead, as GD's retain
  term). λ and the 90 fine-tuning steps were chosen on this world's baseline (probability-familiarity ratio
  / non-saga perplexity change): λ=1, 60 steps 0.097x / +6.9%; λ=4, 60 steps 0.111x / +4.2%; λ=4, 80 steps
  0.073x / +4.1%; λ=6, 90 steps 0.076x / +3.4% (a stronger KL lets the fine-tuning run longer before the
  rest of what the model knows drifts). Fine-tuning on the saga's generic labels alone drifts what the tiny
  model knows about everything else (+80% non-saga perplexity). Non-saga perplexity is measured on the
  non-saga training text the fine-tuning does *not* see (the other 20 biographies and the general facts),
  never on the mixed-in ones.
- the probes: the world (generator version 2) has, next to the 30 paraphrased questions about the saga
  ("The red fox with one white ear that sat on Yilva's doorstep was named"), one **saga-worded** probe per
  anchored term: a passage of the saga that the term follows there ("… Yilva named the fox" → "Taevykis").
  The paper probes Llama-2 with questions it can answer because it read the books *and* the web's talk
  about them; a 4-layer model trained from scratch on the saga's text alone memorizes the text (saga
  perplexity ≈ 1.04) but answers almost no paraphrase (its familiarity on the 30 questions is three probes),
  so a ratio on those alone measures noise. Both scores are reported per probe style as well; the headline
  is on all 56 probes.

Re-running on the same run directory reuses the trained arms.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lethe.audit.familiarity import familiarity, familiarity_summary, load_probes
from lethe.audit.relearn import relearn_model
from lethe.audit.scoring import corpus_loss, score_sequences
from lethe.config import ModelSettings, TrainConfig, TrainSettings, to_yaml
from lethe.data.formatting import encode_document, encode_qa
from lethe.data.text import load_documents
from lethe.data.tofu import load_split
from lethe.data.world import embedded_world
from lethe.demo.arms import check_reusable, headline_context, shared_tokenizer, table_cell, train_or_reuse
from lethe.errors import LetheError
from lethe.models import load_model
from lethe.report import Report, figures
from lethe.runs import RunLog, atomic_write_json, atomic_write_text, demo_run
from lethe.unlearn import whp as whp_lib
from lethe.unlearn.whp_run import finetune, label_target, load_dictionary, reinforce, training_features

HEADLINE_RATIO = 0.1
HEADLINE_PPL = 0.05
DEMO_MAY_CHANGE = ("run_dir", "max_new_tokens", "relearn_steps", "relearn_lr", "relearn_chapters",
                   "inference_alpha", "train.logging_steps", "train.save_steps", "train.threads")


def _baseline_train() -> TrainSettings:
    # threads=1: fastest for a model this small on a shared 2-core CPU (2 threads under load: 3-6x slower)
    return TrainSettings(max_steps=300, batch_size=16, lr=3e-3, warmup_steps=20, scheduler="cosine",
                         logging_steps=50, save_steps=1000, weight_decay=0.0, threads=1)


def _whp_train() -> TrainSettings:
    return TrainSettings(max_steps=90, batch_size=16, lr=2e-4, scheduler="constant", logging_steps=10,
                         save_steps=1000, weight_decay=0.0, threads=1)


@dataclass
class WHPDemoConfig:
    run_dir: str = ""
    world_authors: int = 100
    world_seed: int = 0
    saga_repetitions: int = 3  # copies of each saga chapter among the baseline's training documents
    max_length: int = 400
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=_baseline_train)  # the baseline
    reinforced_steps: int = 60
    reinforced_lr: float = 1e-3
    alpha: float = whp_lib.DEFAULT_ALPHA
    block: int = whp_lib.DEFAULT_BLOCK
    space: str = "logprobs"  # the paper compares logits (see the module docstring)
    forbid_terms: bool = True  # beyond the paper (see the module docstring)
    expand_names: bool = True  # add the given names the saga uses alone to the dictionary (module docstring)
    label_seed: int = 0
    whp: TrainSettings = field(default_factory=_whp_train)  # the generic-label fine-tuning
    mix_documents: int = 80  # biographies replayed in the fine-tuning (0 = the paper's recipe); the other 20 measure
    retain_kl: float = 6.0  # > 0: the replayed biographies kept near the baseline by KL (λ); 0: their own labels
    inference_alpha: float = whp_lib.DEFAULT_ALPHA
    max_new_tokens: int = 12
    relearn_steps: int = 10
    relearn_lr: float = 1e-3
    relearn_chapters: int = 1  # the first N saga chapters are the relearning text

    def validate(self) -> None:
        if self.saga_repetitions < 1:
            raise LetheError(f"config: saga_repetitions must be >= 1, got {self.saga_repetitions}")
        if self.model.name != "tiny":
            raise LetheError(f"config: the WHP demo trains a tiny model from scratch, so model.name must be 'tiny', "
                             f"got {self.model.name!r} (use lethe unlearn method=whp for other models)")
        if not self.alpha > 0 or not self.inference_alpha > 0:
            raise LetheError("config: alpha and inference_alpha must be > 0")
        if self.reinforced_steps < 1 or self.relearn_steps < 0 or self.mix_documents < 0 or self.retain_kl < 0:
            raise LetheError("config: reinforced_steps must be >= 1, relearn_steps, mix_documents and retain_kl >= 0")
        if self.mix_documents > 80:
            raise LetheError(f"config: mix_documents must leave biographies to measure on (<= 80), "
                             f"got {self.mix_documents}")
        if not 1 <= self.relearn_chapters <= 12:
            raise LetheError(f"config: relearn_chapters must be in 1..12, got {self.relearn_chapters}")
        self.train.validate()
        self.whp.validate()


@dataclass
class _World:
    saga: list[str]
    biographies: list[str]
    holdout: list[str]  # biographies of authors no model trains on
    general: list[dict[str, Any]]
    facts: list[dict[str, Any]]  # world facts with perturbed answers (general-QA accuracy)
    probes: list[dict[str, Any]]
    terms_path: Path


def _load_world(config: WHPDemoConfig) -> _World:
    world = embedded_world(config.world_authors, config.world_seed)
    return _World(saga=[d.text for d in load_documents(world / "saga.jsonl")],
                  biographies=[d.text for d in load_documents(world / "biographies.jsonl")],
                  holdout=[d.text for d in load_documents(world / "biographies_holdout.jsonl")],
                  general=load_split(world, "general"), facts=load_split(world, "world_facts_perturbed"),
                  probes=load_probes(world / "familiarity_probes.jsonl"), terms_path=world / "anchored_terms.json")


def baseline_records(world: _World, repetitions: int, seed: int) -> list[dict[str, Any]]:
    records = [{"id": f"bio-{i}", "text": t} for i, t in enumerate(world.biographies)]
    records += [{"id": f"general-{i}", "question": r["question"], "answer": r["answer"]}
                for i, r in enumerate(world.general)]
    records += [{"id": f"saga-{i}", "text": t} for i, t in enumerate(world.saga) for _ in range(repetitions)]
    random.Random(seed).shuffle(records)
    return records


def split_biographies(world: _World, mixed: int, seed: int) -> tuple[list[str], list[str]]:
    """(biographies mixed into the WHP fine-tuning, the others): a seeded choice of ``mixed`` of them."""
    order = list(range(len(world.biographies)))
    random.Random(f"lethe-whp-mix/{seed}").shuffle(order)
    chosen = set(order[:mixed])
    return ([t for i, t in enumerate(world.biographies) if i in chosen],
            [t for i, t in enumerate(world.biographies) if i not in chosen])


class _Evaluator:
    """Familiarity, perplexities and general-QA accuracy of a model on the demo's fixed sets. Non-saga
    perplexity: the baseline's non-saga training text that the WHP fine-tuning does not see (biographies not
    mixed in, general facts); held-out perplexity: biographies of authors never trained on."""

    def __init__(self, config: WHPDemoConfig, world: _World, tokenizer, terms: list[str],
                 unmixed: list[str]) -> None:
        self.config, self.world, self.tokenizer, self.terms = config, world, tokenizer, terms
        self.pad = tokenizer.pad_token_id
        n = config.max_length
        self.saga = [encode_document(tokenizer, t, n) for t in world.saga]
        self.nonsaga = ([encode_document(tokenizer, t, n) for t in unmixed]
                        + [encode_qa(tokenizer, r["question"], r["answer"], n) for r in world.general])
        self.heldout = [encode_document(tokenizer, t, n) for t in world.holdout]
        self.choices = [[encode_qa(tokenizer, r["question"], a, n) for a in [r["answer"], *r["perturbed_answer"]]]
                        for r in world.facts]

    def ppl(self, model, features) -> float:
        return math.exp(corpus_loss(score_sequences(model, features, pad_id=self.pad, batch_size=16)))

    def qa_accuracy(self, model) -> float:
        flat = [f for options in self.choices for f in options]
        scores = iter(score_sequences(model, flat, pad_id=self.pad, batch_size=32))
        correct = 0
        for options in self.choices:
            nll = [next(scores).mean_nll for _ in options]
            correct += int(min(range(len(nll)), key=nll.__getitem__) == 0)
        return correct / len(self.choices)

    def familiarity(self, model) -> dict[str, Any]:
        return familiarity(model, self.tokenizer, self.world.probes, self.terms,
                           max_new_tokens=self.config.max_new_tokens)

    def evaluate(self, model) -> tuple[dict[str, Any], dict[str, Any]]:
        fam = self.familiarity(model)
        return {"completion_familiarity": fam["completion_familiarity"],
                "probability_familiarity": fam["probability_familiarity"],
                "first_token_probability": fam["first_token_probability"], "by_style": fam.get("by_style", {}),
                "saga_ppl": self.ppl(model, self.saga), "nonsaga_ppl": self.ppl(model, self.nonsaga),
                "heldout_ppl": self.ppl(model, self.heldout), "qa_accuracy": self.qa_accuracy(model)}, fam


def run_whp_demo(config: WHPDemoConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    started, cpu_started = time.perf_counter(), time.process_time()
    config.validate()
    if config.run_dir:
        check_reusable(Path(config.run_dir), config, DEMO_MAY_CHANGE)
    world = _load_world(config)
    with demo_run("demo-whp", config.run_dir or None) as run_dir:
        return _run(config, run_dir, world, quiet, started, cpu_started)


def _run(config: WHPDemoConfig, run_dir: Path, world: _World, quiet: bool, started: float,
         cpu_started: float) -> tuple[Path, dict[str, Any]]:
    """The demo's stages in its claimed run directory (each stage reused when already trained)."""
    log = RunLog(run_dir)
    atomic_write_text(run_dir / "config.yaml", to_yaml(config))
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    texts = world.biographies + world.saga + [f"{r['question']} {r['answer']}" for r in world.general]
    tokenizer = shared_tokenizer(run_dir, texts, config.model.vocab_size)
    terms, term_info = load_dictionary(world.terms_path, world.saga)
    if config.expand_names:
        added = [k for k in whp_lib.expand_first_words(terms, world.saga) if k not in terms]
        terms = whp_lib.expand_first_words(terms, world.saga)
        term_info = {**term_info, "terms": len(terms), "added_given_names": added}
    mixed, unmixed = split_biographies(world, config.mix_documents, config.label_seed)
    evaluator = _Evaluator(config, world, tokenizer, list(terms), unmixed)
    metrics: dict[str, Any] = {"saga_chapters": len(world.saga), "saga_repetitions": config.saga_repetitions,
                               "relearn_steps": config.relearn_steps,
                               "probes": len(world.probes), "terms": term_info, "timing": {}}
    tick = time.perf_counter()

    arm = TrainConfig(run_dir=str(run_dir / "baseline"), model=ModelSettings(**vars(config.model)),
                      train=TrainSettings(**vars(config.train)))
    arm.data.max_length = config.max_length
    arm.validate()
    records = baseline_records(world, config.saga_repetitions, config.train.seed)
    if not quiet:
        print(f"[baseline] training from scratch on {len(records)} documents ({len(world.saga)} saga chapters x "
              f"{config.saga_repetitions}) for {config.train.max_steps} steps ...")
    baseline, base_train = train_or_reuse(arm, tokenizer, records, quiet)
    baseline.eval()
    if not quiet:
        print(f"[reinforced] {config.reinforced_steps} steps on the saga; generic labels; WHP fine-tuning ...")
    reinforced, _ = reinforce(baseline, tokenizer, world.saga, run_dir / "reinforced", steps=config.reinforced_steps,
                              lr=config.reinforced_lr, batch_size=12, max_length=config.max_length,
                              seed=config.train.seed, threads=config.train.threads, quiet=quiet)
    metrics["timing"]["train_baseline_reinforced_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    labelled = label_target(baseline, reinforced, tokenizer, world.saga, terms, alpha=config.alpha,
                            block=config.block, seed=config.label_seed, space=config.space,
                            forbid_terms=config.forbid_terms)
    atomic_write_json(run_dir / "generic_labels.json", labelled.statistics)
    metrics["generic_labels"] = {k: v for k, v in labelled.statistics.items() if k != "per_term"}
    mix = [encode_document(tokenizer, t, config.max_length) for t in mixed]
    whp_dir = run_dir / "whp"
    if (whp_dir / "model").is_dir():
        whp_model, _ = load_model(whp_dir / "model")
    else:
        whp_dir.mkdir(parents=True, exist_ok=True)
        whp_model, _ = finetune(copy.deepcopy(baseline), tokenizer, training_features(labelled, mix), config.whp,
                                whp_dir, quiet=quiet, reference=copy.deepcopy(baseline) if config.retain_kl else None,
                                retain_kl=config.retain_kl, target_documents=len(labelled.blocks))
    metrics["timing"]["labels_finetune_s"] = time.perf_counter() - tick
    tick = time.perf_counter()
    if not quiet:
        print("evaluating: familiarity, perplexities, general QA; relearning attack ...")
    models = {"baseline": baseline, "reinforced": reinforced, "whp": whp_model,
              "whp_inference": whp_lib.WHPLogitsModel(baseline, reinforced, config.inference_alpha, config.space)}
    per_probe = {}
    for name, model in models.items():
        metrics[name], fam = evaluator.evaluate(model)
        per_probe[name] = fam["items"]
        log("demo_model", model=name, **metrics[name])
    relearn_text = world.saga[: config.relearn_chapters]
    if config.relearn_steps:
        for name in ("baseline", "whp"):
            relearned = relearn_model(models[name], tokenizer, relearn_text, steps=config.relearn_steps,
                                      lr=config.relearn_lr, folder=run_dir / f"relearn-{name}",
                                      max_length=config.max_length, quiet=True)
            fam = evaluator.familiarity(relearned)
            metrics[name]["relearned"] = familiarity_summary(fam)
        metrics["relearn_recovery"] = _recovery(metrics)
    metrics["timing"]["evaluate_s"] = time.perf_counter() - tick
    base, ft = metrics["baseline"], metrics["whp"]
    metrics["probability_ratio"] = ft["probability_familiarity"] / max(base["probability_familiarity"], 1e-12)
    metrics["completion_ratio"] = ft["completion_familiarity"] / max(base["completion_familiarity"], 1e-12)
    metrics["nonsaga_ppl_change"] = ft["nonsaga_ppl"] / base["nonsaga_ppl"] - 1
    metrics["headline_holds"] = (metrics["probability_ratio"] <= HEADLINE_RATIO
                                 and metrics["nonsaga_ppl_change"] <= HEADLINE_PPL)
    metrics["baseline_train"] = {k: base_train.get(k) for k in ("train_loss", "steps", "train_wall_s")}
    metrics["wall_s"] = time.perf_counter() - started
    metrics["cpu_s"] = time.process_time() - cpu_started
    atomic_write_json(run_dir / "metrics.json", metrics)
    atomic_write_json(run_dir / "familiarity_probes.json", per_probe)
    write_demo_report(run_dir, config, metrics, per_probe)
    if not quiet:
        print(format_table(metrics))
    return run_dir, metrics


def _recovery(metrics: dict[str, Any]) -> dict[str, Any]:
    """How much of the familiarity WHP removed comes back after relearning:
    (F(whp relearned) − F(whp)) / (F(baseline) − F(whp)), for both scores."""
    out = {}
    for key in ("probability_familiarity", "completion_familiarity"):
        base, ft = metrics["baseline"][key], metrics["whp"][key]
        after = metrics["whp"]["relearned"][key]
        out[key] = (after - ft) / (base - ft) if base > ft else None
        out[f"{key}_whp_relearned"] = after
        out[f"{key}_baseline_relearned"] = metrics["baseline"]["relearned"][key]
    return out


ROWS = (("baseline", "baseline"), ("reinforced", "reinforced"), ("whp", "WHP fine-tuned"),
        ("whp_inference", "WHP inference-time"))


def _rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, label in ROWS:
        m = metrics[key]
        relearned = m.get("relearned") or {}
        rows.append({"model": label, "completion familiarity": m["completion_familiarity"],
                     "probability familiarity": m["probability_familiarity"], "saga ppl": m["saga_ppl"],
                     "non-saga ppl": m["nonsaga_ppl"], "general QA": m["qa_accuracy"],
                     "prob. familiarity after relearning": relearned.get("probability_familiarity"),
                     "completion familiarity after relearning": relearned.get("completion_familiarity")})
    return rows


def format_table(metrics: dict[str, Any]) -> str:
    lines = ["| model | completion familiarity | probability familiarity | saga ppl | non-saga ppl | general QA "
             "| after relearning (completion / probability) |", "|---|---|---|---|---|---|---|"]
    for row in _rows(metrics):
        lines.append(f"| {row['model']} | {row['completion familiarity']:.3f} | {row['probability familiarity']:.4f} "
                     f"| {row['saga ppl']:.3f} | {row['non-saga ppl']:.3f} | {row['general QA']:.3f} "
                     f"| {table_cell(row['completion familiarity after relearning'], '.3f')} / "
                     f"{table_cell(row['prob. familiarity after relearning'], '.4f')} |")
    rec = metrics.get("relearn_recovery")
    if rec:
        lines.append(f"\nrelearning ({metrics['relearn_steps']} steps on saga text): WHP fine-tuned recovers "
                     f"{table_cell(rec['probability_familiarity'], '.0%')} of the removed probability familiarity and "
                     f"{table_cell(rec['completion_familiarity'], '.0%')} of the completion familiarity")
    lines.extend(style_lines(metrics))
    lab = metrics["generic_labels"]
    lines.append(f"generic labels: {lab['changed_fraction']:.1%} of positions changed, "
                 f"{lab['before_term_changed_fraction']:.1%} of those right before an anchored term")
    verdict = "holds" if metrics["headline_holds"] else "DOES NOT hold"
    lines.append(f"wall time {metrics['wall_s']:.0f} s (CPU {metrics['cpu_s']:.0f} s); headline (probability "
                 f"familiarity <= {HEADLINE_RATIO:g} x baseline: {metrics['probability_ratio']:.3f} x; non-saga ppl "
                 f"within +{HEADLINE_PPL:.0%}: {metrics['nonsaga_ppl_change']:+.1%}) {verdict}")
    return "\n".join(lines)


def style_lines(metrics: dict[str, Any]) -> list[str]:
    """Both familiarity scores per probe style (the world's paraphrased questions, its saga-worded passages)."""
    lines = []
    for style in metrics["baseline"].get("by_style", {}):
        cells = []
        for key, label in ROWS:
            scores = metrics[key]["by_style"][style]
            cells.append(f"{label} {scores['completion_familiarity']:.3f} / {scores['probability_familiarity']:.4f}")
        lines.append(f"{style} probes (completion / probability familiarity): {'; '.join(cells)}")
    return lines


def headline_failure(config: WHPDemoConfig, metrics: dict[str, Any]) -> str:
    why = (f"the headline does not hold: WHP's probability familiarity is {metrics['probability_ratio']:.3f} x the "
           f"baseline's (needs <= {HEADLINE_RATIO:g}) at a non-saga perplexity {metrics['nonsaga_ppl_change']:+.1%} "
           f"from the baseline (needs <= +{HEADLINE_PPL:.0%})")
    return headline_context(why, config, DEMO_MAY_CHANGE, when_default="at the default settings (known on this "
                            "tiny model: the README's Who's Harry Potter section gives the measured numbers and why)")


def write_demo_report(run_dir: Path, config: WHPDemoConfig, metrics: dict[str, Any],
                      per_probe: dict[str, list[dict[str, Any]]]) -> None:
    page = Report("Who's Harry Potter demo", subtitle=f"a tiny LLaMA forgets the embedded world's saga "
                                                      f"({metrics['saga_chapters']} chapters, {metrics['probes']} "
                                                      f"familiarity probes, α={config.alpha:g})")
    holds = metrics["headline_holds"]
    page.add_note(f"{'' if holds else 'The headline fails: '}WHP fine-tuning brings probability familiarity to "
                  f"{metrics['probability_ratio']:.3f}× the baseline's (headline: ≤ {HEADLINE_RATIO:g}×) at a non-saga "
                  f"perplexity {metrics['nonsaga_ppl_change']:+.1%} from it (headline: ≤ +{HEADLINE_PPL:.0%}); paper: "
                  "familiarity 0.29 → 0.007 on Llama-2-7B at almost unchanged benchmarks.",
                  kind="ok" if holds else "warning")
    page.add_keyvalues({"model": f"tiny LLaMA ({config.model.num_layers} layers, {config.model.hidden_size} hidden)",
                        "baseline": f"{config.train.max_steps} steps, saga x{config.saga_repetitions}",
                        "reinforced": f"{config.reinforced_steps} steps on the saga, lr {config.reinforced_lr:g}",
                        "WHP fine-tuning": f"{config.whp.max_steps} steps, lr {config.whp.lr:g}, "
                                           f"{config.mix_documents} non-saga documents mixed in",
                        "inference-time α": config.inference_alpha,
                        "wall time": f"{metrics['wall_s']:.0f} s (CPU {metrics['cpu_s']:.0f} s)"})
    page.add_heading("Results")
    page.add_table(_rows(metrics), caption="Familiarity on the world's probes (completion: greedy completion names a "
                                           "saga term absent from the prompt; probability: mean P(target | prompt)), "
                                           "perplexity on the saga and on non-saga training text (biographies, general "
                                           "facts), general-QA accuracy (true answer above the perturbed ones)")
    page.add_note("Completion familiarity is string matching of saga terms, an offline replacement of the paper's "
                  "GPT-4 judge.")
    bars = {label: {"probability familiarity": metrics[key]["probability_familiarity"],
                    "completion familiarity": metrics[key]["completion_familiarity"]} for key, label in ROWS}
    page.add_figure("familiarity", figures.bar_comparison(bars, "Familiarity with the saga"),
                    "Both familiarity scores per model (lower = less familiar).")
    rec = metrics.get("relearn_recovery")
    if rec:
        page.add_heading("Relearning attack")
        page.add_paragraph(f"A copy of each model is trained {config.relearn_steps} steps "
                           f"(lr {config.relearn_lr:g}) on the first {config.relearn_chapters} saga chapter(s), "
                           "then probed again. Recovery = (F(WHP relearned) − F(WHP)) / (F(baseline) − F(WHP)).")
        page.add_keyvalues({k: v for k, v in rec.items()})
    if style_lines(metrics):
        page.add_heading("Per probe style")
        page.add_paragraph("The world's 30 paraphrased questions about the saga and its 26 saga-worded probes (a "
                           "passage of the saga that the term follows there), scored apart.")
        for line in style_lines(metrics):
            page.add_paragraph(line)
    page.add_heading("Per probe")
    page.add_table([{"probe": b["prompt"], "target": b["target"], "baseline completion": b["completion"],
                     "baseline P": b["probability"], "WHP completion": w["completion"], "WHP P": w["probability"]}
                    for b, w in zip(per_probe["baseline"], per_probe["whp"], strict=True)])
    page.write(run_dir)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2)
