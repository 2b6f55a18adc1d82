"""The configs ship in the package (one copy; lethe config list / show; names accepted wherever a config path is),
and the wheel carries them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lethe.cli import main
from lethe.config import TrainConfig, config_file, load_config, shipped_config_path, shipped_configs, to_yaml
from lethe.errors import LetheError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_CONFIGS = ROOT / "src" / "lethe" / "configs"
TRAIN_CONFIGS = ("goldfish", "memsinks", "standard", "tofu-qa-smollm2")


def test_repository_configs_folder_is_the_package_one():
    """configs/ at the repository root (what the README's commands name) is the package's folder, not a copy."""
    assert (ROOT / "configs").resolve() == PACKAGE_CONFIGS.resolve()
    assert {p.name for p in (ROOT / "configs").glob("*.yaml")} == {p.name for p in PACKAGE_CONFIGS.glob("*.yaml")}
    assert {name: path.resolve() for name, path in shipped_configs().items()} == {
        p.stem: p.resolve() for p in PACKAGE_CONFIGS.glob("*.yaml")}


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_a_shipped_name_loads_like_its_file(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: only the package's copy can be found
    by_name = load_config(TrainConfig, name, ["train.lr=0.5"])
    by_path = load_config(TrainConfig, PACKAGE_CONFIGS / f"{name}.yaml", ["train.lr=0.5"])
    assert to_yaml(by_name) == to_yaml(by_path) and by_name.train.lr == 0.5


def test_a_file_wins_over_a_shipped_name_and_unknown_names_list_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("goldfish").write_text("train:\n  lr: 0.25\n")
    assert config_file("goldfish") == Path("goldfish")
    assert load_config(TrainConfig, "goldfish").train.lr == 0.25
    assert config_file("standard.yaml") == shipped_config_path("standard")
    with pytest.raises(LetheError, match=r"config file not found: nope \(nor a shipped config: goldfish, .*lethe "
                                         r"config list\)"):
        load_config(TrainConfig, "nope")
    with pytest.raises(LetheError, match="config file not found: sub/goldfish.yaml"):
        load_config(TrainConfig, "sub/goldfish.yaml")  # a path with folders is a path, never a shipped name


def test_config_list_and_show(capsys):
    assert main(["config", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == list(shipped_configs())
    kinds = {line.split()[0]: line.split()[2] for line in listed}
    assert kinds["goldfish"] == "train" and kinds["unlearn"] == "unlearn"
    assert main(["config", "show", "goldfish"]) == 0
    assert capsys.readouterr().out == (PACKAGE_CONFIGS / "goldfish.yaml").read_text()
    assert main(["config", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no shipped config 'nope'; shipped configs: goldfish" in err


@pytest.mark.slow
def test_the_wheel_contains_the_configs_and_the_license(tmp_path):
    """Build the wheel from a copy of the sources (the work tree stays clean) and look inside."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("lethe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"lethe/configs/{p.name}" for p in PACKAGE_CONFIGS.glob("*.yaml")} <= set(names)
    assert any(name.endswith("licenses/LICENSE") for name in names)
    assert "lethe/__main__.py" in names
