from pathlib import Path

import pytest

from lethe.config import TrainConfig, load_config, to_yaml
from lethe.errors import LetheError


def test_defaults_yaml_and_overrides_merge_in_order(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.01\n  goldfish:\n    enabled: true\n    k: 8\n")
    config = load_config(TrainConfig, path, ["train.goldfish.k=3", "data.limit=5"])
    assert config.train.lr == 0.01
    assert config.train.goldfish.enabled and config.train.goldfish.k == 3
    assert config.data.limit == 5
    assert config.train.goldfish.h == 13  # default kept
    again = tmp_path / "resolved.yaml"
    again.write_text(to_yaml(config))
    assert load_config(TrainConfig, again) == config


def test_unknown_key_is_named():
    with pytest.raises(LetheError, match=r"unknown key 'train\.goldfsh'"):
        load_config(TrainConfig, None, ["train.goldfsh.k=3"])


def test_unknown_key_in_yaml_is_named(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  hiden_size: 12\n")
    with pytest.raises(LetheError, match=r"unknown key 'model\.hiden_size'"):
        load_config(TrainConfig, path)


def test_ill_typed_value_is_named():
    with pytest.raises(LetheError, match=r"train\.batch_size"):
        load_config(TrainConfig, None, ["train.batch_size=many"])


@pytest.mark.parametrize("k", [1, 0, -3])
def test_goldfish_k_below_two_rejected(k):
    with pytest.raises(LetheError, match="k must be >= 2"):
        load_config(TrainConfig, None, ["train.goldfish.enabled=true", f"train.goldfish.k={k}"])


def test_unknown_strategy_rejected():
    with pytest.raises(LetheError, match="strategy must be one of"):
        load_config(TrainConfig, None, ["train.goldfish.enabled=true", "train.goldfish.strategy=md5"])


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(LetheError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(LetheError, match="invalid YAML"):
        load_config(TrainConfig, bad)
    with pytest.raises(LetheError, match="not of the form key=value"):
        load_config(TrainConfig, None, ["train.lr"])


def test_goldfish_k_is_checked_even_when_goldfish_is_off():
    with pytest.raises(LetheError, match=r"train\.goldfish\.k must be >= 2, got 1"):
        load_config(TrainConfig, None, ["train.goldfish.enabled=false", "train.goldfish.k=1"])


def test_settings_built_in_python_are_type_checked():
    from lethe.config import GoldfishSettings

    with pytest.raises(LetheError, match=r"train\.goldfish\.k must be an integer, got 2\.5"):
        GoldfishSettings(k=2.5).validate()
    with pytest.raises(LetheError, match=r"goldfish\.h must be an integer, got True"):
        GoldfishSettings(h=True).validate(key="goldfish")


def test_data_file_defaults_per_format():
    assert load_config(TrainConfig).data.file == "biographies.jsonl"
    assert load_config(TrainConfig, None, ["data.format=qa"]).data.file == "full"
    assert load_config(TrainConfig, None, ["data.format=qa", "data.file=retain90"]).data.file == "retain90"
    assert "file: full" in to_yaml(load_config(TrainConfig, None, ["data.format=qa"]))  # resolved in config.yaml


def test_config_changes_names_differing_keys():
    from lethe.config import config_changes

    old = load_config(TrainConfig)
    new = load_config(TrainConfig, None, ["train.lr=0.5", "train.goldfish.k=8", "train.max_steps=9"])
    assert config_changes(old, old) == []
    assert config_changes(old, new, ignore=["train.max_steps"]) == [
        "train.goldfish.k (4 -> 8)", "train.lr (0.001 -> 0.5)"]


@pytest.mark.parametrize("name", ["goldfish.yaml", "standard.yaml", "memsinks.yaml"])
def test_shipped_training_configs_load(name):
    """Every training config in configs/ loads under the schema; memsinks.yaml enables MemSinks at the paper's split."""
    config = load_config(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / name)
    if name == "memsinks.yaml":
        sinks = config.train.memsinks
        assert sinks.enabled and (sinks.p_gen, sinks.p_mem, sinks.strategy) == (0.7, 0.3, "hash")
        assert not config.train.goldfish.enabled
    else:
        assert not config.train.memsinks.enabled


def test_an_empty_override_is_the_empty_string():
    from lethe.unlearn.config import UnlearnConfig

    config = load_config(UnlearnConfig, None, ["model.name=m", "eval.retain_eval=/x/tofu_eval.json",
                                               "eval.retain_eval="])
    assert config.eval.retain_eval == ""
    with pytest.raises(LetheError, match="train.max_steps"):
        load_config(UnlearnConfig, None, ["model.name=m", "train.max_steps="])
