"""lethe train with LoRA (adapter + merged model, frozen base, resume), gradient checkpointing, model.dtype and
experiment trackers (train.report_to=tensorboard, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lethe.config import TrainConfig, load_config
from lethe.errors import LetheError
from lethe.models import load_model, save_model
from lethe.train.trainer import run_training, training_arguments

FAST = ["train.scheduler=constant", "data.limit=8", "data.max_length=64", "train.batch_size=4", "train.lr=0.01",
        "train.logging_steps=1", "train.save_steps=2"]
LORA = ["lora.enabled=true", "lora.r=4", "lora.alpha=8", "lora.dropout=0.0", "lora.target_modules=[q_proj,v_proj]"]


@pytest.fixture
def base_folder(tiny_model, tiny_tokenizer, tmp_path) -> Path:
    return save_model(tiny_model, tiny_tokenizer, tmp_path / "base")


def _config(world: Path, run_dir: Path, model: str | Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.source={world}", f"run_dir={run_dir}", f"model.name={model}",
                                           *FAST, *extra])


def test_lora_trains_only_the_adapters_and_saves_adapter_and_merged_model(world_dir, base_folder, tmp_path,
                                                                           one_thread):
    run_dir, metrics = run_training(_config(world_dir, tmp_path / "run", base_folder, "train.max_steps=3",
                                            *LORA), quiet=True)
    lora = metrics["lora"]
    base = load_file(base_folder / "model.safetensors")
    merged = load_file(run_dir / "model" / "model.safetensors")
    adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    # only A (r x d_in) and B (d_out x r) of q_proj and v_proj in each layer are trained
    layers = sum(1 for name in base if name.endswith("self_attn.q_proj.weight"))
    expected = sum(4 * (base[f"model.layers.{i}.self_attn.{m}.weight"].shape[1]
                        + base[f"model.layers.{i}.self_attn.{m}.weight"].shape[0])
                   for i in range(layers) for m in ("q_proj", "v_proj"))
    assert lora["trainable_parameters"] == expected == sum(t.numel() for t in adapter.values())
    assert all("lora_A" in name or "lora_B" in name for name in adapter)
    assert lora["total_parameters"] == sum(t.numel() for t in base.values()) + expected
    assert set(merged) == set(base)
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    assert changed == {f"model.layers.{i}.self_attn.{m}.weight" for i in range(layers) for m in ("q_proj", "v_proj")}
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base_folder.resolve())
    # the adapter folder loads as the merged model does
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    from_adapter, _ = load_model(run_dir / "adapter")
    from_model, _ = load_model(run_dir / "model")
    torch.testing.assert_close(from_adapter(ids).logits, from_model(ids).logits, atol=1e-5, rtol=1e-4)


def test_lora_run_resumes_from_its_checkpoint_like_an_uninterrupted_run(world_dir, base_folder, tmp_path,
                                                                        one_thread):
    whole, metrics = run_training(_config(world_dir, tmp_path / "whole", base_folder, "train.max_steps=4", *LORA),
                                  quiet=True)
    parted = tmp_path / "parted"
    run_training(_config(world_dir, parted, base_folder, "train.max_steps=2", *LORA), quiet=True)
    assert (parted / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    _, resumed = run_training(_config(world_dir, parted, base_folder, "train.max_steps=4", *LORA), quiet=True)
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 4
    a = load_file(whole / "adapter" / "adapter_model.safetensors")
    b = load_file(parted / "adapter" / "adapter_model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    assert resumed["train_loss"] == pytest.approx(metrics["train_loss"], rel=1e-5)


def test_lora_settings_are_checked(world_dir, tmp_path):
    with pytest.raises(LetheError, match="the tiny preset is randomly initialised"):
        load_config(TrainConfig, None, ["lora.enabled=true"])
    with pytest.raises(LetheError, match="lora.r must be >= 1"):
        load_config(TrainConfig, None, ["model.name=x", "lora.enabled=true", "lora.r=0"])
    with pytest.raises(LetheError, match="lora and train.memsinks do not combine"):
        load_config(TrainConfig, None, ["model.name=x", "lora.enabled=true", "train.memsinks.enabled=true"])


def test_gradient_checkpointing_is_on_and_gives_the_same_training(world_dir, base_folder, tmp_path, one_thread,
                                                                  monkeypatch):
    import lethe.train.trainer as trainer_module

    seen: list[bool] = []
    original = trainer_module.train_from

    def spy(trainer, resume):
        loss = original(trainer, resume)
        seen.append(bool(trainer.model.is_activation_checkpointing))
        return loss

    monkeypatch.setattr(trainer_module, "train_from", spy)
    _, plain = run_training(_config(world_dir, tmp_path / "plain", base_folder, "train.max_steps=3"), quiet=True)
    _, checkpointed = run_training(_config(world_dir, tmp_path / "gc", base_folder, "train.max_steps=3",
                                           "train.gradient_checkpointing=true"), quiet=True)
    _, lora = run_training(_config(world_dir, tmp_path / "gc-lora", base_folder, "train.max_steps=3",
                                   "train.gradient_checkpointing=true", *LORA), quiet=True)
    assert seen == [False, True, True]
    assert checkpointed["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-5)
    assert lora["steps"] == 3 and lora["lora"]["trainable_parameters"] > 0


def test_model_dtype_trains_and_saves_in_that_dtype(world_dir, base_folder, tmp_path, one_thread):
    run_dir, metrics = run_training(_config(world_dir, tmp_path / "bf16", base_folder, "train.max_steps=2",
                                            "model.dtype=bfloat16"), quiet=True)
    weights = load_file(run_dir / "model" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert metrics["steps"] == 2 and metrics["train_loss"] == metrics["train_loss"]  # finite, not NaN
    tiny = load_config(TrainConfig, None, [f"data.source={world_dir}", f"run_dir={tmp_path / 'tiny'}",
                                           "model.hidden_size=32", "model.num_layers=1", "model.intermediate_size=64",
                                           "model.vocab_size=300", "model.dtype=bfloat16", "train.max_steps=1",
                                           *FAST])
    run_dir, _ = run_training(tiny, quiet=True)
    assert {t.dtype for t in load_file(run_dir / "model" / "model.safetensors").values()} == {torch.bfloat16}


def test_report_to_tensorboard_writes_events_offline(world_dir, base_folder, tmp_path, one_thread, monkeypatch):
    pytest.importorskip("tensorboard", reason="the optional extra lethe[tensorboard]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_dir, _ = run_training(_config(world_dir, tmp_path / "tb", base_folder, "train.max_steps=2",
                                      "train.report_to=tensorboard"), quiet=True)
    events = list(run_dir.rglob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].is_relative_to(run_dir / "checkpoints" / "runs")
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    losses = accumulator.Scalars("train/loss")
    assert [event.step for event in losses] == [1, 2]
    logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train_losses = [e["loss"] for e in logged if e["event"] == "train" and "loss" in e]
    assert [e.value for e in losses] == pytest.approx(train_losses, rel=1e-5)


def test_report_to_and_run_name_reach_the_training_arguments(tmp_path):
    config = load_config(TrainConfig)
    args = training_arguments(config, tmp_path / "my-run" / "checkpoints", quiet=True)
    assert args.report_to == [] or args.report_to == ["none"] or args.report_to == "none"
    assert args.run_name == "my-run"
    named = load_config(TrainConfig, None, ["train.run_name=first-try"])
    assert training_arguments(named, tmp_path / "x" / "checkpoints", quiet=True).run_name == "first-try"
    with pytest.raises(LetheError, match="unknown tracker 'tensorbored'"):
        load_config(TrainConfig, None, ["train.report_to=tensorbored"])
    with pytest.raises(LetheError, match="train.mixed_precision must be one of no, bf16, fp16"):
        load_config(TrainConfig, None, ["train.mixed_precision=fp8"])
    bf16 = training_arguments(load_config(TrainConfig, None, ["train.mixed_precision=bf16"]), tmp_path, quiet=True)
    assert bf16.bf16 and not bf16.fp16
    if not torch.cuda.is_available():
        with pytest.raises(LetheError, match="fp16 needs a CUDA GPU"):
            load_config(TrainConfig, None, ["train.mixed_precision=fp16"])
