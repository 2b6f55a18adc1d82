"""MemSinks: sink subsets (golden rows, cardinality), hooks, modes, baking, training integration."""

import copy
import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lethe.cli import main
from lethe.errors import LetheError
from lethe.train.collator import CausalLMCollator
from lethe.train.memsinks import (
    MemSinks,
    MemSinksSpec,
    bake,
    down_projections,
    n_active_sinks,
    reference_powers,
    sink_mask,
    spec_for,
)


def _bits(mask: torch.Tensor) -> str:
    return "".join("1" if bit else "0" for bit in mask.tolist())


def test_reference_strategy_matches_the_golden_rows():
    assert reference_powers(5).tolist() == [1, 1588635695, 3795633075, 221140205, 1169418494]
    masks = sink_mask(torch.tensor([1, 7]), 32, 0.3, strategy="reference")
    assert _bits(masks[0]) == "10000000010001010110100001100011"
    assert _bits(masks[1]) == "10000000010101110010110001001011"


def test_reference_flaw_sink_zero_always_on_for_small_ids():
    masks = sink_mask(torch.arange(1, 2000), 64, 0.3, strategy="reference")
    assert masks[:, 0].all()  # documented flaw of the reference scheme (r_0 = s * 2^16 mod M is small)


def test_hash_strategy_has_fixed_cardinality_and_no_degenerate_sinks():
    ids = torch.arange(1, 4001)
    masks = sink_mask(ids, 90, 0.3, strategy="hash", seed=0)
    assert masks.sum(-1).eq(n_active_sinks(90, 0.3)).all() and n_active_sinks(90, 0.3) == 27
    frequency = masks.float().mean(0)
    assert frequency.min() > 0.2 and frequency.max() < 0.4  # every sink used by ~30% of the IDs
    assert not torch.equal(masks, sink_mask(ids, 90, 0.3, seed=1))  # keyed by the seed
    assert not torch.equal(masks, sink_mask(ids, 90, 0.3, layer=3))  # per-layer subsets differ
    overlap = (masks[:-1] & masks[1:]).sum(-1).float().mean()  # neighbouring IDs overlap like random ones
    assert 6.0 < overlap < 10.5  # expectation 27 * 27 / 90 = 8.1


def test_per_token_masks_follow_ids_and_padding_gets_no_sinks():
    ids = torch.tensor([[5, 5, 9, -1], [9, -1, -1, -1]])
    masks = sink_mask(ids, 40, 0.3)
    assert torch.equal(masks[0, 0], masks[0, 1]) and torch.equal(masks[0, 2], masks[1, 0])
    assert not masks[0, 3].any() and not masks[1, 1:].any()
    assert torch.equal(masks[0, 2], sink_mask(torch.tensor([9]), 40, 0.3)[0])


@pytest.mark.parametrize("bad", [0, -2])
def test_id_zero_and_negative_ids_are_rejected(bad):
    with pytest.raises(LetheError, match="must be >= 1"):
        sink_mask(torch.tensor([[3, bad]]), 16, 0.3)


@pytest.mark.parametrize(("p_gen", "p_mem"), [(0.0, 0.3), (1.0, 0.3), (0.7, 0.0), (0.7, 1.5)])
def test_probabilities_out_of_range_are_rejected(tiny_model, p_gen, p_mem):
    with pytest.raises(LetheError, match="p_gen must be in|p_mem must be in"):
        spec_for(tiny_model, p_gen=p_gen, p_mem=p_mem)


def test_a_model_without_a_down_projection_is_rejected():
    with pytest.raises(LetheError, match="no recognizable MLP down projection"):
        spec_for(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def _batch(tokenizer, texts, doc_ids):
    features = []
    for text, doc in zip(texts, doc_ids, strict=True):
        ids = tokenizer(text)["input_ids"]
        features.append({"input_ids": ids, "labels": ids, "doc_id": doc})
    return CausalLMCollator(pad_id=tokenizer.pad_token_id)(features)


TEXTS = ["the quick brown fox jumps over the lazy dog near the river bank",
         "a small red bird sings in the morning while the dog is running home"]


def test_masked_sinks_get_exactly_zero_gradient(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    batch = _batch(tiny_tokenizer, TEXTS[:1], [11])
    with MemSinks(tiny_model, spec, "train") as sinks:
        sinks.set_ids(batch["doc_ids"])
        out = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["input_ids"])
        out.loss.backward()
    on = sink_mask(torch.tensor([11]), spec.n_sink, spec.p_mem)[0]
    for _, module in down_projections(tiny_model):
        grad = module.weight.grad  # [hidden, I]: column j gets the gradient of unit j
        sink_grad = grad[:, spec.n_shared:]
        assert sink_grad[:, ~on].abs().max() == 0  # exactly zero
        assert sink_grad[:, on].abs().sum() > 0 and grad[:, : spec.n_shared].abs().sum() > 0
    gate = tiny_model.model.layers[0].mlp.gate_proj.weight.grad[spec.n_shared:]
    assert gate[~on].abs().max() == 0 and gate[on].abs().sum() > 0


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits


def test_dropout_equals_zeroed_sinks_and_scaled_shared_columns(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    batch = _batch(tiny_tokenizer, TEXTS, [3, 4])
    manual = copy.deepcopy(tiny_model)
    for layer in manual.model.layers:
        weight = layer.mlp.down_proj.weight.data
        weight[:, spec.n_shared:] = 0
        weight[:, : spec.n_shared] *= (0.7 + 0.3) / 0.7
    with MemSinks(tiny_model, spec, "dropout"):
        hooked = _logits(tiny_model, batch)
    torch.testing.assert_close(hooked, _logits(manual, batch), rtol=0, atol=1e-5)
    assert (hooked - _logits(tiny_model, batch)).abs().max() > 1e-3  # the mode changes the model


@pytest.mark.parametrize(("mode", "kwargs"), [("all", {}), ("dropout", {}), ("exclude", {"exclude_ids": [3, 8]}),
                                              ("activate", {"activate_id": 4})])
def test_baked_model_saved_as_safetensors_gives_the_hooked_logits(tiny_model, tiny_tokenizer, tmp_path, mode, kwargs):
    from lethe.models import load_model, save_model

    spec = spec_for(tiny_model, per_layer=True, dropout_scale=1.13)
    batch = _batch(tiny_tokenizer, TEXTS, [3, 4])
    with MemSinks(tiny_model, spec, mode, **kwargs):
        hooked = _logits(tiny_model, batch)
    save_model(bake(copy.deepcopy(tiny_model), spec, mode, **kwargs), tiny_tokenizer, tmp_path / "baked")
    reloaded, _ = load_model(tmp_path / "baked")
    assert (tmp_path / "baked" / "model.safetensors").is_file()
    assert (_logits(reloaded, batch) - hooked).abs().max() <= 1e-5


def test_exclude_removes_only_the_given_ids_sinks(tiny_model):
    spec = spec_for(tiny_model)
    from lethe.train.memsinks import mode_scale

    scale = mode_scale(spec, "exclude", exclude_ids=[5])
    gone = sink_mask(torch.tensor([5]), spec.n_sink, spec.p_mem)[0]
    assert scale[spec.n_shared:][gone].eq(0).all() and scale[spec.n_shared:][~gone].eq(0.3).all()
    assert scale[: spec.n_shared].eq(1).all()


def test_gpt2_c_proj_is_hooked_and_baked():
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64)).eval()
    spec = spec_for(model)
    assert spec.projection == "mlp.c_proj" and spec.intermediate_size == 128 and spec.num_layers == 2
    ids = torch.randint(0, 100, (2, 12))
    with MemSinks(model, spec, "dropout"):
        hooked = model(ids).logits
    baked = bake(copy.deepcopy(model), spec, "dropout")
    assert (baked(ids).logits - hooked).abs().max() <= 1e-5
    with MemSinks(model, spec, "train") as sinks:
        sinks.set_ids(torch.full((2, 12), 7))
        assert (model(ids).logits - hooked).abs().max() > 1e-4


def test_ids_survive_shuffling_and_padding(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    first = _batch(tiny_tokenizer, TEXTS, [3, 4])
    swapped = _batch(tiny_tokenizer, TEXTS[::-1], [4, 3])
    n = int(first["attention_mask"][0].sum())
    with MemSinks(tiny_model, spec, "train") as sinks:
        sinks.set_ids(first["doc_ids"])
        a = _logits(tiny_model, first)
        sinks.set_ids(swapped["doc_ids"])
        b = _logits(tiny_model, swapped)
        sinks.set_ids(swapped["doc_ids"].flip(0))  # the same rows with the other document's sinks
        c = _logits(tiny_model, swapped)
    m = int(swapped["attention_mask"][1].sum())
    assert n == m
    torch.testing.assert_close(a[0, :n], b[1, :n], rtol=0, atol=1e-5)
    assert (c[1, :n] - b[1, :n]).abs().max() > 1e-4  # the sinks are the document's own


def test_packed_rows_give_every_document_its_own_logits(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    features = []
    for text, doc in zip(TEXTS, [3, 4], strict=True):
        ids = tiny_tokenizer(text)["input_ids"]
        features.append({"input_ids": ids, "labels": ids, "doc_id": doc})
    plain = CausalLMCollator(pad_id=tiny_tokenizer.pad_token_id)(features)
    packed = CausalLMCollator(pad_id=tiny_tokenizer.pad_token_id, pack_length=128)(features)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    lengths = plain["attention_mask"].sum(1).tolist()
    with MemSinks(tiny_model, spec, "train") as sinks:
        sinks.set_ids(plain["doc_ids"])
        alone = _logits(tiny_model, plain)
        sinks.set_ids(packed["doc_ids"])
        with torch.no_grad():
            together = tiny_model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                                  use_cache=False).logits
    torch.testing.assert_close(together[0, : lengths[0]], alone[0, : lengths[0]], rtol=0, atol=1e-5)
    second = together[0, lengths[0] : lengths[0] + lengths[1]]
    torch.testing.assert_close(second, alone[1, : lengths[1]], rtol=0, atol=1e-5)  # no attention to document 1


def test_gradient_checkpointing_recomputes_with_the_same_masks(tiny_model, tiny_tokenizer):
    spec = spec_for(tiny_model)
    batch = _batch(tiny_tokenizer, TEXTS, [3, 4])
    grads = []
    for checkpointing in (False, True):
        model = copy.deepcopy(tiny_model).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        with MemSinks(model, spec, "train") as sinks:
            sinks.set_ids(batch["doc_ids"])
            labels = batch["input_ids"].masked_fill(batch["attention_mask"].eq(0), -100)
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                  use_cache=False).loss.backward()
        grads.append(model.model.layers[0].mlp.up_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_spec_round_trips_and_a_width_mismatch_is_an_error(tiny_model, tiny_tokenizer, tmp_path):
    spec = spec_for(tiny_model, strategy="reference")
    spec.save(tmp_path)
    assert MemSinksSpec.load(tmp_path) == spec
    wider = json.loads((tmp_path / "memsinks.json").read_text()) | {"intermediate_size": 128}
    (tmp_path / "memsinks.json").write_text(json.dumps(wider))
    with pytest.raises(LetheError, match="describes 2 layers of width 128 but the model has 2 of width 64"):
        MemSinks(tiny_model, MemSinksSpec.load(tmp_path))


# ------------------------------------------------------------------ training integration and CLI
TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.intermediate_size=64",
        "model.vocab_size=400", "train.batch_size=4", "train.lr=0.003", "data.limit=8", "train.logging_steps=5"]


def _train(world_dir, run_dir, *extra):
    from lethe.config import TrainConfig, load_config
    from lethe.train.trainer import run_training

    config = load_config(TrainConfig, None, [f"data.source={world_dir}", f"run_dir={run_dir}", *TINY, *extra])
    return run_training(config, quiet=True)


def test_training_with_memsinks_and_goldfish_saves_the_spec(world_dir, tmp_path):
    run_dir, metrics = _train(world_dir, tmp_path / "run", "train.max_steps=6", "train.memsinks.enabled=true",
                              "train.goldfish.enabled=true", "train.goldfish.k=4")
    spec = MemSinksSpec.load(run_dir / "model")
    assert spec is not None and spec.n_shared == 44 and spec.n_sink == 20 and metrics["memsinks"]["enabled"]
    _, standard = _train(world_dir, tmp_path / "std", "train.max_steps=6")
    assert 0.70 < metrics["supervised_tokens"] / standard["supervised_tokens"] < 0.82  # goldfish still applies
    assert metrics["train_loss"] != pytest.approx(standard["train_loss"], abs=1e-4)  # the sinks changed training


def test_memsinks_training_resumes_with_the_same_masks(world_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    import lethe.train.trainer as trainer_module

    extra = ("train.max_steps=8", "train.save_steps=4", "train.scheduler=constant", "train.memsinks.enabled=true",
             "train.memsinks.per_layer=true")
    reference_dir, _ = _train(world_dir, tmp_path / "ref", *extra)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise KeyboardInterrupt

    original = trainer_module.LetheTrainer.__init__

    def with_kill(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(Kill())

    monkeypatch.setattr(trainer_module.LetheTrainer, "__init__", with_kill)
    with pytest.raises(KeyboardInterrupt):
        _train(world_dir, tmp_path / "killed", *extra)
    monkeypatch.setattr(trainer_module.LetheTrainer, "__init__", original)
    run_dir, metrics = _train(world_dir, tmp_path / "killed", *extra)
    assert metrics["resumed_from"].endswith("checkpoint-4")
    resumed, uninterrupted = (load_file(d / "model" / "model.safetensors") for d in (run_dir, reference_dir))
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-4, atol=1e-5)


def test_cli_bake_and_audit_in_a_memsinks_mode(world_dir, tmp_path, capsys):
    run_dir, _ = _train(world_dir, tmp_path / "run", "train.max_steps=3", "train.memsinks.enabled=true")
    model = run_dir / "model"
    assert main(["memsinks", "bake", str(model), "--mode", "dropout", "--out", str(tmp_path / "baked")]) == 0
    assert (tmp_path / "baked" / "memsinks_baked.json").is_file()
    assert not (tmp_path / "baked" / "memsinks.json").exists()  # a baked model is a plain model
    data = str(world_dir / "biographies.jsonl")
    common = ["--data", data, "--limit", "3", "--suffix-len", "8", "--quiet"]
    assert main(["audit", "extraction", "--model", str(model), "--memsinks-mode", "dropout",
                 "--run-dir", str(tmp_path / "hooked"), *common]) == 0
    assert main(["audit", "extraction", "--model", str(tmp_path / "baked"),
                 "--run-dir", str(tmp_path / "plain"), *common]) == 0
    hooked = json.loads((tmp_path / "hooked" / "extraction.json").read_text())
    plain = json.loads((tmp_path / "plain" / "extraction.json").read_text())
    assert [i["generated_text"] for i in hooked["items"]] == [i["generated_text"] for i in plain["items"]]
    capsys.readouterr()
    # errors: a model without MemSinks, a baked model, an existing --out, bad ids
    assert main(["audit", "extraction", "--model", str(tmp_path / "baked"), "--memsinks-mode", "dropout",
                 "--run-dir", str(tmp_path / "x"), *common]) == 2
    assert "already a baked MemSinks model" in capsys.readouterr().err
    _train(world_dir, tmp_path / "std", "train.max_steps=2")
    assert main(["memsinks", "bake", str(tmp_path / "std" / "model"), "--mode", "dropout",
                 "--out", str(tmp_path / "b2")]) == 2
    assert "was trained without MemSinks" in capsys.readouterr().err and not (tmp_path / "b2").exists()
    assert main(["memsinks", "bake", str(model), "--mode", "all", "--out", str(tmp_path / "baked")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["memsinks", "bake", str(model), "--mode", "exclude", "--ids", "0", "--out", str(tmp_path / "b3")]) == 2
    assert "must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(("override", "message"), [
    ("train.memsinks.p_gen=1.0", "train.memsinks.p_gen must be in"),
    ("train.memsinks.p_mem=0", "train.memsinks.p_mem must be in"),
    ("train.memsinks.strategy=naive", "train.memsinks.strategy must be one of hash, reference"),
])
def test_bad_memsinks_settings_are_one_line_errors(world_dir, tmp_path, capsys, override, message):
    run = tmp_path / "run"
    code = main(["train", f"data.source={world_dir}", *TINY, "train.max_steps=2", "train.memsinks.enabled=true",
                 override, "--run-dir", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not run.exists()
