"""Training through HF Trainer: loss goes down, goldfish removes ~1/k of the supervision, resume works."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from lethe.config import TrainConfig, load_config
from lethe.data.formatting import encode_qa
from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.train.collator import CausalLMCollator
from lethe.train.trainer import run_training

TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.intermediate_size=64",
        "model.vocab_size=400", "train.logging_steps=5", "train.batch_size=4", "train.lr=0.003"]


def _config(world_dir: Path, run_dir: Path, *extra: str) -> TrainConfig:
    overrides = [f"data.source={world_dir}", f"run_dir={run_dir}", "data.limit=8", *TINY, *extra]
    return load_config(TrainConfig, None, overrides)


def test_documents_training_lowers_loss_and_writes_run_dir(world_dir, tmp_path):
    run_dir, metrics = run_training(_config(world_dir, tmp_path / "run", "train.max_steps=30"), quiet=True)
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert not list((run_dir / "model").glob("*.bin"))
    assert (run_dir / "config.yaml").is_file()
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["steps"] == 30 == metrics["steps"]
    losses = [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()
              if '"loss"' in line and '"train_loss"' not in line]
    assert losses[-1] < losses[0] - 0.5
    assert saved["supervised_tokens"] > 0 and saved["supervised_fraction"] > 0.95


def test_goldfish_drops_about_one_in_k_supervised_tokens(world_dir, tmp_path):
    _, standard = run_training(_config(world_dir, tmp_path / "a", "train.max_steps=6"), quiet=True)
    _, goldfish = run_training(_config(world_dir, tmp_path / "b", "train.max_steps=6",
                                       "train.goldfish.enabled=true", "train.goldfish.k=4"), quiet=True)
    assert standard["input_tokens"] == goldfish["input_tokens"]  # same batches
    ratio = goldfish["supervised_tokens"] / standard["supervised_tokens"]
    # k=4 drops ~25% of targets at or after position h=13; biographies are ~200 tokens long
    assert 0.70 < ratio < 0.82


def test_qa_training_supervises_only_answers(world_dir, tmp_path, tiny_tokenizer):
    feature = encode_qa(tiny_tokenizer, "Where was she born?", "In Vurresk.", max_length=64)
    n_prompt = feature["labels"].count(IGNORE_INDEX)
    assert feature["labels"][-1] == tiny_tokenizer.eos_token_id
    assert feature["input_ids"][n_prompt:] == feature["labels"][n_prompt:]
    _, metrics = run_training(_config(world_dir, tmp_path / "qa", "data.format=qa", "data.file=forget10",
                                      "train.max_steps=4"), quiet=True)
    assert metrics["supervised_fraction"] < 0.6  # prompts are not supervised


def test_collator_goldfish_ignores_prompt_masking(tiny_tokenizer):
    from lethe.config import GoldfishSettings

    ids = list(range(5, 65))
    full = {"input_ids": ids, "labels": list(ids), "doc_id": 3}
    prompted = {"input_ids": ids, "labels": [IGNORE_INDEX] * 20 + ids[20:], "doc_id": 3}
    collate = CausalLMCollator(pad_id=0, goldfish=GoldfishSettings(enabled=True, k=3, h=5))
    a, b = collate([full]), collate([prompted])
    dropped_a = a["labels"][0, 20:].eq(IGNORE_INDEX)
    dropped_b = b["labels"][0, 20:].eq(IGNORE_INDEX)
    assert dropped_a.any() and torch.equal(dropped_a, dropped_b)
    assert a["doc_ids"].eq(3).all()


class _Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 14:
            raise KeyboardInterrupt  # what a killed process leaves behind: checkpoint-10 only


def test_killed_run_resumes_from_last_checkpoint(world_dir, tmp_path, monkeypatch):
    extra = ("train.max_steps=20", "train.save_steps=10", "train.scheduler=constant")
    reference_dir, _ = run_training(_config(world_dir, tmp_path / "ref", *extra), quiet=True)

    import lethe.train.trainer as trainer_module

    original = trainer_module.LetheTrainer.__init__

    def with_kill(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(_Kill())

    monkeypatch.setattr(trainer_module.LetheTrainer, "__init__", with_kill)
    with pytest.raises(KeyboardInterrupt):
        run_training(_config(world_dir, tmp_path / "killed", *extra), quiet=True)
    assert not (tmp_path / "killed" / "metrics.json").exists()  # no half-written result
    assert (tmp_path / "killed" / "checkpoints" / "checkpoint-10").is_dir()
    monkeypatch.setattr(trainer_module.LetheTrainer, "__init__", original)

    run_dir, metrics = run_training(_config(world_dir, tmp_path / "killed", *extra), quiet=True)
    assert metrics["resumed_from"].endswith("checkpoint-10")
    assert metrics["steps"] == 20
    reference = json.loads((reference_dir / "metrics.json").read_text())
    assert metrics["supervised_tokens"] == reference["supervised_tokens"]
    resumed = load_file(run_dir / "model" / "model.safetensors")
    uninterrupted = load_file(reference_dir / "model" / "model.safetensors")
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-4, atol=1e-5)


def test_empty_documents_file_is_an_error(tmp_path):
    empty = tmp_path / "docs.jsonl"
    empty.write_text("")
    config = load_config(TrainConfig, None, [f"data.source={empty}", f"run_dir={tmp_path / 'r'}", *TINY])
    with pytest.raises(LetheError, match="no"):
        run_training(config, quiet=True)
