"""Progress you can watch (lethe.progress): timed lines on stderr when it is not a terminal, a tqdm bar when
it is, progress events in the run's log.jsonl, nothing on stderr with --quiet; HF training output without
``\\r`` frames and with numbers as numbers; an audit's run directory and config.yaml exist while it runs."""

from __future__ import annotations

import json
import re
import time
import types
from pathlib import Path

import pytest

from lethe import progress as progress_lib
from lethe.cli import main
from lethe.progress import library_progress, progress, run_context

LINE = re.compile(r"^\[lethe\] (?P<where>[^:]+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>\d+)%\), "
                  r"[\w. ]+ elapsed(, ~[\w. ]+ left)?$")


class Clock:
    """A fake ``time.monotonic`` the test moves forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_lib, "_clock", fake)
    monkeypatch.setattr(progress_lib, "_quiet", False)
    return fake


def _events(run_dir: Path, event: str = "progress") -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [row for row in rows if row["event"] == event]


def test_lines_every_tenth_after_the_gap_and_every_30_s_and_events_in_the_run_log(clock, tmp_path, capsys):
    with run_context(tmp_path, "audit extraction"):
        for step in progress(range(100), "generation", unit="prompts"):
            clock.now += 1.0 if step < 50 else 40.0  # 1 s per item, then 40 s per item
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"[lethe] run directory: {tmp_path} (progress in its log.jsonl)"
    lines = [LINE.match(line) for line in err[1:-1]]
    assert all(lines), err
    done = [int(m["done"]) for m in lines]
    # 1 s per item: a line per 10 items (5 s gap and 10%); 40 s per item: one per item (30 s gap)
    assert done[:4] == [10, 20, 30, 40] and done[-3:] == [97, 98, 99]  # 100: the last line
    assert {m["where"] for m in lines} == {"audit extraction, generation"}
    assert lines[0]["pct"] == "10" and lines[0]["total"] == "100"
    assert err[-1].startswith("[lethe] audit extraction, generation: 100/100 prompts in ")
    events = _events(tmp_path)
    assert [e["done"] for e in events] == [*done, 100]
    first = events[0]
    assert first["stage"] == "generation" and first["total"] == 100 and first["unit"] == "prompts"
    assert first["elapsed_s"] == pytest.approx(10.0) and first["left_s"] == pytest.approx(90.0)
    assert events[-1]["final"] is True and "final" not in first


def test_short_loops_print_nothing_but_are_logged_and_inner_loops_stay_quiet(clock, tmp_path, capsys):
    with run_context(tmp_path, "audit canaries"):
        for _ in progress(range(3), "canaries", unit="canaries"):
            for _ in progress(range(50), "scoring", unit="sequences"):
                clock.now += 0.7  # 35 s per canary: only the outer loop reports, on its 30 s clock
    err = capsys.readouterr().err.splitlines()
    assert not any("scoring" in line for line in err), err
    reports = [line for line in err if LINE.match(line)]
    assert reports and all("audit canaries, canaries:" in line for line in reports)
    assert {e["stage"] for e in _events(tmp_path)} == {"canaries"}

    short = tmp_path / "short"
    short.mkdir()
    with run_context(short, "audit mia"):
        for _ in progress(range(4), "scoring"):
            clock.now += 1.0  # 4 s: no line, one final event
    assert capsys.readouterr().err.strip() == f"[lethe] run directory: {short} (progress in its log.jsonl)"
    assert [(e["done"], e.get("final")) for e in _events(short)] == [(4, True)]


def test_a_long_single_batch_still_gets_its_lines_from_the_heartbeat(clock, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_lib, "HEARTBEAT_S", 0.01)
    with run_context(tmp_path, "eval tofu"):
        for _ in progress(range(2), "generation", unit="prompts"):
            clock.now += 31.0  # one batch that takes 31 s and updates nothing meanwhile
            deadline, err = time.monotonic() + 5, ""
            while "0/2" not in err and time.monotonic() < deadline:
                time.sleep(0.01)
                err += capsys.readouterr().err
            break
    assert "[lethe] eval tofu, generation: 0/2 prompts (0%), 31.0 s elapsed\n" in err
    first, last = _events(tmp_path)
    assert (first["done"], first["elapsed_s"], first["left_s"]) == (0, 31.0, None) and "final" not in first
    assert last["final"] is True


def test_quiet_silences_stderr_but_not_the_log(clock, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_lib, "_quiet", True)
    with run_context(tmp_path, "eval tofu"):
        for _ in progress(range(20), "scoring"):
            clock.now += 10.0
    assert capsys.readouterr().err == ""
    assert _events(tmp_path)[-1]["done"] == 20


def test_a_terminal_gets_a_tqdm_bar_instead_of_lines(clock, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_lib, "on_terminal", lambda: True)
    with run_context(tmp_path, "audit mia"):
        loop = progress(range(10), "scoring", unit="sequences")
        assert loop.bar is not None and not loop.lines
        for _ in loop:
            clock.now += 10.0
    err = capsys.readouterr().err
    assert "scoring" in err and "10/10" in err and "\r" in err  # tqdm's frames
    assert not any(LINE.match(line) for line in err.splitlines())
    assert _events(tmp_path)[-1]["done"] == 10  # the log is the same either way


def test_size_counts_the_units_of_each_item_and_library_loops_are_routed(clock, capsys):
    batches = [[1, 2, 3], [4, 5], [6]]
    loop = progress(batches, "scoring", total=6, unit="sequences", size=len)
    seen = []
    for _ in loop:
        seen.append(loop.done)
        clock.now += 10.0
    assert seen == [0, 3, 5] and loop.done == 6 and loop.closed
    assert capsys.readouterr().err.splitlines() == [  # the end is said once, by the last line
        "[lethe] scoring: 3/6 sequences (50%), 10.0 s elapsed, ~10.0 s left",
        "[lethe] scoring: 5/6 sequences (83%), 20.0 s elapsed, ~4.0 s left",
        "[lethe] scoring: 6/6 sequences in 30.0 s"]

    library = types.SimpleNamespace(tqdm=lambda iterable, desc="": iterable)  # a module with its own tqdm
    with library_progress(library, "de-quantizing", unit="tensors"):
        routed = library.tqdm(range(5), desc="Converting and de-quantizing GGUF tensors...")
        assert isinstance(routed, progress_lib.Progress)
        for _ in routed:
            clock.now += 2.0
    assert list(library.tqdm(range(2))) == [0, 1]  # put back
    assert "de-quantizing: 5/5 tensors in" in capsys.readouterr().err


@pytest.fixture
def model_dir(tiny_model, tiny_tokenizer, tmp_path) -> Path:
    from lethe.models import save_model

    return save_model(tiny_model, tiny_tokenizer, tmp_path / "model")


def test_audit_reports_progress_and_has_its_run_dir_and_config_while_it_runs(model_dir, world_dir, tmp_path,
                                                                            capsys, monkeypatch, one_thread):
    import lethe.audit.extraction as extraction  # lethe.audit.commands imports run_extraction on use

    monkeypatch.setattr(progress_lib, "MIN_GAP_S", 0.0)  # a line per 10% however fast the tiny model is
    run_dir = tmp_path / "audit"
    seen = {}
    original = extraction.run_extraction

    def watched(*args, **kwargs):
        seen["config"] = (run_dir / "config.yaml").read_text()
        seen["status"] = json.loads((run_dir / "run.json").read_text())["status"]
        return original(*args, **kwargs)

    monkeypatch.setattr(extraction, "run_extraction", watched)
    args = ["audit", "extraction", "--model", str(model_dir), "--data", str(world_dir), "--limit", "5",
            "--suffix-len", "4", "--batch-size", "1", "--run-dir", str(run_dir)]
    assert main(args) == 0
    assert seen["status"] == "running" and "suffix_len: 4" in seen["config"]
    assert seen["config"] == (run_dir / "config.yaml").read_text()
    err = capsys.readouterr().err.splitlines()
    lines = [m for m in map(LINE.match, err) if m]
    assert [(m["where"], m["done"], m["total"], m["unit"]) for m in lines] == [
        ("audit extraction, generation", str(i), "5", "prompts") for i in range(1, 5)]
    assert any(line.startswith("[lethe] audit extraction, generation: 5/5 prompts in ") for line in err)
    assert f"[lethe] run directory: {run_dir} (progress in its log.jsonl)" in err
    events = _events(run_dir)
    assert [e["done"] for e in events] == [1, 2, 3, 4, 5] and events[-1]["final"] is True

    quiet_dir = tmp_path / "quiet"
    assert main([*args[:6], "--limit", "2", *args[8:-1], str(quiet_dir), "--quiet"]) == 0
    assert "[lethe]" not in capsys.readouterr().err
    assert [e["done"] for e in _events(quiet_dir)] == [1, 2]  # still logged


def test_train_output_has_no_carriage_returns_and_its_numbers_are_numbers(world_dir, tmp_path, capsys,
                                                                         one_thread):
    run_dir = tmp_path / "train"
    args = ["train", "model.name=tiny", "model.vocab_size=400", "model.hidden_size=32", "model.num_layers=2",
            "model.num_heads=4", "model.intermediate_size=64", f"data.source={world_dir}", "train.max_steps=4",
            "train.logging_steps=2", "train.batch_size=4", "--run-dir", str(run_dir)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "\r" not in out + err  # no tqdm frames (HF's bar on a captured stream writes them)
    assert "{'loss'" not in out + err  # nor HF's printed dicts
    steps = [line for line in err.splitlines() if re.match(r"^\[lethe\] train, step \d+/4: ", line)]
    assert len(steps) == 3, err  # steps 2 and 4, and the final summary
    loss = re.search(r"step 2/4: loss (\S+),", steps[0])
    assert loss and float(loss[1]) > 0
    logged = _events(run_dir, "train")
    assert all(isinstance(row["loss"], float) for row in logged if "loss" in row)
    assert [row["step"] for row in logged if "loss" in row] == [2, 4]
    training = _events(run_dir)
    assert training[-1] == {**training[-1], "stage": "training", "done": 4, "total": 4, "final": True}

    assert main([*args[:-1], str(tmp_path / "quiet"), "--quiet"]) == 0
    assert "[lethe]" not in capsys.readouterr().err
