"""One CLI convention for every command (issue 10, req. 5): global options before or after the command,
``[CONFIG.yaml] [key=value ...]`` / ``--config`` / ``--print-config``, ``--run-dir`` (alias ``--out``), help on
every flag, and ``--json`` (stdout is only the summary)."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

from lethe.cli import build_parser, main, parse_args

CONFIG_COMMANDS = [["train"], ["unlearn"], ["demo", "goldfish"], ["demo", "unlearn"], ["demo", "memsinks"],
                   ["demo", "whp"]]


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (command path, parser) of the argparse tree, the top parser included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def test_every_option_and_positional_has_help():
    missing = [f"lethe {' '.join(path)}: {action.option_strings or action.dest}"
               for path, parser in _commands(build_parser()) for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction)
               and (not action.help or action.help == argparse.SUPPRESS)]
    assert not missing, missing


def test_every_leaf_command_has_the_global_options_and_one_output_option():
    for path, parser in _commands(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue  # a group (lethe audit) or the top parser
        options = {o for a in parser._actions for o in a.option_strings}
        assert {"--quiet", "--json"} <= options, path
        if path[0] == "config":
            continue  # lethe config list|show print a shipped config and write nothing
        if path != ("whp", "discover"):  # its --out names a file, not a directory
            assert {"--run-dir", "--out"} <= options, path


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("flag", ["--quiet", "--json"])
def test_global_options_before_or_after_the_command(flag, where):
    command = ["audit", "mia", "--model", "m", "--members", "a"]
    argv = [flag, *command] if where == "before" else [*command, flag]
    args = parse_args(argv)
    assert getattr(args, flag[2:]) is True
    other = "json" if flag == "--quiet" else "quiet"
    assert getattr(args, other) is False


def test_out_and_run_dir_are_the_same_option_everywhere():
    assert parse_args(["report", "r1", "--out", "x"]).run_dir == "x"
    assert parse_args(["report", "r1", "--run-dir", "x"]).run_dir == "x"
    assert parse_args(["data", "fictional", "--run-dir", "w"]).run_dir == "w"
    assert parse_args(["train", "--out", "t"]).run_dir == "t"
    assert parse_args(["memsinks", "bake", "m", "--mode", "dropout", "--out", "b"]).run_dir == "b"


@pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=" ".join)
def test_print_config_resolves_defaults_file_and_overrides(command, tmp_path, capsys):
    """Positional config and --config give the same resolved YAML; an override wins over the file; nothing runs."""
    schema_key, value = ("train.max_steps", 7) if command[0] in ("train", "unlearn") else ("run_dir", None)
    config = tmp_path / "config.yaml"
    text = {"train": "train:\n  max_steps: 5\n", "unlearn": "model:\n  name: smollm2-135m\ntrain:\n  max_steps: 5\n"}
    config.write_text(text.get(command[0], "{}\n"))
    overrides = ["train.max_steps=7"] if value else []
    run_dir = tmp_path / "would-be-run"
    assert main([*command, str(config), *overrides, "--run-dir", str(run_dir), "--print-config"]) == 0
    positional = capsys.readouterr().out
    assert main([*command, "--config", str(config), *overrides, "--run-dir", str(run_dir), "--print-config"]) == 0
    assert capsys.readouterr().out == positional
    resolved = yaml.safe_load(positional)
    assert resolved["run_dir"] == str(run_dir)
    if value:
        assert resolved["train"]["max_steps"] == 7  # defaults <- file (5) <- override (7)
    assert not run_dir.exists() and not (tmp_path / "runs").exists()


def test_print_config_with_json_is_an_object(capsys):
    assert main(["--json", "train", "configs/goldfish.yaml", "train.goldfish.k=3", "--print-config"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["command"] == "train" and out["summary"]["config"]["train"]["goldfish"]["k"] == 3
    assert out["summary"]["config"]["data"]["limit"] == 40  # from the file


def test_two_configs_are_refused(capsys):
    assert main(["train", "configs/goldfish.yaml", "--config", "configs/standard.yaml", "--print-config"]) == 2
    assert "two configs given" in capsys.readouterr().err


def test_json_stdout_is_only_the_summary(world_dir, tmp_path, capsys):
    """--json after the command: the data command's summary as one object; the progress lines go to stderr."""
    out = tmp_path / "w"
    assert main(["data", "fictional", "--out", str(out), "--authors", "4", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # the whole of stdout parses
    assert result["command"] == "data fictional" and result["status"] == 0
    assert result["summary"]["audit_sets"] == {"members.jsonl": 4, "nonmembers.jsonl": 1}
    assert result["run_dir"] == str(out)
    assert main(["--json", "report", str(tmp_path / "nowhere")]) == 2  # errors: stderr only, stdout empty
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ")


def test_json_of_an_audit_matches_its_metrics(world_dir, model_dir_tiny, tmp_path, capsys):
    run = tmp_path / "ext"
    assert main(["--json", "audit", "extraction", "--model", str(model_dir_tiny), "--data", str(world_dir),
                 "--limit", "2", "--suffix-len", "5", "--run-dir", str(run)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["summary"] == json.loads((run / "metrics.json").read_text())["extraction"]


@pytest.fixture
def model_dir_tiny(tiny_model, tiny_tokenizer, tmp_path):
    from lethe.models import save_model

    folder = tmp_path / "model"
    save_model(tiny_model, tiny_tokenizer, folder)
    return folder


def test_a_closed_stdout_pipe_ends_quietly_with_the_sigpipe_status():
    """``lethe config list | head -1``: the reader goes away; no traceback, exit 141 as a shell tool."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "lethe", "config", "show", "goldfish"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the child has written anything
    stderr = child.stderr.read().decode()
    child.wait(timeout=60)
    assert "Traceback" not in stderr and "Broken pipe" not in stderr, stderr
    assert child.returncode == 141
