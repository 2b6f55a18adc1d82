"""Bad input ends with one line ``error: ...`` and exit code 2, and leaves nothing behind (issue 9, req. 5).

Each case runs the CLI in an empty working folder holding only the case's inputs; afterwards every file
there must be byte-identical and nothing may have been added (no run directory, no config.yaml, no
``runs/``). The models and the trained run the cases point at live outside that folder and are checked too.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lethe import models
from lethe.cli import main
from lethe.config import TrainConfig, load_config
from lethe.data.tofu import load_split
from lethe.models import build_tiny, save_model
from lethe.train.trainer import run_training

TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.intermediate_size=64",
        "model.vocab_size=400", "train.batch_size=4", "data.limit=4", "train.max_steps=2", "train.threads=1"]
NOT_UTF8 = b'{"id": "a", "text": "caf\xe9 au lait"}\n'


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny saved model with 64 positions (so 'longer than the model' is cheap to provoke)."""
    texts = ["the quick brown fox jumps over the lazy dog " * 3, "a small red bird sings in the morning " * 3]
    model, tokenizer = build_tiny(texts * 4, vocab_size=300, seed=0, hidden_size=16, num_layers=1, num_heads=2,
                                  intermediate_size=32, max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("bad-input-model") / "model"
    save_model(model, tokenizer, folder)
    return folder


@pytest.fixture(scope="module")
def trained_run(world_dir, tmp_path_factory) -> Path:
    """A finished 2-step `lethe train` run (checkpoint-2 complete)."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("bad-input-run") / "run"
    run_training(load_config(TrainConfig, None, [f"data.source={world_dir}", f"run_dir={run_dir}", *TINY,
                                                 "train.save_steps=2"]), quiet=True)
    return run_dir


@dataclass
class Ctx:
    tmp: Path  # the working folder of the case
    world: Path
    model: Path
    run: Path  # a finished train run


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    message: str
    setup: Callable[[Ctx], None] | None = None


def _file(name: str, data: bytes | str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        path = ctx.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def _train(*overrides: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["train", f"data.source={c.world}", *TINY, *overrides, "--run-dir", str(c.tmp / "run")]


def _unlearn(*overrides: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["unlearn", f"model.name={c.model}", f"data.source={c.tmp / 'tofu'}", "eval.enabled=false",
                      "data.max_length=64",
                      *overrides, "--run-dir", str(c.tmp / "run")]


def _mia(*args: str, members: str | None = None, nonmembers: str | None = None) -> Callable[[Ctx], list[str]]:
    def argv(c: Ctx) -> list[str]:
        return ["audit", "mia", "--model", str(c.model),
                "--members", members and str(c.tmp / members) or str(c.world / "biographies.jsonl"),
                "--nonmembers", nonmembers and str(c.tmp / nonmembers) or str(c.world / "biographies_holdout.jsonl"),
                "--bootstrap", "0", *args, "--run-dir", str(c.tmp / "run")]
    return argv


def _extraction(*args: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["audit", "extraction", "--model", str(c.model), "--data", str(c.world), "--limit", "2",
                      *args, "--run-dir", str(c.tmp / "run")]


def _tofu(*args: str) -> Callable[[Ctx], list[str]]:
    return lambda c: ["eval", "tofu", "--model", str(c.model), "--data", str(c.world), "--limit", "2",
                      "--max-new-tokens", "2", *args, "--run-dir", str(c.tmp / "run")]


def _retain_eval(summary: dict) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        rows = load_split(ctx.world, "forget10")[:2]
        items = [{"question": row["question"], "truth_ratio": 0.5} for row in rows]
        config = {"forget_split": "forget10", "protocol": "open-unlearning"}  # the default eval.protocol
        (ctx.tmp / "retain.json").write_text(json.dumps({"config": config, "per_item": {"forget": items},
                                                         "summary": summary}))
    return setup


def _tofu_and_file(ctx: Ctx) -> None:
    """A short TOFU-format folder (work/tofu) and a plain file (work/afile)."""
    rows = [{"id": f"q{i}", "question": f"What is item {i}?", "answer": f"Item {i} is a lamp."} for i in range(4)]
    (ctx.tmp / "tofu").mkdir()
    (ctx.tmp / "tofu" / "forget10.json").write_text(json.dumps(rows[:2]))
    (ctx.tmp / "tofu" / "retain90.json").write_text(json.dumps(rows[2:]))
    (ctx.tmp / "afile").write_text("keep me")


def _long_tofu(ctx: Ctx) -> None:
    """The test world's TOFU files (work/tofu) with forget10 answers longer than the model's 64 positions."""
    shutil.copytree(ctx.world, ctx.tmp / "tofu")
    answer = " ".join(["The lamp stands in the hall of the old house."] * 12)
    for name in ("forget10.json", "forget10_perturbed.json"):
        path = ctx.tmp / "tofu" / name
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(json.dumps({**row, "answer": answer}) + "\n" for row in rows))


def _read_only(ctx: Ctx) -> None:
    (ctx.tmp / "locked").mkdir()
    os.chmod(ctx.tmp / "locked", 0o555)


def _pickled_checkpoint(ctx: Ctx) -> None:
    """A copy of the trained run whose optimizer state is a pickle that calls os.system when loaded."""
    shutil.copytree(ctx.run, ctx.tmp / "run")
    (ctx.tmp / "run" / "checkpoints" / "checkpoint-2" / "optimizer.pt").write_bytes(
        pickle.dumps(_Evil(), protocol=2))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


CASES = [
    # --- HF / torch settings, checked before anything is made ------------------------------------------
    Case("scheduler-name", _train("train.scheduler=cosine_wobble"), "train.scheduler must be one of"),
    Case("logging-steps-0", _train("train.logging_steps=0"), "train.logging_steps must be >= 1"),
    Case("save-steps-0", _train("train.save_steps=0"), "train.save_steps must be >= 1"),
    Case("save-total-limit-0", _train("train.save_total_limit=0"), "train.save_total_limit must be >= 1"),
    Case("warmup-negative", _train("train.warmup_steps=-1"), "train.warmup_steps must be >= 0"),
    Case("lr-nan", _train("train.lr=nan"), "train.lr must be > 0 and finite, got nan"),
    Case("lr-inf", _train("train.lr=inf"), "train.lr must be > 0 and finite, got inf"),
    Case("lr-negative", _train("train.lr=-0.1"), "train.lr must be > 0"),
    Case("lr-not-a-number", _train("train.lr=fast"), "bad value for 'train.lr'"),
    Case("weight-decay-negative", _train("train.weight_decay=-1"), "train.weight_decay must be >= 0"),
    Case("epochs-inf", _train("train.max_steps=-1", "train.epochs=inf"), "train.epochs must be finite"),
    Case("max-steps-0", _train("train.max_steps=0"), "train.max_steps must be > 0, or -1"),
    Case("max-steps-negative", _train("train.max_steps=-5"), "train.max_steps must be > 0, or -1"),
    Case("batch-size-0", _train("train.batch_size=0"), "train.batch_size and train.grad_accum must be >= 1"),
    Case("threads-negative", _train("train.threads=-2"), "train.threads must be >= 0"),
    Case("heads-not-dividing", _train("model.hidden_size=30"), "model.hidden_size=30 is not divisible by"),
    Case("head-dim-odd", _train("model.hidden_size=36"), "must be even"),
    Case("num-layers-0", _train("model.num_layers=0"), "model.num_layers must be >= 1"),
    Case("num-heads-0", _train("model.num_heads=0"), "model.num_heads must be >= 1"),
    Case("intermediate-0", _train("model.intermediate_size=0"), "model.intermediate_size must be >= 1"),
    Case("vocab-too-small", _train("model.vocab_size=100"), "model.vocab_size must be >= 260"),
    Case("max-length-past-positions", _train("data.max_length=1024"),
         "data.max_length=1024 exceeds model.max_position_embeddings=512"),
    Case("remote-code-on-tiny", _train("model.trust_remote_code=true"), "trust_remote_code applies to model"),
    Case("goldfish-k-1", _train("train.goldfish.k=1"), "train.goldfish.k must be >= 2"),
    Case("data-format", _train("data.format=xml"), "data.format must be 'documents' or 'qa'"),
    Case("unknown-key", _train("train.learning_rate=0.1"), "unknown key 'train.learning_rate'"),
    Case("hf-model-positions", lambda c: ["train", f"model.name={c.model}", f"data.source={c.world}",
                                          "data.max_length=128", *TINY[5:], "--run-dir", str(c.tmp / "run")],
         "data.max_length=128 exceeds the model's 64 positions"),
    Case("hf-model-positions-default-dir", lambda c: ["train", f"model.name={c.model}", f"data.source={c.world}",
                                                      "data.max_length=128", *TINY[5:]],
         "exceeds the model's 64 positions"),  # fails inside ./runs/train-<time>: removed, runs/ too
    # --- unlearning settings -----------------------------------------------------------------------------
    Case("tau-inf", _unlearn("guard.enabled=true", "guard.tau=inf"), "guard.tau must be > 0 and finite"),
    Case("tau-nan", _unlearn("guard.tau=nan"), "guard.tau must be > 0 and finite"),
    Case("gamma-nan", _unlearn("objective.gamma=nan"), "objective.gamma must be finite"),
    Case("unlearn-lr-nan", _unlearn("train.lr=nan"), "train.lr must be > 0 and finite"),
    Case("unlearn-scheduler", _unlearn("train.scheduler=zigzag"), "train.scheduler must be one of"),
    Case("unlearn-logging-0", _unlearn("train.logging_steps=0"), "train.logging_steps must be >= 1"),
    Case("lora-alpha-0", _unlearn("lora.enabled=true", "lora.alpha=0"), "lora.alpha must be >= 1"),
    Case("unlearn-run-dir-file", lambda c: [*_unlearn()(c)[:-1], str(c.tmp / "afile")],
         "is a file, not a folder", _tofu_and_file),
    # --- command-line values -----------------------------------------------------------------------------
    Case("ks-abc", _mia("--ks", "abc"), "--ks must be comma-separated fractions in (0, 1], got 'abc'"),
    Case("ks-nan", _mia("--ks", "0.2,nan"), "--ks must be comma-separated fractions"),
    Case("ks-zero", _mia("--ks", "0"), "--ks must be comma-separated fractions"),
    Case("ks-empty", _mia("--ks", ","), "--ks must be comma-separated fractions"),
    Case("mia-batch-size-0", _mia("--batch-size", "0"), "--batch-size must be >= 1, got 0"),
    Case("mia-max-length-1", _mia("--max-length", "1"), "--max-length must be 0 (the model's positions) or >= 2"),
    Case("mia-max-length-negative", _mia("--max-length", "-3"),
         "--max-length must be 0 (the model's positions) or >= 2"),
    Case("mia-bootstrap-negative", _mia("--bootstrap", "-1"), "--bootstrap must be >= 0"),
    Case("canaries-samples-0", lambda c: ["audit", "canaries", "--model", str(c.model), "--canaries", str(c.world),
                                          "--samples", "0", "--run-dir", str(c.tmp / "run")],
         "--samples must be >= 1"),
    Case("canaries-past-positions", lambda c: ["audit", "canaries", "--model", str(c.model), "--canaries",
                                               str(c.tmp / "canaries.jsonl"), "--run-dir", str(c.tmp / "run")],
         "exceeds the model's 64 positions", _file("canaries.jsonl", json.dumps(
             {"id": "long", "prefix": " ".join(["The secret access code of the vault"] * 20) + " is",
              "secret": "3 6 6 3 7 8", "format": "digits6", "repetitions": 1,
              "text": " ".join(["The secret access code of the vault"] * 20) + " is 3 6 6 3 7 8"}) + "\n")),
    Case("tofu-answer-past-positions", lambda c: ["eval", "tofu", "--model", str(c.model), "--data",
                                                  str(c.tmp / "tofu"), "--split", "forget10", "--limit", "2",
                                                  "--max-new-tokens", "2", "--run-dir", str(c.tmp / "run")],
         "exceeds the model's 64 positions", _long_tofu),
    Case("tofu-batch-size-0", _tofu("--batch-size", "0"), "--batch-size must be >= 1"),
    Case("tofu-max-new-tokens-0", lambda c: [*_tofu()(c), "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    Case("tofu-past-positions", _tofu("--max-new-tokens", "60"), "exceeds the model's 64 positions"),
    Case("tofu-limit-negative", _tofu("--limit", "-1"), "--limit must be >= 0"),
    Case("extraction-batch-size-0", _extraction("--batch-size", "0"), "--batch-size must be >= 1"),
    Case("extraction-beams-0", _extraction("--num-beams", "0"), "--num-beams must be >= 1"),
    Case("extraction-prefix-negative", _extraction("--prefix-len", "-1"), "--prefix-len must be >= 0"),
    Case("memsinks-ids-abc", _extraction("--memsinks-mode", "exclude", "--memsinks-ids", "a,b"),
         "--memsinks-ids must be comma-separated integers"),
    Case("demo-overrides-around-quiet", lambda c: ["demo", "goldfish", "documents=5", "--quiet", "nonsense=2"],
         "unknown key 'nonsense'"),
    Case("demo-quiet-first", lambda c: ["demo", "memsinks", "--quiet", "train.max_steps=many"],
         "bad value for 'train.max_steps'"),
    Case("demo-unlearn-overrides", lambda c: ["demo", "unlearn", "world_authors=5", "--quiet", "unlearn.lr=nan"],
         "lr must be > 0 and finite"),
    # --- files -------------------------------------------------------------------------------------------
    Case("canaries-not-utf8", lambda c: ["audit", "canaries", "--model", str(c.model), "--canaries",
                                         str(c.tmp / "canaries.jsonl"), "--run-dir", str(c.tmp / "run")],
         "canaries.jsonl: not UTF-8 text", _file("canaries.jsonl", NOT_UTF8)),
    Case("canaries-bad-json", lambda c: ["audit", "canaries", "--model", str(c.model), "--canaries",
                                         str(c.tmp / "canaries.jsonl"), "--run-dir", str(c.tmp / "run")],
         "line 1: invalid JSON", _file("canaries.jsonl", "{not json\n")),
    Case("documents-not-utf8", lambda c: [*_extraction()(c)[:4], "--data", str(c.tmp / "docs.jsonl"),
                                          "--run-dir", str(c.tmp / "run")],
         "docs.jsonl: not UTF-8 text", _file("docs.jsonl", NOT_UTF8)),
    Case("members-not-utf8", _mia(members="m.jsonl"), "m.jsonl: not UTF-8 text", _file("m.jsonl", NOT_UTF8)),
    Case("report-metrics-not-utf8", lambda c: ["report", str(c.tmp / "r1"), "--out", str(c.tmp / "out")],
         "metrics.json: not UTF-8 text", _file("r1/metrics.json", b'{"a": "\xff"}')),
    Case("config-yaml-not-utf8", lambda c: ["train", str(c.tmp / "c.yaml"), "--run-dir", str(c.tmp / "run")],
         "c.yaml: not UTF-8 text", _file("c.yaml", b"train:\n  lr: 0.1 # \xff\n")),
    Case("config-yaml-list", lambda c: ["train", str(c.tmp / "c.yaml"), "--run-dir", str(c.tmp / "run")],
         "top level must be a mapping", _file("c.yaml", "- 1\n- 2\n")),
    Case("retain-eval-not-utf8", _tofu("--retain-eval", "retain.json"), "not valid JSON",
         _file("retain.json", b"\xff\xfe{}")),
    Case("mia-min-k-text", lambda c: _tofu("--retain-eval", str(c.tmp / "retain.json"))(c),
         "summary.mia_min_k must be an AUC in [0, 1] or null, got 'high'", _retain_eval({"mia_min_k": "high"})),
    Case("mia-min-k-nan", lambda c: _tofu("--retain-eval", str(c.tmp / "retain.json"))(c),
         "summary.mia_min_k must be an AUC in [0, 1] or null, got nan", _retain_eval({"mia_min_k": float("nan")})),
    Case("mia-min-k-bool", lambda c: _tofu("--retain-eval", str(c.tmp / "retain.json"))(c),
         "summary.mia_min_k must be an AUC", _retain_eval({"mia_min_k": True})),
    Case("pickle-in-checkpoint", lambda c: ["train", f"data.source={c.world}", *TINY[:-2], "train.max_steps=3",
                                            "train.save_steps=2", "train.threads=1", "--run-dir",
                                            str(c.tmp / "run")],
         "a file there cannot be loaded safely", _pickled_checkpoint),
    # --- run directories and output folders --------------------------------------------------------------
    Case("train-run-dir-file", lambda c: [*_train()(c)[:-1], str(c.tmp / "afile")],
         "is a file, not a folder", _file("afile", "keep me")),
    Case("train-run-dir-under-file", lambda c: [*_train()(c)[:-1], str(c.tmp / "afile" / "run")],
         "lies under", _file("afile", "keep me")),
    Case("train-run-dir-read-only", lambda c: [*_train()(c)[:-1], str(c.tmp / "locked" / "run")],
         "is not writable", _read_only),
    Case("extraction-run-dir-file", lambda c: [*_extraction()(c)[:-1], str(c.tmp / "afile")],
         "is a file, not a folder", _file("afile", "keep me")),
    Case("mia-run-dir-under-file", lambda c: [*_mia()(c)[:-1], str(c.tmp / "afile" / "x" / "y")],
         "lies under", _file("afile", "keep me")),
    Case("tofu-run-dir-read-only", lambda c: [*_tofu()(c)[:-1], str(c.tmp / "locked")], "is not writable",
         _read_only),
    Case("canaries-run-dir-file", lambda c: ["audit", "canaries", "--model", str(c.model), "--canaries",
                                             str(c.world), "--run-dir", str(c.tmp / "afile")],
         "is a file, not a folder", _file("afile", "keep me")),
    Case("report-out-file", lambda c: ["report", str(c.run), "--out", str(c.tmp / "afile")],
         "is a file, not a folder", _file("afile", "keep me")),
    Case("report-out-under-file", lambda c: ["report", str(c.run), "--out", str(c.tmp / "afile" / "out")],
         "lies under", _file("afile", "keep me")),
    Case("report-missing-run", lambda c: ["report", str(c.tmp / "nowhere"), "--out", str(c.tmp / "out")],
         "nowhere"),
    Case("fictional-out-under-file", lambda c: ["data", "fictional", "--out", str(c.tmp / "afile" / "w"),
                                                "--authors", "2"], "lies under", _file("afile", "keep me")),
    Case("fictional-out-read-only", lambda c: ["data", "fictional", "--out", str(c.tmp / "locked" / "w"),
                                               "--authors", "2"], "is not writable", _read_only),
    Case("bake-out-under-file", lambda c: ["memsinks", "bake", str(c.model), "--mode", "dropout", "--out",
                                           str(c.tmp / "afile" / "baked")], "lies under", _file("afile", "x")),
    # --- data that cannot give a meaningful audit --------------------------------------------------------
    Case("members-equal-nonmembers", lambda c: _mia()(c)[:6] + ["--nonmembers", str(c.world / "biographies.jsonl"),
                                                                *_mia()(c)[8:]],
         "members and non-members are the same texts"),
    Case("audit-into-train-run", lambda c: [*_extraction()(c)[:-1], str(c.run)],
         "is the run directory of `lethe train`"),
    Case("mia-into-train-run", lambda c: [*_mia()(c)[:-1], str(c.run)], "is the run directory of `lethe train`"),
    Case("resume-other-settings", lambda c: ["train", f"data.source={c.world}", *TINY, "train.lr=0.5",
                                             "--run-dir", str(c.run)], "cannot resume"),
]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.name != ".lethe.lock"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, world_dir, model_dir, trained_run, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a default run directory would appear as ./runs
    ctx = Ctx(tmp=work, world=world_dir, model=model_dir, run=trained_run)
    if case.setup is not None:
        case.setup(ctx)
    if case.setup is _read_only:
        monkeypatch.setattr("lethe.runs.os.access", lambda path, mode: not str(path).startswith(
            str(work / "locked")))  # root ignores file modes: see as an unprivileged user would
    argv = case.argv(ctx)
    if "--quiet" not in argv and argv[0] != "demo":
        argv.append("--quiet")
    watched = {"work": work, "model": model_dir, "run": trained_run}
    before = {name: _snapshot(folder) for name, folder in watched.items()}
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert code == 2, err
    assert len(errors) == 1 and errors[0] == err[-1], f"not one error line: {err}"
    assert case.message in errors[0]
    for name, folder in watched.items():
        assert _snapshot(folder) == before[name], f"{name} changed"
    assert not (work / "pwned.txt").exists()


def test_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def test_overlapping_members_are_warned(world_dir, model_dir, tmp_path, capsys):
    members = tmp_path / "members.jsonl"
    lines = (world_dir / "biographies.jsonl").read_text().splitlines()[:6]
    members.write_text("\n".join(lines) + "\n")
    nonmembers = tmp_path / "nonmembers.jsonl"
    holdout = (world_dir / "biographies_holdout.jsonl").read_text().splitlines()[:5]
    nonmembers.write_text("\n".join([lines[0], *holdout]) + "\n")
    assert main(["audit", "mia", "--model", str(model_dir), "--members", str(members), "--nonmembers",
                 str(nonmembers), "--bootstrap", "0", "--run-dir", str(tmp_path / "mia"), "--quiet"]) == 0
    assert "warning: 1 text(s) are both members and non-members" in capsys.readouterr().err


def test_inputs_past_the_positions_are_cut_and_said(world_dir, model_dir, tmp_path, capsys):
    """The model has 64 positions: extraction cuts long prefixes from the left, MIA's window is cut to 64."""
    assert main(["audit", "extraction", "--model", str(model_dir), "--data", str(world_dir), "--limit", "3",
                 "--suffix-len", "16", "--run-dir", str(tmp_path / "ex"), "--quiet"]) == 0
    assert "prefix(es) cut from the left to fit the model's 64 positions" in capsys.readouterr().err
    report = json.loads((tmp_path / "ex" / "extraction.json").read_text())
    assert report["n_prefix_truncated"] == 3 and report["max_positions"] == 64
    assert report["n_scored"] == 3
    assert main(["audit", "mia", "--model", str(model_dir), "--members", str(world_dir / "biographies.jsonl"),
                 "--nonmembers", str(world_dir / "biographies_holdout.jsonl"), "--bootstrap", "0",
                 "--max-length", "512", "--run-dir", str(tmp_path / "mia"), "--quiet"]) == 0
    assert ("max-length 512 exceeds the model's 64 positions: the window is cut to 64 tokens (longer texts are "
            "still scored whole, by sliding window)") in capsys.readouterr().err
    events = [json.loads(line) for line in (tmp_path / "mia" / "log.jsonl").read_text().splitlines()]
    assert {"requested": 512, "used": 64}.items() <= next(e for e in events
                                                          if e["event"] == "max_length_clamped").items()


def test_trust_remote_code_prints_a_warning(model_dir, capsys):
    models.load_model(model_dir, trust_remote_code=True)
    assert "warning: trust_remote_code is on: Python code in" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_read_only_output_folders_for_real(tmp_path):
    """Root ignores file modes; without CAP_DAC_OVERRIDE it does not: the real read-only case, end to end."""
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m",
                           "lethe.cli", "data", "fictional", "--out", str(locked / "world"), "--authors", "2"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: --run-dir {locked / 'world'}: {locked} is not writable"  # --out = --run-dir
    assert list(locked.iterdir()) == []
