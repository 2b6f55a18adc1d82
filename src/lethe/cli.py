"""``lethe <command>``: the command-line interface.

Commands: ``data fictional``, ``train``, ``unlearn``, ``eval tofu``,
``audit extraction|mia|canaries|familiarity|relearn|all``, ``memsinks bake``, ``whp discover``, ``report``,
``config list|show``, ``demo goldfish|goldfish-standard|unlearn|memsinks|whp``.

Conventions (the same for every command):

- global options ``--quiet`` (no progress bars or tables) and ``--json`` (stdout is only the command's summary
  as one JSON object; everything else goes to stderr) work before or after the command;
- a config is ``[CONFIG.yaml] [key=value ...]``, positional (``lethe train cfg.yaml train.lr=0.1``); ``--config
  CONFIG.yaml`` is the same. ``--print-config`` prints the resolved config (defaults <- file <- overrides) as
  YAML and exits without running;
- the output directory is ``--run-dir DIR`` (``--out DIR`` is the same), default ``runs/<command>-<timestamp>``
  (``whp discover --out`` names a file).

Every command writes a run directory; bad input (bad arguments included) ends with one line
``error: <what is wrong>`` and exit code 2. A demo exits 1 when its headline does not hold.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from lethe.errors import LetheError
from lethe.threads import apply_default_threads


class UsageError(Exception):
    """Bad command-line arguments; :func:`main` prints it as one line and returns 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``error: <what> (see <prog> --help)``) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


@dataclass
class Outcome:
    """What a command did: its summary (``--json`` prints it), its run directory, the lines it prints."""

    summary: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    lines: list[str] = field(default_factory=list)  # always printed (not with --json)
    details: str = ""  # printed unless --quiet (not with --json)
    status: int = 0  # the exit code

    def as_json(self, command: str) -> str:
        return json.dumps({"command": command, "status": self.status,
                           "run_dir": str(self.run_dir) if self.run_dir is not None else None,
                           "summary": self.summary}, default=str)


def _ran(run_dir: Path, summary: dict[str, Any]) -> Outcome:
    """The outcome of a command that wrote a run directory: its path, then the summary unless --quiet."""
    return Outcome(summary=summary, run_dir=Path(run_dir), lines=[f"run directory: {run_dir}"],
                   details=json.dumps(summary, indent=2, default=str))


def _quiet_libraries(quiet: bool) -> None:
    from lethe.progress import set_quiet

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    set_quiet(quiet)  # Lethe's own progress (lethe.progress): per call, so one --quiet does not outlive it


def cmd_data_fictional(args: argparse.Namespace) -> Outcome:
    from lethe.data.fictional import generate_world, write_audit_sets
    from lethe.runs import check_output_dir

    if args.authors < 1:
        raise LetheError(f"--authors must be >= 1, got {args.authors}")
    if args.holdout is not None and args.holdout < 1:
        raise LetheError(f"--holdout must be >= 1, got {args.holdout}")
    check_output_dir(args.run_dir, "--run-dir")
    summary = generate_world(args.run_dir, n_authors=args.authors, seed=args.seed, n_holdout=args.holdout)
    audit_sets = write_audit_sets(summary.out_dir)
    return Outcome(summary={"out_dir": str(summary.out_dir), "n_authors": summary.n_authors,
                            "n_holdout": summary.n_holdout, "seed": summary.seed, "files": summary.files,
                            "audit_sets": audit_sets},
                   run_dir=summary.out_dir,
                   lines=[f"wrote the fictional world ({args.authors} authors, seed {args.seed}) to {args.run_dir}"],
                   details=f"{summary}\nmembers.jsonl: {audit_sets['members.jsonl']} biographies of the trained "
                           f"authors, nonmembers.jsonl: {audit_sets['nonmembers.jsonl']} of the holdout authors")


def _config_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """``[CONFIG.yaml] [key=value ...]`` (positional) or ``--config CONFIG.yaml [key=value ...]``."""
    items = list(args.config)
    if args.config_file:
        if items and "=" not in items[0]:
            raise LetheError(f"two configs given ({args.config_file} with --config and {items[0]}); "
                             "give one, positionally or with --config")
        return args.config_file, items
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def _load(args: argparse.Namespace, schema: type):
    """The command's config: the schema's defaults <- the config file <- overrides <- ``--run-dir``."""
    from lethe.config import load_config

    path, overrides = _config_and_overrides(args)
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    return load_config(schema, path, overrides)


def _printed_config(config: Any) -> Outcome:
    """``--print-config``: the resolved config as YAML (``--json``: as an object), nothing run."""
    from omegaconf import OmegaConf

    from lethe.config import to_yaml

    text = to_yaml(config)
    return Outcome(summary={"config": OmegaConf.to_container(OmegaConf.structured(config))},
                   lines=[text.rstrip("\n")])


def cmd_train(args: argparse.Namespace) -> Outcome:
    from lethe.config import TrainConfig

    config = _load(args, TrainConfig)
    if args.print_config:
        return _printed_config(config)
    from lethe.train.trainer import run_training

    run_dir, metrics = run_training(config, quiet=args.quiet)
    return _ran(run_dir, {k: metrics[k] for k in ("steps", "train_loss", "supervised_tokens") if k in metrics})


def cmd_unlearn(args: argparse.Namespace) -> Outcome:
    from lethe.unlearn.config import UnlearnConfig

    config = _load(args, UnlearnConfig)
    if args.print_config:
        return _printed_config(config)
    from lethe.unlearn.evaluation import unlearn_and_evaluate

    run_dir, metrics = unlearn_and_evaluate(config, quiet=args.quiet)
    keys = ("method", "steps", "train_loss", "forget_prob_before", "forget_prob_after", "tofu", "sacrifice_rate",
            "target_nll_before", "target_nll_after", "generic_labels")
    return _ran(run_dir, {k: metrics[k] for k in keys if k in metrics})


def cmd_audit_extraction(args: argparse.Namespace) -> Outcome:
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
    return _ran(run_dir, summary)


def cmd_audit_mia(args: argparse.Namespace) -> Outcome:
    from lethe.audit.commands import MIASettings, audit_mia

    try:
        ks = [float(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        ks = []
    if not ks or any(not 0 < k <= 1 for k in ks):  # NaN fails this too
        raise LetheError(f"--ks must be comma-separated fractions in (0, 1], got {args.ks!r}")
    settings = MIASettings(model=args.model, members=args.members, nonmembers=args.nonmembers or "",
                           reference=args.reference or "", ks=ks, gradnorm=args.gradnorm,
                           max_length=args.max_length, batch_size=args.batch_size,
                           n_bootstrap=args.bootstrap, seed=args.seed, protocol=args.protocol,
                           add_eos=args.add_eos, gradnorm_p=args.gradnorm_p or "",
                           memsinks_mode=args.memsinks_mode or "", memsinks_ids=_ids(args.memsinks_ids))
    run_dir, summary = audit_mia(settings, args.run_dir)
    return _ran(run_dir, summary)


def cmd_audit_all(args: argparse.Namespace) -> Outcome:
    from lethe.audit.commands import check_positive
    from lethe.audit.suite import AuditAllSettings, audit_all

    for name in ("suffix_len", "batch_size", "samples"):
        check_positive(name, getattr(args, name))
    if args.limit < 0 or args.bootstrap < 0:
        raise LetheError("--limit and --bootstrap must be >= 0")
    settings = AuditAllSettings(data=args.data, model=args.model or "", nonmembers=args.nonmembers or "",
                                canaries=args.canaries or "", suffix_len=args.suffix_len, limit=args.limit,
                                batch_size=args.batch_size, n_bootstrap=args.bootstrap, n_samples=args.samples,
                                seed=args.seed)
    run_dir, summary = audit_all(settings, args.run_dir)
    outcome = _ran(run_dir, summary)
    outcome.lines += [f"skipped {name}: {why}" for name, why in summary["skipped"].items()]
    return outcome


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


def cmd_memsinks_bake(args: argparse.Namespace) -> Outcome:
    from lethe.runs import check_output_dir
    from lethe.train.memsinks import bake_model_folder

    check_output_dir(args.run_dir, "--run-dir")
    out = bake_model_folder(args.model, args.run_dir, args.mode, ids=_ids(args.ids))
    return Outcome(summary={"mode": args.mode, "model_dir": str(out)}, run_dir=Path(out),
                   lines=[f"baked MemSinks mode '{args.mode}' into {out}"])


def cmd_audit_canaries(args: argparse.Namespace) -> Outcome:
    from lethe.audit.commands import CanarySettings, audit_canaries

    settings = CanarySettings(model=args.model, canaries=args.canaries, n_samples=args.samples, seed=args.seed)
    run_dir, summary = audit_canaries(settings, args.run_dir)
    return _ran(run_dir, summary)


def cmd_audit_familiarity(args: argparse.Namespace) -> Outcome:
    from lethe.audit.commands import FamiliaritySettings, audit_familiarity

    if args.reinforced and not args.alpha > 0:
        raise LetheError(f"--alpha must be > 0, got {args.alpha}")
    settings = FamiliaritySettings(model=args.model, probes=args.probes, terms=args.terms or "",
                                   reinforced=args.reinforced or "", alpha=args.alpha,
                                   max_new_tokens=args.max_new_tokens)
    run_dir, summary = audit_familiarity(settings, args.run_dir)
    return _ran(run_dir, summary)


def cmd_audit_relearn(args: argparse.Namespace) -> Outcome:
    from lethe.audit.relearn import RelearnSettings, audit_relearn

    settings = RelearnSettings(model=args.model, data=args.data, steps=args.steps, lr=args.lr,
                               probes=args.probes or "", terms=args.terms or "", baseline=args.baseline or "",
                               tofu_data=args.tofu_data or "", split=args.split, limit=args.limit)
    run_dir, summary = audit_relearn(settings, args.run_dir)
    return _ran(run_dir, summary)


def cmd_whp_discover(args: argparse.Namespace) -> Outcome:
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
    return Outcome(summary={"file": str(out), "candidates": candidates[:20], "n_candidates": len(candidates)},
                   lines=[f"wrote {len(candidates)} candidate terms to {out} (fill in generic alternatives, then "
                          "pass it as whp.terms)"],
                   details="\n".join(f"  {c['score']:+.3f}  x{c['count']:<3} {c['term']}" for c in candidates[:20]))


def cmd_report(args: argparse.Namespace) -> Outcome:
    from lethe.report import compare_runs
    from lethe.runs import open_run

    with open_run("report", args.run_dir, allow_legacy=False) as run:
        html = compare_runs([Path(r) for r in args.runs], run.path)
        run.mark("finished")
    return Outcome(summary={"report": str(html), "runs": list(args.runs)}, run_dir=run.path,
                   lines=[f"report: {html}"])


def cmd_config_list(args: argparse.Namespace) -> Outcome:
    from lethe.config import config_kind, config_summary, shipped_configs

    configs = shipped_configs()
    return Outcome(summary={"configs": {name: str(path) for name, path in configs.items()}},
                   lines=[f"{name:<24} lethe {config_kind(path):<8} {config_summary(path)}"
                          for name, path in configs.items()])


def cmd_config_show(args: argparse.Namespace) -> Outcome:
    from lethe.config import shipped_config_path

    path = shipped_config_path(args.name)
    text = path.read_text(encoding="utf-8")
    return Outcome(summary={"name": args.name, "path": str(path), "yaml": text}, lines=[text.rstrip("\n")])


def cmd_eval_tofu(args: argparse.Namespace) -> Outcome:
    from lethe.audit.commands import TofuEvalSettings, eval_tofu

    if args.limit < 0:
        raise LetheError(f"--limit must be >= 0, got {args.limit}")
    settings = TofuEvalSettings(model=args.model, data=args.data, split=args.split,
                                retain_eval=args.retain_eval or "", limit=args.limit,
                                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                protocol=args.protocol, system_prompt=args.system_prompt,
                                date_string=args.date_string)
    run_dir, summary = eval_tofu(settings, args.run_dir)
    return _ran(run_dir, summary)


def _demo(args: argparse.Namespace, demo, schema: type, run, headline: bool = True) -> Outcome:
    """Run a demo module's ``run`` on its config; exit code 1 (and the one-line reason on stderr) when it has a
    headline and the headline does not hold."""
    config = _load(args, schema)
    if args.print_config:
        return _printed_config(config)
    run_dir, metrics = run(config, quiet=args.quiet)
    outcome = Outcome(summary=metrics, run_dir=Path(run_dir), lines=[f"run directory: {run_dir}  (open report.html)"])
    if headline and not metrics["headline_holds"]:
        print(f"error: {demo.headline_failure(config, metrics)}", file=sys.stderr)
        outcome.status = 1
    return outcome


def cmd_demo_goldfish(args: argparse.Namespace) -> Outcome:
    from lethe.demo import goldfish

    return _demo(args, goldfish, goldfish.GoldfishDemoConfig, goldfish.run_goldfish_demo)


def cmd_demo_goldfish_standard(args: argparse.Namespace) -> Outcome:
    from lethe.demo import goldfish_standard as demo

    return _demo(args, demo, demo.GoldfishStandardDemoConfig, demo.run_goldfish_standard_demo)


def cmd_demo_unlearn(args: argparse.Namespace) -> Outcome:
    from lethe.demo import unlearn

    return _demo(args, unlearn, unlearn.UnlearnDemoConfig, unlearn.run_unlearn_demo, headline=False)


def cmd_demo_memsinks(args: argparse.Namespace) -> Outcome:
    from lethe.demo import memsinks

    return _demo(args, memsinks, memsinks.MemSinksDemoConfig, memsinks.run_memsinks_demo)


def cmd_demo_whp(args: argparse.Namespace) -> Outcome:
    from lethe.demo import whp

    return _demo(args, whp, whp.WHPDemoConfig, whp.run_whp_demo)


def _memsinks_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memsinks-mode", choices=("all", "dropout", "exclude", "activate"),
                        help="audit a MemSinks model in this mode (needs its memsinks.json): dropout = sinks off")
    parser.add_argument("--memsinks-ids", help="document IDs for --memsinks-mode exclude (several) / activate (one)")


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--quiet`` and ``--json``, on the top parser (default False) and on every command (default unset, so
    that ``lethe --quiet train`` is not undone by the command's own default): before or after the command."""
    default = False if top else argparse.SUPPRESS
    parser.add_argument("--quiet", action="store_true", default=default, help="no progress bars or tables")
    parser.add_argument("--json", action="store_true", default=default,
                        help="print only the command's summary, as one JSON object, on stdout (the rest goes "
                             "to stderr)")


def _run_dir_option(parser: argparse.ArgumentParser, help: str = "run directory (default "
                    "runs/<command>-<timestamp>)", required: bool = False) -> None:
    parser.add_argument("--run-dir", "--out", dest="run_dir", metavar="DIR", required=required,
                        help=f"{help}; --out is the same")


def _config_options(parser: argparse.ArgumentParser, run_dir_help: str) -> None:
    """``[CONFIG.yaml] [key=value ...]``, ``--config``, ``--print-config`` and ``--run-dir``."""
    parser.add_argument("config", nargs="*", metavar="CONFIG.yaml|key=value",
                        help="a YAML config or a shipped config name (lethe config list; optional), "
                             "then dotted overrides key=value")
    parser.add_argument("--config", dest="config_file", metavar="CONFIG.yaml",
                        help="the YAML config, as an option (the same as giving it first, positionally)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (defaults <- file <- overrides) as YAML and exit")
    _run_dir_option(parser, run_dir_help)


def _group(commands: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command with subcommands (``lethe audit extraction``): its subparsers action."""
    return commands.add_parser(name, help=help).add_subparsers(dest="what", required=True, metavar="SUBCOMMAND")


def build_parser() -> argparse.ArgumentParser:
    from lethe import __version__

    parser = Parser(prog="lethe", description="Prevent, remove and audit memorization in LLMs.")
    parser.add_argument("--version", action="version", version=f"lethe {__version__}",
                        help="print the version and exit")
    _global_options(parser, top=True)
    common = Parser(add_help=False)
    _global_options(common, top=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = _group(commands, "data", "generate data sets")
    fictional = data.add_parser("fictional", parents=[common],
                                help="write the embedded fictional world, with members.jsonl / nonmembers.jsonl")
    _run_dir_option(fictional, "output folder of the world", required=True)
    fictional.add_argument("--authors", type=int, default=100, help="number of authors (default 100)")
    fictional.add_argument("--holdout", type=int, help="never-trained (holdout) authors (default: as many as "
                                                       "forget10 has, 10%% of --authors)")
    fictional.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same bytes)")
    fictional.set_defaults(func=cmd_data_fictional)

    train = commands.add_parser("train", parents=[common], help="train / fine-tune a causal LM (goldfish optional)",
                                description="lethe train [CONFIG.yaml] [key=value ...], e.g. "
                                            "lethe train configs/goldfish.yaml train.goldfish.k=3")
    _config_options(train, "run directory (re-run the same one to resume)")
    train.set_defaults(func=cmd_train)

    unlearn = commands.add_parser("unlearn", parents=[common], help="unlearn a forget set (GA/GD/KL/NPO/SimNPO/IdkPO"
                                  ", optionally GUARD-weighted), then TOFU-evaluate; or a text (method=whp)",
                                  description="lethe unlearn [CONFIG.yaml] [key=value ...], e.g. lethe unlearn "
                                              "configs/unlearn.yaml method=npo guard.enabled=true")
    _config_options(unlearn, "run directory (re-run the same one to resume)")
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
    tofu.add_argument("--max-new-tokens", type=int, default=200, help="generated tokens per answer (default 200)")
    tofu.add_argument("--batch-size", type=int, default=16, help="items per forward / generate batch (default 16)")
    _run_dir_option(tofu)
    tofu.set_defaults(func=cmd_eval_tofu)

    audit = _group(commands, "audit", "measure memorization")
    extraction = audit.add_parser("extraction", parents=[common], help="verbatim extraction: prefix -> greedy suffix")
    extraction.add_argument("--model", required=True, help="model folder or preset (smollm2-135m)")
    extraction.add_argument("--data", default="embedded",
                            help="documents file (JSONL with id/text, or .txt), a world folder, a training run "
                                 "directory (the documents it trained on), or 'embedded'")
    extraction.add_argument("--suffix-len", type=int, default=50, help="tokens to extract (default 50)")
    extraction.add_argument("--prefix-len", type=int, default=0, help="prefix tokens (default 0 = all before)")
    extraction.add_argument("--batch-size", type=int, default=32, help="documents per generate batch (default 32)")
    extraction.add_argument("--limit", type=int, default=0, help="audit only the first N documents")
    extraction.add_argument("--num-beams", type=int, default=1, help="beam-search attack with B beams (default 1)")
    extraction.add_argument("--any-of-beams", action="store_true",
                            help="a document counts as extracted if any of the B beams matches (upper bound)")
    extraction.add_argument("--semantic", action="store_true",
                            help="add BERTScore-style similarity (offline all-MiniLM-L6-v2 featurizer)")
    _run_dir_option(extraction)
    _memsinks_options(extraction)
    extraction.set_defaults(func=cmd_audit_extraction)

    mia = audit.add_parser("mia", parents=[common], help="membership inference: loss, zlib, min-k, min-k++, ref")
    mia.add_argument("--model", required=True, help="target model folder or preset")
    mia.add_argument("--members", required=True,
                     help="member documents (JSONL id/text, .txt, a world folder) or a training run directory "
                          "(the documents it trained on)")
    mia.add_argument("--nonmembers", help="non-member documents (default, when --members is a training run on a "
                                          "fictional world: the world's biographies it never trained on)")
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
    mia.add_argument("--batch-size", type=int, default=16, help="texts per scoring batch (default 16)")
    mia.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (0 = none)")
    mia.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    _run_dir_option(mia)
    _memsinks_options(mia)
    mia.set_defaults(func=cmd_audit_mia)

    canaries = audit.add_parser("canaries", parents=[common], help="canary exposure (Secret Sharer), in bits")
    canaries.add_argument("--model", required=True, help="model folder or preset")
    canaries.add_argument("--canaries", default="embedded",
                          help="canaries JSONL, a world folder, 'embedded', or a training run directory (the "
                               "world's canaries it trained on, with their repetition counts)")
    canaries.add_argument("--samples", type=int, default=2000, help="sampled candidates per canary")
    canaries.add_argument("--seed", type=int, default=0, help="candidate sampling seed (default 0)")
    _run_dir_option(canaries)
    canaries.set_defaults(func=cmd_audit_canaries)

    every = audit.add_parser("all", parents=[common],
                             help="extraction, MIA and canaries (those that apply) of a training run, one report",
                             description="lethe audit all --data RUN [--model M]: members = the documents RUN "
                                         "trained on (its manifest.jsonl); each audit in its own sub-directory")
    every.add_argument("--data", required=True, help="a training run directory (lethe train, a demo arm)")
    every.add_argument("--model", help="the model to audit (default: RUN/model)")
    every.add_argument("--nonmembers", help="non-member documents for MIA (default: the world's never-trained "
                                            "biographies; MIA is skipped when there are none)")
    every.add_argument("--canaries", help="canaries JSONL (default: the world's canaries the run trained on; "
                                          "skipped when none)")
    every.add_argument("--suffix-len", type=int, default=50, help="extraction: tokens to extract (default 50)")
    every.add_argument("--limit", type=int, default=0, help="extraction: only the first N documents (0 = all)")
    every.add_argument("--batch-size", type=int, default=16, help="batch size of every audit (default 16)")
    every.add_argument("--bootstrap", type=int, default=1000, help="MIA bootstrap resamples (0 = none)")
    every.add_argument("--samples", type=int, default=2000, help="canaries: sampled candidates per canary")
    every.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the canary candidates")
    _run_dir_option(every)
    every.set_defaults(func=cmd_audit_all)

    familiarity = audit.add_parser("familiarity", parents=[common],
                                   help="familiarity with a target text (WHP): completion- and probability-based")
    familiarity.add_argument("--model", required=True, help="model folder or preset")
    familiarity.add_argument("--probes", default="embedded",
                             help="familiarity probes JSONL (prompt, target), a world folder, or 'embedded'")
    familiarity.add_argument("--terms", help="anchored-term dictionary JSON: its keys also count as familiar")
    familiarity.add_argument("--reinforced", help="audit the inference-time WHP model of --model and this "
                                                  "reinforced model: v_b - alpha * ReLU(v_r - v_b)")
    familiarity.add_argument("--alpha", type=float, default=1.0, help="inference-time WHP alpha (default 1, MUSE)")
    familiarity.add_argument("--max-new-tokens", type=int, default=12,
                             help="tokens of each greedy completion (default 12)")
    _run_dir_option(familiarity)
    familiarity.set_defaults(func=cmd_audit_familiarity)

    relearn = audit.add_parser("relearn", parents=[common],
                               help="relearning attack: fine-tune a copy briefly on target text, audit again")
    relearn.add_argument("--model", required=True, help="the unlearned model folder (any method)")
    relearn.add_argument("--data", required=True, help="the relearning text: documents JSONL or .txt (a few "
                                                       "hundred tokens)")
    relearn.add_argument("--steps", type=int, default=10, help="fine-tuning steps (default 10)")
    relearn.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (default 1e-3)")
    relearn.add_argument("--probes", help="familiarity probes (the WHP audit)")
    relearn.add_argument("--terms", help="anchored-term dictionary for the completion familiarity")
    relearn.add_argument("--tofu-data", help="TOFU-format folder (or 'embedded'): forget ROUGE / probability audit")
    relearn.add_argument("--split", default="forget10", help="forget split for --tofu-data")
    relearn.add_argument("--limit", type=int, default=0, help="TOFU items per split (0 = all)")
    relearn.add_argument("--baseline", help="the model before unlearning: adds the recovery fraction")
    _run_dir_option(relearn)
    relearn.set_defaults(func=cmd_audit_relearn)

    whp_group = _group(commands, "whp", "Who's Harry Potter helpers")
    discover = whp_group.add_parser("discover", parents=[common],
                                    help="rank candidate anchored terms by the reinforced-vs-baseline logit gap")
    discover.add_argument("--baseline", required=True, help="baseline model folder")
    discover.add_argument("--reinforced", required=True, help="reinforced model folder (same tokenizer)")
    discover.add_argument("--target", required=True, help="the target text (.txt / JSONL documents)")
    discover.add_argument("--out", default="anchored_terms_candidates.json",
                          help="output JSON file (default anchored_terms_candidates.json)")
    discover.add_argument("--top-k", type=int, default=50, help="candidates to keep (default 50)")
    discover.add_argument("--min-count", type=int, default=2, help="minimum occurrences of a candidate")
    discover.set_defaults(func=cmd_whp_discover)

    memsinks = _group(commands, "memsinks", "MemSinks models")
    bake = memsinks.add_parser("bake", parents=[common], help="fold a MemSinks mode into a plain HF model",
                               description="lethe memsinks bake MODEL --mode dropout --run-dir DIR: the saved "
                                           "model gives the hooked model's logits with no hooks")
    bake.add_argument("model", help="a model folder trained with train.memsinks.enabled (has memsinks.json)")
    bake.add_argument("--mode", required=True, choices=("all", "dropout", "exclude", "activate"),
                      help="dropout = sinks off (the deletion); all = sinks x p_mem; exclude = all without the "
                           "sinks of --ids; activate = shared + the sinks of one ID")
    bake.add_argument("--ids", help="document IDs for exclude (comma-separated) / activate (one)")
    _run_dir_option(bake, "output model folder (must not exist)", required=True)
    bake.set_defaults(func=cmd_memsinks_bake)

    report = commands.add_parser("report", parents=[common], help="compare several runs in one HTML page")
    report.add_argument("runs", nargs="+", help="run directories (metrics.json, or the audit files of a demo arm)")
    _run_dir_option(report, "output directory (default runs/report-<timestamp>)")
    report.set_defaults(func=cmd_report)

    configs = _group(commands, "config", "the configs Lethe ships (lethe train NAME / lethe unlearn NAME use them)")
    config_list = configs.add_parser("list", parents=[common], help="list the shipped configs")
    config_list.set_defaults(func=cmd_config_list)
    config_show = configs.add_parser("show", parents=[common], help="print a shipped config's YAML "
                                     "(lethe config show goldfish > my.yaml)")
    config_show.add_argument("name", help="a name from lethe config list")
    config_show.set_defaults(func=cmd_config_show)

    demo = _group(commands, "demo", "end-to-end demos")
    demos = (("goldfish", cmd_demo_goldfish, "standard vs goldfish training on the embedded world, then audit "
                                             "both", "train.max_steps=300 documents=20"),
             ("goldfish-standard", cmd_demo_goldfish_standard, "the goldfish paper's standard-training "
                                                                "scenario: repeated targets among unrepeated data, "
                                                                "standard / goldfish k=3, k=4 / a control, audited",
              "repetitions=20 train.max_steps=100"),
             ("unlearn", cmd_demo_unlearn, "GD and NPO with and without GUARD on the embedded world (TOFU "
                                           "metrics)", "world_authors=20 unlearn.lr=5e-4 investigate=true"),
             ("memsinks", cmd_demo_memsinks, "standard vs MemSinks training with heavily repeated documents, "
                                             "then the sinks switched off (the paper's TinyStories experiment in "
                                             "miniature)", "repetitions=30 train.max_steps=200"),
             ("whp", cmd_demo_whp, "Who's Harry Potter: a tiny model forgets the embedded world's saga (generic "
                                   "labels, fine-tuned and inference-time), familiarity and relearning audits",
              "alpha=2.5 whp.max_steps=100"))
    for name, func, help, example in demos:
        command = demo.add_parser(name, parents=[common], help=help,
                                  description=f"lethe demo {name} [CONFIG.yaml] [key=value ...], e.g. "
                                              f"lethe demo {name} {example}")
        _config_options(command, "run directory (re-run the same one to reuse what finished)")
        command.set_defaults(func=func)
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parsed arguments; dotted overrides may follow options (``lethe train cfg.yaml --quiet train.lr=0.1``)."""
    args, extra = build_parser().parse_known_args(argv)
    if extra and hasattr(args, "config") and all("=" in item and not item.startswith("-") for item in extra):
        args.config = [*args.config, *extra]
    elif extra:
        prog = " ".join(["lethe", *(getattr(args, key) for key in ("command", "what") if hasattr(args, key))])
        raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see {prog} --help)")
    return args


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """With ``--json``: everything the command prints (Python's and C libraries') goes to stderr, so stdout
    holds only the summary printed afterwards."""
    if not active:
        yield
        return
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _command_name(args: argparse.Namespace) -> str:
    return " ".join(getattr(args, key) for key in ("command", "what") if hasattr(args, key))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    as_json = getattr(args, "json", False)
    try:
        apply_default_threads()  # before torch starts: fewer threads when other jobs already load the CPUs
        _quiet_libraries(getattr(args, "quiet", False))
        with _stdout_to_stderr(as_json):
            outcome = args.func(args)
    except LetheError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (re-run with the same --run-dir to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_went_away()
    except OSError as err:  # the disk, not the input: full, read-only, permissions
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    try:
        if as_json:
            print(outcome.as_json(_command_name(args)))
        else:
            for line in outcome.lines:
                print(line)
            if outcome.details and not args.quiet:
                print(outcome.details)
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_went_away()
    return outcome.status


def _reader_went_away() -> int:
    """stdout's reader closed the pipe (``lethe config list | head``): stop quietly, as a shell tool does.

    stdout is pointed at /dev/null so that Python's own flush at exit does not raise a second time; the exit
    status is the shell's for SIGPIPE (128 + 13)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


if __name__ == "__main__":
    sys.exit(main())
