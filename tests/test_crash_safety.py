"""Run directories survive kills, re-runs and concurrent processes (issue 9, requirements 3 and 4).

Kills are simulated in process (a KeyboardInterrupt after a checkpoint, then the checkpoint folder left in
each state a kill during a save can leave) and, in one slow test, done for real (SIGKILL of a `lethe train`
subprocess while it writes checkpoints)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import lethe.train.trainer as trainer_module
from lethe import checkpoints as ckpt
from lethe import locking
from lethe.cli import main
from lethe.config import TrainConfig, load_config
from lethe.errors import LetheError
from lethe.models import build_tiny, save_model
from lethe.runs import RUN_FILE, clean_stale_partials, open_run
from lethe.train.trainer import run_training
from lethe.unlearn.config import UnlearnConfig
from lethe.unlearn.trainer import run_unlearning

pytestmark = pytest.mark.slow

TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.intermediate_size=64",
        "model.vocab_size=400", "train.logging_steps=1", "train.batch_size=4", "train.lr=0.003",
        "train.scheduler=constant", "train.threads=1"]
# 8 documents at batch 4 = 2 steps per epoch; 5 steps is not a multiple of it (issue 9, defect 2)
LENGTH = ["data.limit=8", "train.max_steps=5", "train.save_steps=2"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one torch thread."""


def _config(world: Path, run_dir: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.source={world}", f"run_dir={run_dir}", *TINY, *LENGTH, *extra])


class _KillAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated kill")


def _with_kill(monkeypatch, step: int) -> None:
    original = trainer_module.LetheTrainer.__init__

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(_KillAt(step))

    monkeypatch.setattr(trainer_module.LetheTrainer, "__init__", patched)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "model.safetensors")


def _assert_same_model(a: Path, b: Path) -> None:
    left, right = _weights(a), _weights(b)
    assert left.keys() == right.keys()
    for name, tensor in left.items():
        torch.testing.assert_close(right[name], tensor, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def reference(world_dir, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted 5-step run."""
    torch.set_num_threads(1)
    run_dir, metrics = run_training(_config(world_dir, tmp_path_factory.mktemp("ref") / "run"), quiet=True)
    return run_dir, metrics


@pytest.fixture(scope="module")
def killed(world_dir, tmp_path_factory) -> Path:
    """A run killed after step 3: checkpoint-2 is complete, nothing else."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    with pytest.MonkeyPatch.context() as mp:
        _with_kill(mp, 3)
        with pytest.raises(KeyboardInterrupt):
            run_training(_config(world_dir, run_dir), quiet=True)
    assert [p.name for p in ckpt.complete_checkpoints(run_dir / "checkpoints")] == ["checkpoint-2"]
    assert json.loads((run_dir / RUN_FILE).read_text())["status"] == "failed"
    return run_dir


def _partial(folder: Path, kind: str, source: Path) -> None:
    """``folder`` as a kill during a save leaves it (``source``: a complete checkpoint to copy files from)."""
    if kind == "empty":
        folder.mkdir()
        return
    shutil.copytree(source, folder)
    step = ckpt.checkpoint_step(folder)
    if kind == "weights-only":
        for path in folder.iterdir():
            if path.name != "model.safetensors":
                path.unlink()
    elif kind == "no-trainer-state":
        (folder / ckpt.TRAINER_STATE).unlink()
        (folder / ckpt.STATE_FILE).unlink()
    elif kind == "no-seal":
        (folder / ckpt.STATE_FILE).unlink()
    elif kind == "torn-seal":
        (folder / ckpt.STATE_FILE).write_text('{"format": 1, "global_st')
    elif kind == "stale-seal":  # the seal of an earlier save at another step
        (folder / ckpt.STATE_FILE).write_text(json.dumps({"format": 1, "global_step": step - 2}))


PARTIAL_KINDS = ["empty", "weights-only", "no-trainer-state", "no-seal", "torn-seal", "stale-seal"]


@pytest.mark.parametrize("kind", PARTIAL_KINDS)
def test_partial_checkpoint_is_ignored_and_resume_matches_the_uninterrupted_run(kind, killed, reference,
                                                                                tmp_path, world_dir, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(killed, run_dir)
    checkpoints = run_dir / "checkpoints"
    _partial(checkpoints / "checkpoint-4", kind, checkpoints / "checkpoint-2")
    assert ckpt.latest_complete(checkpoints).name == "checkpoint-2"
    assert main(["train", *[f"{k}" for k in _config_items(world_dir, run_dir)], "--quiet"]) == 0, \
        capsys.readouterr().err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ref_dir, ref = reference
    assert metrics["resumed_from"].endswith("checkpoint-2")
    assert metrics["steps"] == ref["steps"] == 5
    assert metrics["supervised_tokens"] == ref["supervised_tokens"]  # counters restored with the checkpoint
    assert metrics["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-4)  # over all 5 steps
    _assert_same_model(ref_dir, run_dir)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-4", "checkpoint-5"]
    assert all(ckpt.is_complete(p) for p in checkpoints.iterdir())  # the partial one was deleted, then redone


def _config_items(world: Path, run_dir: Path) -> list[str]:
    return [f"data.source={world}", *TINY, *LENGTH, "--run-dir", str(run_dir)]


def test_finished_run_rerun_does_nothing_and_says_so(reference, tmp_path, world_dir, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    before = (run_dir / "model" / "model.safetensors").read_bytes()
    metrics_before = (run_dir / "metrics.json").read_text()
    for _ in range(2):  # issue 9 defect 2: each re-run trained one more step
        assert main(["train", *_config_items(world_dir, run_dir), "--quiet"]) == 0
        err = capsys.readouterr().err
        assert "finished run (5 steps); nothing to do" in err
    assert (run_dir / "model" / "model.safetensors").read_bytes() == before
    assert (run_dir / "metrics.json").read_text() == metrics_before  # train_loss not reset to 0.0
    assert not (run_dir / "checkpoints" / "checkpoint-6").exists()


def test_kill_after_the_last_checkpoint_finishes_without_training_another_step(reference, tmp_path, world_dir):
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    shutil.rmtree(run_dir / "model")  # killed after checkpoint-5, before model/ and metrics.json
    (run_dir / "metrics.json").unlink()
    (run_dir / RUN_FILE).write_text(json.dumps({"command": "train", "status": "running", "pid": 1}))
    _, metrics = run_training(_config(world_dir, run_dir), quiet=True)
    assert metrics["steps"] == 5 and metrics["resumed_from"].endswith("checkpoint-5")
    assert metrics["supervised_tokens"] == reference[1]["supervised_tokens"]
    assert metrics["train_loss"] == pytest.approx(reference[1]["train_loss"], rel=1e-6)
    _assert_same_model(reference[0], run_dir)


def test_extending_a_finished_run_resumes_it(reference, tmp_path, world_dir):
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    _, metrics = run_training(_config(world_dir, run_dir, "train.max_steps=7"), quiet=True)
    assert metrics["steps"] == 7 and metrics["resumed_from"].endswith("checkpoint-5")
    assert metrics["supervised_tokens"] > reference[1]["supervised_tokens"]


def test_seal_carries_counters_and_loss(reference):
    state = ckpt.read_state(reference[0] / "checkpoints" / "checkpoint-4")
    assert state["global_step"] == 4 and state["supervised_tokens"] > 0 and state["input_tokens"] > 0
    assert state["loss_sum"] > 0


def test_rotation_keeps_the_newest_complete_checkpoint(tmp_path, reference):
    folder = tmp_path / "checkpoints"
    source = reference[0] / "checkpoints" / "checkpoint-4"
    for step in (2, 4, 6):
        shutil.copytree(source, folder / f"checkpoint-{step}")
        ckpt.seal(folder / f"checkpoint-{step}", step)
    _partial(folder / "checkpoint-8", "no-seal", folder / "checkpoint-6")
    removed = ckpt.rotate(folder, 1)
    assert sorted(p.name for p in removed) == ["checkpoint-2", "checkpoint-4"]
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-6", "checkpoint-8"]  # newer partial: left
    assert ckpt.clean_incomplete(folder) == [folder / "checkpoint-8"]
    (folder / "checkpoint-6" / ckpt.STATE_FILE).unlink()  # the only one, unsealed: nothing is complete
    assert ckpt.rotate(folder, 1) == [] and (folder / "checkpoint-6").is_dir()


def test_second_process_on_a_run_dir_gets_a_one_line_error(reference, tmp_path, world_dir, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    fd = locking.acquire(run_dir)  # another open file description: what a second process holds
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    try:
        assert main(["train", *_config_items(world_dir, run_dir), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: run directory") and "in use by another lethe process" in err
        assert "\n" not in err
        code = main(["audit", "extraction", "--model", str(run_dir / "model"), "--data", str(world_dir),
                     "--run-dir", str(run_dir), "--quiet"])
        assert code == 2 and "in use by another lethe process" in capsys.readouterr().err
    finally:
        locking.release(fd)
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_lock_is_released_on_failure_and_after_a_kill(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(LetheError), open_run("train", run_dir):
        raise LetheError("boom")
    assert not run_dir.exists()  # nothing of the failed run is left
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from lethe import locking; "
                              "locking.acquire(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
                              str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(LetheError, match=rf"in use by another lethe process \(pid {child.pid}\)"):
            locking.acquire(tmp_path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    locking.release(locking.acquire(tmp_path))  # the kernel dropped the dead holder's lock


@pytest.mark.parametrize(("first", "second"), [
    (["audit", "extraction"], "train"),
    (["audit", "mia"], "train"),
    (["eval", "tofu"], "train"),
    (["unlearn"], "train"),
])
def test_no_command_writes_into_another_commands_run_dir(first, second, reference, tmp_path, world_dir, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(reference[0], run_dir)
    snapshot = _snapshot(run_dir)
    model = str(reference[0] / "model")
    extra = {
        "extraction": ["--model", model, "--data", str(world_dir), "--limit", "2", "--suffix-len", "8"],
        "mia": ["--model", model, "--members", str(world_dir / "biographies.jsonl"),
                "--nonmembers", str(world_dir / "biographies_holdout.jsonl"), "--bootstrap", "0"],
        "tofu": ["--model", model, "--data", str(world_dir), "--limit", "2", "--max-new-tokens", "4"],
        "unlearn": [f"model.name={model}", f"data.source={world_dir}", "train.max_steps=1", "eval.enabled=false"],
    }[first[-1]]
    assert main([*first, *extra, "--run-dir", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"is the run directory of `lethe {second}`" in err and "\n" not in err
    assert _snapshot(run_dir) == snapshot


def _snapshot(run_dir: Path) -> dict[Path, bytes]:
    """Every file's bytes (the lock file holds the pid of its last holder: left out)."""
    return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*")
            if p.is_file() and p.name != locking.LOCK_FILE}


def test_audit_rerun_in_its_own_dir_and_finished_audit_with_other_settings(reference, tmp_path, world_dir,
                                                                           capsys):
    run_dir = tmp_path / "audit"
    args = ["audit", "extraction", "--model", str(reference[0] / "model"), "--data", str(world_dir),
            "--limit", "2", "--suffix-len", "8", "--run-dir", str(run_dir), "--quiet"]
    assert main(args) == 0
    assert main(args) == 0  # the same audit again: redone in place
    config = (run_dir / "config.yaml").read_text()
    assert main([*args[:-3], "--suffix-len", "9", "--run-dir", str(run_dir), "--quiet"]) == 2
    assert "holds a finished `lethe audit extraction` run with other settings" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == config
    assert main(["train", *_config_items(world_dir, run_dir), "--quiet"]) == 2  # and train refuses it
    assert "is the run directory of `lethe audit extraction`" in capsys.readouterr().err


def test_failed_train_before_its_first_checkpoint_does_not_block_the_corrected_rerun(tmp_path, world_dir,
                                                                                     capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # the user made it: it stays, emptied of what the failed run wrote
    assert main(["train", *_config_items(world_dir, run_dir), "train.lr=1e30", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "training stopped at step" in err and "no checkpoint was saved yet" in err and "\n" not in err
    assert list(run_dir.iterdir()) == []
    assert main(["train", *_config_items(world_dir, run_dir), "--quiet"]) == 0  # other lr: not refused
    assert "lr: 0.003" in (run_dir / "config.yaml").read_text()


def test_nan_guard_never_saves_a_non_finite_model(tmp_path, world_dir, capsys):
    run_dir = tmp_path / "nan"
    assert main(["train", *_config_items(world_dir, run_dir), "train.lr=1e30", "train.save_steps=1",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training stopped at step" in err
    for folder in ckpt.complete_checkpoints(run_dir / "checkpoints"):
        assert all(torch.isfinite(t).all() for t in load_file(folder / "model.safetensors").values())
    assert not (run_dir / "model").exists()


def test_audits_refuse_a_model_with_non_finite_weights(tmp_path, world_dir, capsys):
    model, tokenizer = build_tiny(["a b c d e f g"] * 4, vocab_size=300, hidden_size=16, num_layers=1,
                                  num_heads=2, intermediate_size=32)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    save_model(model, tokenizer, tmp_path / "nan-model")
    for args in (["audit", "extraction", "--data", str(world_dir)],
                 ["audit", "canaries", "--canaries", str(world_dir)]):
        assert main([*args, "--model", str(tmp_path / "nan-model"), "--run-dir", str(tmp_path / "a"),
                     "--quiet"]) == 2
        assert "has non-finite weights (NaN/inf in model.layers.0.mlp.down_proj.weight)" in \
            capsys.readouterr().err
        assert not (tmp_path / "a").exists()


def test_stale_partials_of_dead_processes_are_cleaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / f"model.partial-{dead}").mkdir()
    (tmp_path / f"tokenizer.partial-{os.getppid()}").mkdir()  # a live process: maybe still writing
    removed = clean_stale_partials(tmp_path)
    assert [p.name for p in removed] == [f"model.partial-{dead}"]
    assert (tmp_path / f"tokenizer.partial-{os.getppid()}").is_dir()
    (tmp_path / ".metrics.json.k2j3h.tmp").write_text('{"half": ')  # an atomic write killed before its rename
    with open_run("train", tmp_path):
        assert not (tmp_path / ".metrics.json.k2j3h.tmp").exists()


def test_unlearn_finished_rerun_adds_no_step(tmp_path, capsys):
    data, model_dir = _unlearn_world(tmp_path)
    run_dir = tmp_path / "unlearn"
    # 4 forget items at batch 3: 2 steps per epoch, 3 steps is not a multiple (issue 9: 12 -> 13 -> 14 steps)
    args = ["unlearn", "method=ga", f"model.name={model_dir}", f"data.source={data}",
            "data.max_length=32", "train.batch_size=3", "train.grad_accum=1", "train.max_steps=3",
            "train.save_steps=2", "train.threads=1", "eval.enabled=false", "--run-dir", str(run_dir), "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    weights = load_file(run_dir / "model" / "model.safetensors")
    for _ in range(2):
        assert main(args) == 0
        assert "finished run (3 steps); nothing to do" in capsys.readouterr().err
        assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 3
    _assert_same_weights(load_file(run_dir / "model" / "model.safetensors"), weights)
    _partial(run_dir / "checkpoints" / "checkpoint-4", "no-seal", run_dir / "checkpoints" / "checkpoint-3")
    shutil.rmtree(run_dir / "model")
    (run_dir / "metrics.json").unlink()
    assert main(args) == 0  # the partial newer checkpoint is ignored and deleted; no step is added
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 3
    _assert_same_weights(load_file(run_dir / "model" / "model.safetensors"), weights)
    assert not (run_dir / "checkpoints" / "checkpoint-4").exists()


def _unlearn_world(tmp_path: Path) -> tuple[Path, Path]:
    """A 4 + 4 item TOFU-format folder and a tiny model saved beside it."""
    rows = [{"id": f"q{i}", "question": f"What is item {i}?", "answer": f"Item {i} is a lamp."} for i in range(8)]
    data = tmp_path / "tofu"
    data.mkdir()
    (data / "forget10.json").write_text(json.dumps(rows[:4]))
    (data / "retain90.json").write_text(json.dumps(rows[4:]))
    model, tokenizer = build_tiny([f"{r['question']} {r['answer']}" for r in rows], vocab_size=300,
                                  hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    save_model(model, tokenizer, tmp_path / "model")
    return data, tmp_path / "model"


def test_unlearn_evaluation_runs_inside_the_lock_and_its_failure_keeps_the_model(tmp_path):
    data, model_dir = _unlearn_world(tmp_path)
    run_dir = tmp_path / "unlearn"
    config = load_config(UnlearnConfig, None, [
        "method=ga", f"model.name={model_dir}", f"data.source={data}", "data.max_length=32",
        "train.batch_size=4", "train.max_steps=1", "train.threads=1", f"run_dir={run_dir}"])

    def evaluation(folder: Path, metrics: dict) -> dict:
        with pytest.raises(LetheError, match="in use by another lethe process"):
            locking.acquire(folder)  # a second process would be refused now
        raise LetheError("evaluation failed")

    with pytest.raises(LetheError, match="evaluation failed"):
        run_unlearning(config, quiet=True, after=evaluation)
    assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "metrics.json").is_file()
    assert json.loads((run_dir / RUN_FILE).read_text())["status"] == "finished"


def _assert_same_weights(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    assert all(torch.equal(left[name], right[name]) for name in left)


def test_real_sigkill_during_training_then_resume(tmp_path, world_dir, reference, capsys):
    """SIGKILL a `lethe train` subprocess the moment checkpoint-3's folder appears (so, most often, in the
    middle of writing it); the re-run must resume from a complete checkpoint and equal the uninterrupted run."""
    run_dir = tmp_path / "run"
    args = [*_config_items(world_dir, run_dir), "train.save_steps=1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "lethe.cli", "train", *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = run_dir / "checkpoints" / "checkpoint-3"
    deadline = time.monotonic() + 240
    while not folder.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert child.poll() is None, "the training finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert ckpt.latest_complete(run_dir / "checkpoints").name in ("checkpoint-2", "checkpoint-3")
    assert main(["train", *args]) == 0, capsys.readouterr().err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 5
    assert metrics["supervised_tokens"] == reference[1]["supervised_tokens"]
    assert metrics["train_loss"] == pytest.approx(reference[1]["train_loss"], rel=1e-4)
    _assert_same_model(reference[0], run_dir)
    assert json.loads((run_dir / RUN_FILE).read_text())["status"] == "finished"
    assert all(ckpt.is_complete(p) for p in (run_dir / "checkpoints").iterdir())
    assert not list(run_dir.rglob("*.partial-*"))
