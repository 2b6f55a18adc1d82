"""The CLI end to end on the embedded default, and its one-line errors for bad input."""

import json

import pytest

from lethe.cli import main

TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.intermediate_size=64",
        "model.vocab_size=400", "train.batch_size=4", "train.lr=0.003"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, f"error is not one line: {err!r}"
    assert err.startswith("error: ")
    return err


def test_data_fictional_same_seed_same_bytes(tmp_path, capsys):
    assert main(["data", "fictional", "--out", str(tmp_path / "a"), "--authors", "12", "--seed", "7"]) == 0
    assert main(["data", "fictional", "--out", str(tmp_path / "b"), "--authors", "12", "--seed", "7",
                 "--quiet"]) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "forget10_perturbed.json" in files and "biographies.jsonl" in files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_train_then_audit_extraction_from_the_cli(world_dir, tmp_path, capsys):
    run = tmp_path / "train"
    code = main(["train", "configs/goldfish.yaml", f"data.source={world_dir}", "data.limit=4",
                 "train.max_steps=3", "train.logging_steps=1", *TINY, "--run-dir", str(run), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["goldfish"]["k"] == 4
    audit = tmp_path / "audit"
    code = main(["audit", "extraction", "--model", str(run / "model"), "--data", str(world_dir),
                 "--limit", "3", "--suffix-len", "20", "--run-dir", str(audit), "--quiet"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((audit / "extraction.json").read_text())
    assert report["n_documents"] == 3 and len(report["items"]) == 3
    assert 0.0 <= report["rougeL"] <= 1.0
    assert json.loads((audit / "metrics.json").read_text())["extraction"]["suffix_len"] == 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "train.goldfsh.k=3"], "unknown key 'train.goldfsh'"),
        (["train", "train.goldfish.enabled=true", "train.goldfish.k=1"], "k must be >= 2"),
        (["train", "train.goldfish.k=1"], "train.goldfish.k must be >= 2"),
        (["train", "data.format=qa", "data.file=nope"], "data.file='nope' with data.format=qa"),
        (["train", "missing.yaml"], "config file not found: missing.yaml"),
        (["train", "data.source=/nonexistent/place"], "data source not found"),
        (["audit", "extraction", "--model", "org/some-model"], "hub id"),
        (["audit", "extraction", "--model", "x", "--suffix-len", "0"], "--suffix-len must be >= 1"),
        (["data", "fictional", "--out", "x", "--authors", "0"], "--authors must be >= 1"),
        (["audit", "extraction", "--model", "x", "--limit", "-1"], "--limit must be >= 0"),
        (["audit", "extraction"], "the following arguments are required: --model (see lethe audit extraction --help)"),
        (["audit", "extraction", "--model", "x", "--limit", "many"], "argument --limit: invalid int value: 'many'"),
        (["audit", "extraction", "--model", "x", "--colour"], "unrecognized arguments: --colour (see lethe audit"),
        (["train", "--bogus"], "unrecognized arguments: --bogus (see lethe train --help)"),
        (["demo"], "the following arguments are required: SUBCOMMAND (see lethe demo --help)"),
    ],
)
def test_bad_input_gives_one_line_error(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever fails must leave no runs/ folder behind
    assert main([*args, "--quiet"] if args[0] not in ("train", "demo") else args) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_demo_exits_1_with_the_reason_when_the_headline_fails(capsys, monkeypatch, tmp_path):
    import lethe.demo.goldfish as demo

    def fake_demo(config, quiet=False):
        extraction = {"standard": 3, "goldfish": 1}
        return tmp_path, {"documents": 40, "headline_holds": False,
                          **{arm: {"extraction": {"n_exact": n}} for arm, n in extraction.items()}}

    monkeypatch.setattr(demo, "run_goldfish_demo", fake_demo)
    assert main(["demo", "goldfish", "train.max_steps=50", "--quiet"]) == 1
    err = _error_line(capsys)
    assert "standard training memorized 3/40" in err and "goldfish 1/40 (needs none)" in err
    assert "train.max_steps (300 -> 50)" in err  # the user changed what the headline is claimed at
    assert main(["demo", "goldfish", "--quiet"]) == 1
    assert "at the default settings where it should" in _error_line(capsys)


def test_empty_and_malformed_data_files(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["train", f"data.source={empty}", *TINY, "--run-dir", str(tmp_path / "r1")]) == 2
    assert "empty.jsonl" in _error_line(capsys)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
    assert main(["train", f"data.source={broken}", *TINY, "--run-dir", str(tmp_path / "r2")]) == 2
    err = _error_line(capsys)
    assert "broken.jsonl" in err and "line 2" in err
    assert not (tmp_path / "r2" / "metrics.json").exists()


def test_python_dash_m_lethe_runs_the_cli():
    import subprocess
    import sys

    from lethe import __version__

    done = subprocess.run([sys.executable, "-m", "lethe", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: lethe" in done.stdout
    done = subprocess.run([sys.executable, "-m", "lethe", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"lethe {__version__}"
