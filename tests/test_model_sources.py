"""Where a model can come from: peft adapter folders, hub ids in the local HF cache (offline), and model.dtype."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lethe.config import TrainConfig, load_config
from lethe.errors import LetheError
from lethe.models import load_model, load_tokenizer, save_model

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def _ids(tokenizer) -> torch.Tensor:
    return torch.tensor([tokenizer("She was born in Vurresk and wrote three novels.")["input_ids"]])


def _adapter(tiny_model, tiny_tokenizer, tmp_path: Path, base: str) -> tuple[Path, torch.nn.Module]:
    """A saved LoRA adapter over the tiny model whose B matrices are non-zero (so it changes the logits)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                       lora_dropout=0.0, task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    folder = tmp_path / "adapter"
    peft_model.save_pretrained(folder)
    _set_base(folder, base)
    return folder, peft_model.eval()


def _set_base(folder: Path, base: str) -> None:
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (folder / "adapter_config.json").write_text(json.dumps(config))


def test_adapter_folder_loads_as_its_base_with_the_adapter_merged(tiny_model, tiny_tokenizer, tmp_path):
    base = save_model(tiny_model, tiny_tokenizer, tmp_path / "base")
    plain = tiny_model.eval()(_ids(tiny_tokenizer)).logits.detach()
    folder, peft_model = _adapter(tiny_model, tiny_tokenizer, tmp_path, str(base))
    expected = peft_model(_ids(tiny_tokenizer)).logits.detach()
    assert not torch.allclose(expected, plain, atol=1e-3)  # the adapter matters
    model, tokenizer = load_model(folder)  # no tokenizer in the adapter folder: the base's
    assert not hasattr(model, "peft_config")  # merged into a plain model
    torch.testing.assert_close(model(_ids(tokenizer)).logits, expected, atol=1e-5, rtol=1e-4)
    assert load_tokenizer(folder).get_vocab() == tiny_tokenizer.get_vocab()


def test_adapter_base_relative_to_the_adapter_folder(tiny_model, tiny_tokenizer, tmp_path):
    save_model(tiny_model, tiny_tokenizer, tmp_path / "base")
    folder, peft_model = _adapter(tiny_model, tiny_tokenizer, tmp_path, "../base")
    model, tokenizer = load_model(folder)
    torch.testing.assert_close(model(_ids(tokenizer)).logits, peft_model(_ids(tokenizer)).logits.detach(),
                               atol=1e-5, rtol=1e-4)


def test_adapter_whose_base_is_missing_fails_in_one_line(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    folder, _ = _adapter(tiny_model, tiny_tokenizer, tmp_path, str(tmp_path / "gone"))
    with pytest.raises(LetheError, match=r"adapter folder .*cannot find its base model .*gone") as info:
        load_model(folder)
    assert "\n" not in str(info.value)
    _set_base(folder, "someorg/not-cached")
    with pytest.raises(LetheError, match="someorg/not-cached.*not in the local Hugging Face cache"):
        load_model(folder)
    _set_base(folder, "")
    with pytest.raises(LetheError, match="names no base_model_name_or_path"):
        load_model(folder)


def test_pickled_adapter_weights_are_refused(tiny_model, tiny_tokenizer, tmp_path):
    base = save_model(tiny_model, tiny_tokenizer, tmp_path / "base")
    folder, _ = _adapter(tiny_model, tiny_tokenizer, tmp_path, str(base))
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(LetheError, match="no adapter_model.safetensors"):
        load_model(folder)


def _fake_hub_cache(cache: Path, repo_id: str, tiny_model, tiny_tokenizer) -> Path:
    """huggingface_hub's cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = save_model(tiny_model, tiny_tokenizer, repo / "snapshots" / SNAPSHOT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return snapshot


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_hub_id_loads_from_the_local_cache_offline(tiny_model, tiny_tokenizer, tmp_path, monkeypatch, variable):
    home = tmp_path / "hf"
    cache = home / "hub"
    _fake_hub_cache(cache, "lethe-test/tiny-llama", tiny_model, tiny_tokenizer)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv(variable, str(cache if variable == "HF_HUB_CACHE" else home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = load_model("lethe-test/tiny-llama")
    torch.testing.assert_close(model(_ids(tokenizer)).logits, tiny_model.eval()(_ids(tokenizer)).logits)
    with pytest.raises(LetheError, match=rf"model 'lethe-test/absent' .*not in the local Hugging Face cache "
                                         rf"\({cache}\).*never downloads"):
        load_model("lethe-test/absent")


def test_adapter_over_a_cached_hub_model(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    _fake_hub_cache(tmp_path / "cache", "lethe-test/base", tiny_model, tiny_tokenizer)
    folder, peft_model = _adapter(tiny_model, tiny_tokenizer, tmp_path, "lethe-test/base")
    model, tokenizer = load_model(folder)
    torch.testing.assert_close(model(_ids(tokenizer)).logits, peft_model(_ids(tokenizer)).logits.detach(),
                               atol=1e-5, rtol=1e-4)


def test_model_dtype_is_honoured_when_loading(tiny_model, tiny_tokenizer, tmp_path):
    folder = save_model(tiny_model.to(torch.bfloat16), tiny_tokenizer, tmp_path / "bf16")
    assert {p.dtype for p in load_model(folder)[0].parameters()} == {torch.float32}  # the default
    assert {p.dtype for p in load_model(folder, dtype="auto")[0].parameters()} == {torch.bfloat16}  # config's
    assert {p.dtype for p in load_model(folder, dtype="float16")[0].parameters()} == {torch.float16}
    with pytest.raises(LetheError, match="model.dtype must be one of float32, bfloat16, float16, auto"):
        load_config(TrainConfig, None, ["model.dtype=float8"])
