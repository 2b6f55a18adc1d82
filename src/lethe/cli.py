"""``lethe <command>``: the command-line interface.

Commands: ``data fictional``, ``train``, ``unlearn``, ``eval tofu``,
``audit extraction|mia|canaries|familiarity|relearn``, ``memsinks bake``, ``whp discover``, ``report``,
``demo goldfish|goldfish-standard|unlearn|memsinks|whp``.
Every command writes a run directory; bad input (bad arguments included) ends with one line
``error: <what is wrong>`` and exit code 2. A demo exits 1 when its headline does not hold.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from lethe.errors import LetheError


class UsageError(Exception):
    """Bad command-line arguments; :func:`main` prints it as one line and returns 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``error: <what> (see <prog> --help)``) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _quiet_libraries(quiet: bool) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"


def cmd_data_fictional(args: argparse.Namespace) -> None:
    from lethe.data.fictional import generate_world
    from lethe.runs import check_output_dir

    if args.authors < 1:
        raise LetheError(f"--authors must be >= 1, got {args.authors}")
    check_output_dir(args.out, "--out")
    summary = generate_world(args.out, n_authors=args.authors, seed=args.seed)
    if not args.quiet:
        print(f"wrote the fictional world ({args.authors} authors, seed {args.seed}) to {args.out}")
        print(summary)


def _split_config_and_overrides(items: Sequence[str]) -> tuple[str | None, list[str]]:
    if items and "=" not in items[0]:
        return items[0], list(items[1:])
    return None, list(items)


def cmd_train(args: argparse.Namespace) -> None:
    from lethe.config import TrainConfig, load_config
    from lethe.train.trainer import run_training

    path, overrides = _split_config_and_overrides(args.config)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    config = load_config(TrainConfig, path, overrides)
    run_dir, metrics = run_training(config, quiet=args.quiet)
    print(f"run directory: {run_dir}")
    if not args.quiet:
        print(json.dumps({k: metrics[k] for k in ("steps", "train_loss", "supervised_tokens")}, indent=2))


def cmd_audit_extraction(args: argparse.Namespace) -> None:
    from lethe.audit.commands import ExtractionSettings, audit_extraction

    if args.suffix_len < 1:
        raise LetheError(f"--suffix-len must be >= 1, got {args.suffix_len}")
    if args.num_beams < 1:
        raise LetheError(f"--num-beams must be >= 1, got {args.num_beams}")
    if args.limit < 0:
        raise LetheError(f"--limit must be >= 0 (0 = every document), got {args.limit}")
    if args.prefix_len < 0:
        raise LetheError(f"--prefix-len must be >= 0 (0 = everything before the suffix), got {args.prefix_len}")
    if args.batch_size < 1:
        raise LetheError(f"--batch-size must be >= 1, got {args.batch_size}")
    settings = ExtractionSettings(model=args.model, data=args.data, suffix_len=args.suffix_len,
                                  prefix_len=args.prefix_len, batch_size=args.batch_size, limit=args.limit,
                                  num_beams=args.num_beams, any_of_beams=args.any_of_beams, semantic=args.semantic,
                                  memsinks_mode=args.memsinks_mode or "", memsinks_ids=_ids(args.memsinks_ids))
    run_dir, summary = audit_extraction(settings, args.run_dir)
    _finish(args, run_dir, summary)


def cmd_audit_mia(args: argparse.Namespace) -> None:
    from lethe.audit.commands import MIASettings, audit_mia

    try:
        ks = [float(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        ks = []
    if not ks or any(not 0 < k <= 1 for k in ks):  # NaN fails this too
        raise LetheError(f"--ks must be comma-separated fractions in (0, 1], got {args.ks!r}")
    settings = MIASettings(model=args.model, members=args.members, nonmembers=args.nonmembers,
                           reference=args.reference or "", ks=ks, gradnorm=args.gradnorm,
                           max_length=args.max_length, batch_size=args.batch_size,
                           n_bootstrap=args.bootstrap, seed=args.seed, protocol=args.protocol,
                           add_eos=args.add_eos, gradnorm_p=args.gradnorm_p or "",
                           memsinks_mode=args.memsinks_mode or "", memsinks_ids=_ids(args.memsinks_ids))
    run_dir, summary = audit_mia(settings, args.run_dir)
    _finish(args, run_dir, summary)


def _ids(text: str | None) -> list[int]:
    """``--memsinks-ids 3,17``: positive integer document IDs."""
    if not text:
        return []
    try:
        ids = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise LetheError(f"--memsinks-ids must be comma-separated integers, got {text!r}") from None
    if any(i < 1 for i in ids):
        raise LetheError(f"--memsinks-ids must be >= 1, got {text!r}")
    return ids


def cmd_memsinks_bake(args: argparse.Namespace) -> None:
    from lethe.runs import check_output_dir
    from lethe.train.memsinks import bake_model_folder

    check_output_dir(args.out, "--out")
    out = bake_model_folder(args.model, args.out, args.mode, ids=_ids(args.ids))
    print(f"baked MemSinks mode '{args.mode}' into {out}")


def cmd_audit_canaries(args: argparse.Namespace) -> None:
    from lethe.audit.commands import CanarySettings, audit_canaries

    settings = CanarySettings(model=args.model, canaries=args.canaries, n_samples=args.samples, seed=args.seed)
    run_dir, summary = audit_canaries(settings, args.run_dir)
    _finish(args, run_dir, summary)


def cmd_audit_familiarity(args: argparse.Namespace) -> None:
    from lethe.audit.commands import FamiliaritySettings, audit_familiarity

    if args.reinforced and not args.alpha > 0:
        raise LetheError(f"--alpha must be > 0, got {args.alpha}")
    settings = FamiliaritySettings(model=args.model, probes=args.probes, terms=args.terms or "",
                                   reinforced=args.reinforced or "", alpha=args.alpha,
                                   max_new_tokens=args.max_new_tokens)
    run_dir, summary = audit_familiarity(settings, args.run_dir)
    _finish(args, run_dir, summary)


def cmd_audit_relearn(args: argparse.Namespace) -> None:
    from lethe.audit.relearn import RelearnSettings, audit_relearn

    settings = RelearnSettings(model=args.model, data=args.data, steps=args.steps, lr=args.lr,
                               probes=args.probes or "", terms=args.terms or "", baseline=args.baseline or "",
                               tofu_data=args.tofu_data or "", split=args.split, limit=args.limit)
    run_dir, summary = audit_relearn(settings, args.run_dir)
    _finish(args, run_dir, summary)


def cmd_whp_discover(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lethe.models import load_model
    from lethe.unlearn.whp import check_same_vocabulary
    from lethe.unlearn.whp_discover import discover_terms, write_candidates
    from lethe.unlearn.whp_run import load_target

    if args.top_k < 1 or args.min_count < 1:
        raise LetheError("--top-k and --min-count must be >= 1")
    texts = load_target(args.target)
    baseline, tokenizer = load_model(args.baseline)
    reinforced, reinforced_tokenizer = load_model(args.reinforced)
    check_same_vocabulary(tokenizer, reinforced_tokenizer, baseline, reinforced, where="--reinforced")
    candidates = discover_terms(baseline, reinforced, tokenizer, texts, top_k=args.top_k, min_count=args.min_count)
    out = write_candidates(Path(args.out), candidates)
    print(f"wrote {len(candidates)} candidate terms to {out} (fill in generic alternatives, then pass it as whp.terms)")
    if not args.quiet:
        for c in candidates[:20]:
            print(f"  {c['score']:+.3f}  x{c['count']:<3} {c['term']}")


def cmd_report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from lethe.report import compare_runs
    from lethe.runs import open_run

    with open_run("report", args.out, allow_legacy=False) as run:
        html = compare_runs([Path(r) for r in args.runs], run.path)
        run.mark("finished")
    print(f"report: {html}")


def _finish(args: argparse.Namespace, run_dir, summary) -> None:
    print(f"run directory: {run_dir}")
    if not args.quiet:
        print(json.dumps(summary, indent=2))


def cmd_unlearn(args: argparse.Namespace) -> None:
    from lethe.config import load_config
    from lethe.unlearn.config import UnlearnConfig
    from lethe.unlearn.evaluation import unlearn_and_evaluate

    path, overrides = _split_config_and_overrides(args.config)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    config = load_config(UnlearnConfig, path, overrides)
    run_dir, metrics = unlearn_and_evaluate(config, quiet=args.quiet)
    keys = ("method", "steps", "train_loss", "forget_prob_before", "forget_prob_after", "tofu", "sacrifice_rate",
            "target_nll_before", "target_nll_after", "generic_labels")
    _finish(args, run_dir, {k: metrics[k] for k in keys if k in metrics})


def cmd_eval_tofu(args: argparse.Namespace) -> None:
    from lethe.audit.commands import TofuEvalSettings, eval_tofu

    if args.limit < 0:
        raise LetheError(f"--limit must be >= 0, got {args.limit}")
    settings = TofuEvalSettings(model=args.model, data=args.data, split=args.split,
                                retain_eval=args.retain_eval or "", limit=args.limit,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                protocol=args.protocol, system_prompt=args.system_prompt,
                                date_string=args.date_string)
    run_dir, summary = eval_tofu(settings, args.run_dir)
    _finish(args, run_dir, summary)


def _demo_config(args: argparse.Namespace, schema: type):
    """A demo's config: the schema's defaults <- ``--config`` <- overrides <- ``--run-dir``."""
    from lethe.config import load_config

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    return load_config(schema, args.config, overrides)


def _headline_status(demo, config, metrics) -> int:
    """0 when the demo's headline holds, else its one-line reason on stderr and 1."""
    if metrics["headline_holds"]:
        return 0
    print(f"error: {demo.headline_failure(config, metrics)}", file=sys.stderr)
    return 1


def cmd_demo_goldfish(args: argparse.Namespace) -> int:
    from lethe.demo import goldfish

    config = _demo_config(args, goldfish.GoldfishDemoConfig)
    _, metrics = goldfish.run_goldfish_demo(config, quiet=args.quiet)
    return _headline_status(goldfish, config, metrics)


def cmd_demo_goldfish_standard(args: argparse.Namespace) -> int:
    from lethe.demo import goldfish_standard as demo

    config = _demo_config(args, demo.GoldfishStandardDemoConfig)
    _, metrics = demo.run_goldfish_standard_demo(config, quiet=args.quiet)
    return _headline_status(demo, config, metrics)


def cmd_demo_unlearn(args: argparse.Namespace) -> None:
    from lethe.demo.unlearn import UnlearnDemoConfig, run_unlearn_demo

    run_unlearn_demo(_demo_config(args, UnlearnDemoConfig), quiet=args.quiet)


def cmd_demo_memsinks(args: argparse.Namespace) -> int:
    from lethe.demo import memsinks

    config = _demo_config(args, memsinks.MemSinksDemoConfig)
    _, metrics = memsinks.run_memsinks_demo(config, quiet=args.quiet)
    return _headline_status(memsinks, config, metrics)


def cmd_demo_whp(args: argparse.Namespace) -> int:
    from lethe.demo import whp

    config = _demo_config(args, whp.WHPDemoConfig)
    _, metrics = whp.run_whp_demo(config, quiet=args.quiet)
    return _headline_status(whp, config, metrics)


def _memsinks_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memsinks-mode", choices=("all", "dropout", "exclude", "activate"),
                        help="audit a MemSinks model in this mode (needs its memsinks.json): dropout = sinks off")
    parser.add_argument("--memsinks-ids", help="document IDs for --memsinks-mode exclude (several) / activate (one)")


def _group(commands: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command with subcommands (``lethe audit extraction``): its subparsers action."""
    return commands.add_parser(name, help=help).add_subparsers(dest="what", required=True, metavar="SUBCOMMAND")


def build_parser() -> argparse.ArgumentParser:
    from lethe import __version__

    parser = Parser(prog="lethe", description="Prevent, remove and audit memorization in LLMs.")
    parser.add_argument("--version", action="version", version=f"lethe {__version__}")
    common = Parser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = _group(commands, "data", "generate data sets")
    fictional = data.add_parser("fictional", parents=[common], help="write the embedded fictional world")
    fictional.add_argument("--out", required=True, help="output folder")
    fictional.add_argument("--authors", type=int, default=100, help="number of authors (default 100)")
    fictional.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same bytes)")
    fictional.set_defaults(func=cmd_data_fictional)

    train = commands.add_parser("train", parents=[common], help="train / fine-tune a causal LM (goldfish optional)",
                                description="lethe train [CONFIG.yaml] [key=value ...], e.g. "
                                            "lethe train configs/goldfish.yaml train.goldfish.k=3")
    train.add_argument("config", nargs="*", help="a YAML config, then dotted overrides key=value")
    train.add_argument("--run-dir", help="run directory (re-run the same one to resume)")
    train.set_defaults(func=cmd_train)

    unlearn = commands.add_parser("unlearn", parents=[common], help="unlearn a forget set (GA/GD/KL/NPO/SimNPO/IdkPO"
                                  ", optionally GUARD-weighted), then TOFU-evaluate; or a text (method=whp)",
                                  description="lethe unlearn [CONFIG.yaml] [key=value ...], e.g. lethe unlearn "
                                              "configs/unlearn.yaml method=npo guard.enabled=true")
    unlearn.add_argument("config", nargs="*", help="a YAML config, then dotted overrides key=value")
    unlearn.add_argument("--run-dir", help="run directory (re-run the same one to resume)")
    unlearn.set_defaults(func=cmd_unlearn)

    evaluate = _group(commands, "eval", "benchmark evaluations")
    tofu = evaluate.add_parser("tofu", parents=[common], help="TOFU metrics (open-unlearning formulas)")
    tofu.add_argument("--model", required=True, help="model folder or preset")
    tofu.add_argument("--data", default="embedded", help="TOFU-format folder (e.g. ../shared/data/tofu) or 'embedded'")
    tofu.add_argument("--split", default="forget10", help="forget split (forget01, forget05, forget10)")
    tofu.add_argument("--retain-eval", help="the retain model's tofu_eval.json or open-unlearning TOFU_EVAL.json "
                                            "(for forget_quality, privleak)")
    tofu.add_argument("--protocol", choices=("open-unlearning", "lethe"), default="open-unlearning",
                      help="input protocol: open-unlearning (default; leaderboard-comparable tokens, masks and "
                           "generation) or lethe (every answer token scored once, nothing masked)")
    tofu.add_argument("--system-prompt", default="",
                      help="system message (open-unlearning's instruct configs: 'You are a helpful assistant.')")
    tofu.add_argument("--date-string", default="", help="date for chat templates that print one (Llama 3.x)")
    tofu.add_argument("--limit", type=int, default=0, help="items per split (0 = all)")
    tofu.add_argument("--max-new-tokens", type=int, default=200)
    tofu.add_argument("--batch-size", type=int, default=16)
    tofu.add_argument("--run-dir", help="run directory")
    tofu.set_defaults(func=cmd_eval_tofu)

    audit = _group(commands, "audit", "measure memorization")
    extraction = audit.add_parser("extraction", parents=[common], help="verbatim extraction: prefix -> greedy suffix")
    extraction.add_argument("--model", required=True, help="model folder or preset (smollm2-135m)")
    extraction.add_argument("--data", default="embedded",
                            help="documents file (JSONL with id/text, or .txt), a world folder, or 'embedded'")
    extraction.add_argument("--suffix-len", type=int, default=50, help="tokens to extract (default 50)")
    extraction.add_argument("--prefix-len", type=int, default=0, help="prefix tokens (default 0 = all before)")
    extraction.add_argument("--batch-size", type=int, default=32)
    extraction.add_argument("--limit", type=int, default=0, help="audit only the first N documents")
    extraction.add_argument("--num-beams", type=int, default=1, help="beam-search attack with B beams (default 1)")
    extraction.add_argument("--any-of-beams", action="store_true",
                            help="a document counts as extracted if any of the B beams matches (upper bound)")
    extraction.add_argument("--semantic", action="store_true",
                            help="add BERTScore-style similarity (offline all-MiniLM-L6-v2 featurizer)")
    extraction.add_argument("--run-dir", help="run directory")
    _memsinks_options(extraction)
    extraction.set_defaults(func=cmd_audit_extraction)

    mia = audit.add_parser("mia", parents=[common], help="membership inference: loss, zlib, min-k, min-k++, ref")
    mia.add_argument("--model", required=True, help="target model folder or preset")
    mia.add_argument("--members", required=True, help="member documents (JSONL id/text, .txt, or a world folder)")
    mia.add_argument("--nonmembers", required=True, help="non-member documents")
    mia.add_argument("--reference", help="reference model for the reference attack")
    mia.add_argument("--ks", default="0.2,0.4", help="min-k / min-k++ fractions (default 0.2,0.4)")
    mia.add_argument("--gradnorm", action="store_true", help="also the gradient-norm attack (slow: batch-1 backward)")
    mia.add_argument("--gradnorm-p", choices=("1", "2", "inf"),
                     help="gradient norm (default: 2 under lethe, inf = MIMIR's under mimir)")
    mia.add_argument("--protocol", choices=("lethe", "mimir"), default="lethe",
                     help="lethe (default: documented deviations) or mimir (MIMIR's per-sample scores exactly)")
    mia.add_argument("--add-eos", action="store_true", help="also score an appended EOS (lethe protocol)")
    mia.add_argument("--max-length", type=int, default=0,
                     help="sliding-window size in tokens (default 0 = the model's maximum positions, as MIMIR); "
                          "longer texts are scored window by window, never truncated")
    mia.add_argument("--batch-size", type=int, default=16)
    mia.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0 = none)")
    mia.add_argument("--seed", type=int, default=0)
    mia.add_argument("--run-dir", help="run directory")
    _memsinks_options(mia)
    mia.set_defaults(func=cmd_audit_mia)

    canaries = audit.add_parser("canaries", parents=[common], help="canary exposure (Secret Sharer), in bits")
    canaries.add_argument("--model", required=True, help="model folder or preset")
    canaries.add_argument("--canaries", default="embedded", help="canaries JSONL, a world folder, or 'embedded'")
    canaries.add_argument("--samples", type=int, default=2000, help="sampled candidates per canary")
    canaries.add_argument("--seed", type=int, default=0)
    canaries.add_argument("--run-dir", help="run directory")
    canaries.set_defaults(func=cmd_audit_canaries)

    familiarity = audit.add_parser("familiarity", parents=[common],
                                   help="familiarity with a target text (WHP): completion- and probability-based")
    familiarity.add_argument("--model", required=True, help="model folder or preset")
    familiarity.add_argument("--probes", default="embedded",
                             help="familiarity probes JSONL (prompt, target), a world folder, or 'embedded'")
    familiarity.add_argument("--terms", help="anchored-term dictionary JSON: its keys also count as familiar")
    familiarity.add_argument("--reinforced", help="audit the inference-time WHP model of --model and this "
                                                  "reinforced model: v_b - alpha * ReLU(v_r - v_b)")
    familiarity.add_argument("--alpha", type=float, default=1.0, help="inference-time WHP alpha (default 1, MUSE)")
    familiarity.add_argument("--max-new-tokens", type=int, default=12)
    familiarity.add_argument("--run-dir", help="run directory")
    familiarity.set_defaults(func=cmd_audit_familiarity)

    relearn = audit.add_parser("relearn", parents=[common],
                               help="relearning attack: fine-tune a copy briefly on target text, audit again")
    relearn.add_argument("--model", required=True, help="the unlearned model folder (any method)")
    relearn.add_argument("--data", required=True, help="the relearning text: documents JSONL or .txt (a few "
                                                       "hundred tokens)")
    relearn.add_argument("--steps", type=int, default=10, help="fine-tuning steps (default 10)")
    relearn.add_argument("--lr", type=float, default=1e-3)
    relearn.add_argument("--probes", help="familiarity probes (the WHP audit)")
    relearn.add_argument("--terms", help="anchored-term dictionary for the completion familiarity")
    relearn.add_argument("--tofu-data", help="TOFU-format folder (or 'embedded'): forget ROUGE / probability audit")
    relearn.add_argument("--split", default="forget10", help="forget split for --tofu-data")
    relearn.add_argument("--limit", type=int, default=0, help="TOFU items per split (0 = all)")
    relearn.add_argument("--baseline", help="the model before unlearning: adds the recovery fraction")
    relearn.add_argument("--run-dir", help="run directory")
    relearn.set_defaults(func=cmd_audit_relearn)

    whp_group = _group(commands, "whp", "Who's Harry Potter helpers")
    discover = whp_group.add_parser("discover", parents=[common],
                                    help="rank candidate anchored terms by the reinforced-vs-baseline logit gap")
    discover.add_argument("--baseline", required=True, help="baseline model folder")
    discover.add_argument("--reinforced", required=True, help="reinforced model folder (same tokenizer)")
    discover.add_argument("--target", required=True, help="the target text (.txt / JSONL documents)")
    discover.add_argument("--out", default="anchored_terms_candidates.json", help="output JSON")
    discover.add_argument("--top-k", type=int, default=50)
    discover.add_argument("--min-count", type=int, default=2, help="minimum occurrences of a candidate")
    discover.set_defaults(func=cmd_whp_discover)

    memsinks = _group(commands, "memsinks", "MemSinks models")
    bake = memsinks.add_parser("bake", parents=[common], help="fold a MemSinks mode into a plain HF model",
                               description="lethe memsinks bake MODEL --mode dropout --out DIR: the saved model "
                                           "gives the hooked model's logits with no hooks")
    bake.add_argument("model", help="a model folder trained with train.memsinks.enabled (has memsinks.json)")
    bake.add_argument("--mode", required=True, choices=("all", "dropout", "exclude", "activate"),
                      help="dropout = sinks off (the deletion); all = sinks x p_mem; exclude = all without the "
                           "sinks of --ids; activate = shared + the sinks of one ID")
    bake.add_argument("--ids", help="document IDs for exclude (comma-separated) / activate (one)")
    bake.add_argument("--out", required=True, help="output folder (must not exist)")
    bake.set_defaults(func=cmd_memsinks_bake)

    report = commands.add_parser("report", parents=[common], help="compare several runs in one HTML page")
    report.add_argument("runs", nargs="+", help="run directories (metrics.json, or the audit files of a demo arm)")
    report.add_argument("--out", help="output directory (default runs/report-<timestamp>)")
    report.set_defaults(func=cmd_report)

    demo = _group(commands, "demo", "end-to-end demos")
    goldfish = demo.add_parser("goldfish", parents=[common],
                               help="standard vs goldfish training on the embedded world, then audit both")
    goldfish.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=300 goldfish.k=3")
    goldfish.add_argument("--config", help="YAML config for the demo")
    goldfish.add_argument("--run-dir", help="run directory")
    goldfish.set_defaults(func=cmd_demo_goldfish)
    standard = demo.add_parser("goldfish-standard", parents=[common],
                               help="the goldfish paper's standard-training scenario: repeated targets among "
                                    "unrepeated data, standard / goldfish k=3, k=4 / a control, audited")
    standard.add_argument("overrides", nargs="*", help="dotted overrides, e.g. repetitions=20 train.max_steps=100")
    standard.add_argument("--config", help="YAML config for the demo")
    standard.add_argument("--run-dir", help="run directory (re-run the same one to reuse trained arms)")
    standard.set_defaults(func=cmd_demo_goldfish_standard)
    demo_unlearn = demo.add_parser("unlearn", parents=[common],
                                   help="GD and NPO with and without GUARD on the embedded world (TOFU metrics)")
    demo_unlearn.add_argument("overrides", nargs="*",
                              help="dotted overrides, e.g. world_authors=20 unlearn.lr=5e-4 investigate=true")
    demo_unlearn.add_argument("--config", help="YAML config for the demo")
    demo_unlearn.add_argument("--run-dir", help="run directory (re-run the same one to reuse finished stages)")
    demo_unlearn.set_defaults(func=cmd_demo_unlearn)
    demo_memsinks = demo.add_parser("memsinks", parents=[common],
                                    help="standard vs MemSinks training with heavily repeated documents, then "
                                         "the sinks switched off (the paper's TinyStories experiment in miniature)")
    demo_memsinks.add_argument("overrides", nargs="*", help="dotted overrides, e.g. repetitions=30 train.max_steps=200")
    demo_memsinks.add_argument("--config", help="YAML config for the demo")
    demo_memsinks.add_argument("--run-dir", help="run directory (re-run the same one to reuse trained arms)")
    demo_memsinks.set_defaults(func=cmd_demo_memsinks)
    demo_whp = demo.add_parser("whp", parents=[common],
                               help="Who's Harry Potter: a tiny model forgets the embedded world's saga (generic "
                                    "labels, fine-tuned and inference-time), familiarity and relearning audits")
    demo_whp.add_argument("overrides", nargs="*", help="dotted overrides, e.g. alpha=2.5 whp.max_steps=100")
    demo_whp.add_argument("--config", help="YAML config for the demo")
    demo_whp.add_argument("--run-dir", help="run directory (re-run the same one to reuse trained arms)")
    demo_whp.set_defaults(func=cmd_demo_whp)
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parsed arguments; dotted overrides may follow options (``lethe train cfg.yaml --quiet train.lr=0.1``)."""
    args, extra = build_parser().parse_known_args(argv)
    # demos have --config (a path) and the positional `overrides`; train / unlearn the positional `config`
    positional = "overrides" if hasattr(args, "overrides") else "config" if hasattr(args, "config") else None
    if extra and positional and all("=" in item and not item.startswith("-") for item in extra):
        setattr(args, positional, [*(getattr(args, positional) or []), *extra])
    elif extra:
        prog = " ".join(["lethe", *(getattr(args, key) for key in ("command", "what") if hasattr(args, key))])
        raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see {prog} --help)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _quiet_libraries(getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except LetheError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (re-run with the same --run-dir to resume)", file=sys.stderr)
        return 130
    except OSError as err:  # the disk, not the input: full, read-only, permissions
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
