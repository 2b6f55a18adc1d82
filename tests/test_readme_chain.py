"""The README runs as written (issue 10, req. 1): every ```bash block, in order, as one chain, then the Python
API block, in a temporary folder holding a copy of ``configs/`` (what a fresh clone has).

How the steps are made tiny (explicitly, so the README itself shows the real settings):

- each ``lethe ...`` line runs in-process (``lethe.cli.main``) with the arguments of :data:`TINY_ARGS` for its
  command appended (later overrides / options win), e.g. ``train.max_steps=2`` and a 2-layer 32-wide model
  for ``lethe train``, ``--limit 2 --max-new-tokens 4`` for ``lethe eval tofu``;
- ``make demo`` is what the Makefile says it is (``lethe demo goldfish``, checked), run the same way;
  ``make test`` is not run (it is this test suite); the Install block's ``python3 -m venv`` / ``pip install``
  lines are not run either (this test runs inside that installation; tests/test_packaging.py builds the wheel
  and installs it); ``a && b`` runs as two steps; any other line (``head ...``) runs in ``bash``;
- the Python block runs after the chain with the textual replacements of :data:`PYTHON_TINY`, each of
  which must occur in it exactly once.

Every step must exit 0, except the demos, which exit 1 when their headline fails (documented; at 2 steps
it does) and must then still have written their metrics.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from lethe.cli import main

ROOT = Path(__file__).resolve().parents[1]
# the default 2,048-token vocabulary: with fewer, a biography no longer fits the 512 positions
MODEL = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.intermediate_size=64"]
STEPS = ["train.max_steps=2", "train.batch_size=4", "train.save_steps=1000", "train.threads=1"]
TINY_ARGS: dict[tuple[str, ...], list[str]] = {
    ("data", "fictional"): [],
    ("train",): [*MODEL, *STEPS, "data.limit=12"],
    ("unlearn",): ["train.max_steps=2", "train.batch_size=4", "eval.limit=2", "eval.max_new_tokens=4",
                   "whp.reinforced_steps=2", "whp.block=64", "guard.retain_samples=8"],
    ("eval", "tofu"): ["--limit", "2", "--max-new-tokens", "4"],
    ("audit", "all"): ["--suffix-len", "8", "--limit", "4", "--bootstrap", "0", "--samples", "20"],
    ("audit", "mia"): ["--bootstrap", "0"],
    ("audit", "extraction"): ["--limit", "4", "--suffix-len", "8", "--num-beams", "2"],
    ("audit", "familiarity"): ["--max-new-tokens", "4"],
    ("audit", "relearn"): ["--steps", "1"],
    ("whp", "discover"): ["--top-k", "5"],
    ("report",): [],
    ("config", "list"): [],
    ("config", "show"): [],
    ("demo", "goldfish"): ["world_authors=12", "documents=4", "train.max_steps=2", "train.batch_size=4",
                           "canary_samples=20", "mia_bootstrap=0", "suffix_len=8", *MODEL],
    ("demo", "whp"): ["world_authors=12", "saga_repetitions=1", "train.max_steps=2", "whp.max_steps=2",
                      "reinforced_steps=2", "relearn_steps=1", "mix_documents=4", "max_new_tokens=4", *MODEL],
}
PYTHON_TINY = {
    '"train.max_steps=100"': '"train.max_steps=2", "train.batch_size=4", "data.limit=8", '
                             + ", ".join(f'"{m}"' for m in MODEL),
    'run_dir="runs/api-goldfish-audit")': 'run_dir="runs/api-goldfish-audit", suffix_len=8, n_bootstrap=0)',
    '"guard.enabled=false",': '"guard.enabled=false", "train.max_steps=2", "eval.limit=2", "eval.max_new_tokens=4",',
    "limit=10,": "limit=2, max_new_tokens=4,",
}


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _commands(block: str) -> list[tuple[str, list[str]]]:
    """The block's commands as (line, argv) (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", block)
    steps = [step.strip() for line in joined.splitlines() for step in line.split(" && ")]
    return [(step, argv) for step in steps if (argv := shlex.split(step, comments=True))]


def _command_path(args: list[str]) -> tuple[str, ...]:
    words = [a for a in args if not a.startswith("-")]
    for path in sorted(TINY_ARGS, key=len, reverse=True):
        if tuple(words[: len(path)]) == path:
            return path
    raise AssertionError(f"no tiny settings for `lethe {' '.join(args)}`: add them to TINY_ARGS")


def _make_demo_command() -> list[str]:
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].splitlines()[1].strip()
    assert recipe == "$(BIN)/lethe demo goldfish", recipe
    return ["lethe", "demo", "goldfish"]


def _run(line: str, argv: list[str], cwd: Path, capsys) -> None:
    if argv[:2] == ["make", "test"] or argv[:2] == ["pip", "install"] or argv[:3] == ["python3", "-m", "venv"]:
        return
    if argv[0] == "." or argv[0] == "source":
        return  # activating the venv above
    if argv[:2] == ["make", "demo"]:
        argv = _make_demo_command()
    if argv[0] != "lethe":
        done = subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{line}: {done.stderr}"
        return
    args = argv[1:]
    if args == ["--version"]:
        with pytest.raises(SystemExit) as done:
            main(args)
        assert done.value.code in (0, None)
        return
    path = _command_path(args)
    code = main([*args, *TINY_ARGS[path]])
    err = capsys.readouterr().err
    allowed = (0, 1) if path[0] == "demo" else (0,)
    assert code in allowed, f"`{' '.join(argv)}` exited {code}: {err[-2000:]}"


def test_readme_chain_runs_as_written(tmp_path, monkeypatch, capsys, one_thread):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    commands = [argv for block in _blocks(readme, "bash") for argv in _commands(block)]
    assert len(commands) >= 15 and ["make", "demo"] in [argv for _, argv in commands]
    for line, argv in commands:
        _run(line, argv, tmp_path, capsys)
    # the chain's report step used directories the chain created; its audit found members and non-members
    assert (tmp_path / "runs" / "report" / "report.html").is_file()
    assert (tmp_path / "runs" / "goldfish-audit" / "mia" / "mia.json").is_file()

    python = [b for b in _blocks(readme.split("## Python API", 1)[1], "python")][0]
    for old, new in PYTHON_TINY.items():
        assert python.count(old) == 1, f"README's Python block no longer has {old!r}: update PYTHON_TINY"
        python = python.replace(old, new)
    exec(compile(python, "README.md (Python API)", "exec"), {})
    assert (tmp_path / "runs" / "api-gd-eval" / "tofu_eval.json").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("command", ["lethe data fictional --out w", "lethe --json audit mia --model m"])
def test_every_readme_command_has_tiny_settings(command):
    assert _command_path(shlex.split(command)[1:])
