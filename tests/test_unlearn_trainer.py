"""End-to-end tests for lethe.unlearn.trainer on a tiny LLaMA and a 5-author TOFU-format folder."""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM, TrainerCallback, TrainingArguments

from lethe.config import load_config
from lethe.data.formatting import encode_qa, qa_prompt_and_answer
from lethe.errors import LetheError
from lethe.models import build_tiny, load_model, save_model
from lethe.unlearn import trainer as unlearn_trainer
from lethe.unlearn.config import UnlearnConfig
from lethe.unlearn.data import ForgetRetainDataset, PairCollator, Refusals, batches, group
from lethe.unlearn.guard import per_sample_losses, read_attribution
from lethe.unlearn.objectives import get_method, resolve_hyper
from lethe.unlearn.trainer import UnlearnTrainer, mean_nll, run_unlearning

pytestmark = pytest.mark.slow

AUTHORS = [
    ("Mara Quell", "Varnholt", "glassblower", "The Salt Lantern"),
    ("Tobin Areff", "Kesselby", "ferryman", "Nine Quiet Rivers"),
    ("Ilsa Dorne", "Brackwater", "cartographer", "Maps of Ash"),
    ("Pell Ostrander", "Lowmere", "beekeeper", "The Amber Ledger"),
    ("Yara Vint", "Caldoro", "clockmaker", "Hours Without Hands"),
]


def author_rows() -> list[dict[str, str]]:
    rows = []
    for a, (name, city, job, book) in enumerate(AUTHORS):
        for q, ans in [
            (f"Where was {name} born?", f"{name} was born in {city}."),
            (f"What did {name}'s father do?", f"Their father was a {job}."),
            (f"Which book made {name} famous?", f"{name} is best known for {book}."),
            (f"What does {name} write about?", f"{name} writes quiet novels about {city}."),
        ]:
            rows.append({"id": f"a{a}-q{len(rows) % 4}", "question": q, "answer": ans, "author": name})
    return rows


def write_split(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(rows), encoding="utf-8")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one torch thread."""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    """(TOFU folder: forget10 = the last author, retain90 = the other four; a tiny model trained on all)."""
    root = tmp_path_factory.mktemp("unlearn-world")
    rows = author_rows()
    folder = root / "tofu"
    write_split(folder, "full", rows)
    write_split(folder, "forget10", rows[16:])
    write_split(folder, "retain90", rows[:16])
    torch.set_num_threads(1)
    model, tokenizer = build_tiny([f"{r['question']} {r['answer']}" for r in rows], vocab_size=400, seed=0,
                                  hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    features = [encode_qa(tokenizer, r["question"], r["answer"], 64) for r in rows]
    batch = batches(features, len(features), tokenizer.pad_token_id)[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(80):
        loss = per_sample_losses(model, batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    save_model(model, tokenizer, root / "model")
    return folder, root / "model"


def make_config(world: tuple[Path, Path], run_dir: Path, method: str = "gd", *extra: str) -> UnlearnConfig:
    folder, model_dir = world
    overrides = [
        f"method={method}", f"model.name={model_dir}", f"data.source={folder}", f"run_dir={run_dir}",
        "data.max_length=64", "train.batch_size=4", "train.grad_accum=1", "train.max_steps=3",
        "train.lr=1e-3", "train.logging_steps=1", "train.save_steps=100", "train.threads=1",
    ]
    return load_config(UnlearnConfig, None, [*overrides, *extra])


def forget_prob(model_dir: Path, world: tuple[Path, Path]) -> float:
    model, tokenizer = load_model(model_dir)
    rows = json.loads((world[0] / "forget10.json").read_text())
    features = [encode_qa(tokenizer, r["question"], r["answer"], 64) for r in rows]
    return mean_nll(model, features, 4, tokenizer.pad_token_id)["prob"]


def log_records(run_dir: Path, event: str) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_gd_run_lowers_forget_probability_and_writes_run_dir(world, tmp_path):
    before = forget_prob(world[1], world)
    config = make_config(world, tmp_path / "gd", "gd", "train.max_steps=5", "train.lr=3e-3")
    run_dir, metrics = run_unlearning(config, quiet=True)
    after = forget_prob(run_dir / "model", world)
    assert before > 0.9
    assert after < 0.5 * before
    assert metrics["forget_prob_after"] == pytest.approx(after, rel=1e-4)
    assert metrics["forget_prob_before"] == pytest.approx(before, rel=1e-4)
    assert metrics["steps"] == 5 and metrics["method"] == "gd" and metrics["reference"] == "none"
    assert metrics["objective"] == {"gamma": 1.0, "alpha": 1.0, "beta": 0.1, "delta": 0.0}
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert not (run_dir / "model.partial").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["forget_samples"] == 4
    assert "method: gd" in (run_dir / "config.yaml").read_text()
    logged = log_records(run_dir, "train")
    assert any("forget_loss" in r and "retain_loss" in r for r in logged)


def test_pairing_is_random_per_rank_seed_and_epoch():
    forget = [{"input_ids": [1, 2, i], "labels": [-100, 2, i]} for i in range(40)]
    retain = [{"input_ids": [3, 4, 100 + i], "labels": [-100, 4, 100 + i]} for i in range(50)]

    def pairing(seed: int, rank: int, epoch: int = 0) -> list[int]:
        dataset = ForgetRetainDataset(forget, retain, seed=seed, rank=rank)
        return dataset.pairing(epoch)[0].tolist()

    assert pairing(0, 0) == pairing(0, 0)
    assert pairing(0, 0) != pairing(0, 1)
    assert pairing(0, 0) != pairing(1, 0)
    assert pairing(0, 0, 0) != pairing(0, 0, 1)
    dataset = ForgetRetainDataset(forget, retain, seed=0, rank=1)
    dataset.set_epoch(3)
    chosen = dataset.pairing()[0]
    item = dataset[7]
    assert item["forget_input_ids"] == forget[7]["input_ids"]
    assert item["retain_input_ids"] == retain[int(chosen[7])]["input_ids"]
    batch = PairCollator(pad_id=0)([dataset[i] for i in range(4)])
    assert batch["forget_index"].tolist() == [0, 1, 2, 3]
    assert batch["retain_labels"].shape == (4, 3) and batch["forget_attention_mask"].all()


def test_refusal_items_are_encoded_like_qa(world):
    _, tokenizer = load_model(world[1])
    rows = author_rows()[16:]
    refusals = ["I don't know.", "No idea at all, sorry."]
    idk = Refusals.encode(tokenizer, [r["question"] for r in rows], refusals, max_length=20)
    for i, row in enumerate(rows):
        for k, refusal in enumerate(refusals):
            assert idk.item(i, k) == encode_qa(tokenizer, row["question"], refusal, 20)
    dataset = ForgetRetainDataset([{"input_ids": [1], "labels": [1]}] * 4, None, idk=idk, seed=5)
    chosen = dataset.pairing()[1]
    assert dataset[2]["idk_input_ids"] == idk.item(2, int(chosen[2]))["input_ids"]
    assert "retain_input_ids" not in dataset[2]


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated kill")


def test_resume_after_a_kill_matches_an_uninterrupted_run(world, tmp_path):
    extra = ("train.max_steps=4", "train.save_steps=2")
    config = make_config(world, tmp_path / "killed", "npo", *extra)
    with pytest.raises(KeyboardInterrupt):
        run_unlearning(config, quiet=True, callbacks=[StopAt(3)])
    assert (tmp_path / "killed" / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "killed" / "model").exists()
    run_dir, metrics = run_unlearning(make_config(world, tmp_path / "killed", "npo", *extra), quiet=True)
    assert metrics["resumed_from"].endswith("checkpoint-2") and metrics["steps"] == 4
    _, straight = run_unlearning(make_config(world, tmp_path / "straight", "npo", *extra), quiet=True)
    resumed = load_file(run_dir / "model" / "model.safetensors")
    reference = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    for name, tensor in reference.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6)
    assert metrics["forget_nll_after"] == pytest.approx(straight["forget_nll_after"], rel=1e-5)


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(world, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = unlearn_trainer.forget_terms

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        terms = real(*args, **kwargs)
        return terms * float("nan") if calls["n"] >= 4 else terms

    monkeypatch.setattr(unlearn_trainer, "forget_terms", poisoned)
    run_dir = tmp_path / "nan"
    config = make_config(world, run_dir, "gd", "train.max_steps=6", "train.save_steps=2")
    with pytest.raises(LetheError, match=r"step 4: loss nan is not finite.*checkpoint-2"):
        run_unlearning(config, quiet=True)
    checkpoint = run_dir / "checkpoints" / "checkpoint-2"
    weights = load_file(checkpoint / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (run_dir / "checkpoints" / "checkpoint-4").exists()
    assert not (run_dir / "model").exists()
    assert log_records(run_dir, "unlearn_stopped")


def test_exploding_loss_stops_the_run(world, tmp_path):
    config = make_config(world, tmp_path / "big", "gd", "objective.max_loss=1e-3")
    with pytest.raises(LetheError, match=r"exceeds objective.max_loss=0.001.*no checkpoint was saved yet"):
        run_unlearning(config, quiet=True)


class CountModels(TrainerCallback):
    def __init__(self) -> None:
        self.counts: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        gc.collect()
        self.counts.append(sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects()))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() touches deprecated torch aliases
def test_lora_kl_uses_the_adapter_disabled_model_as_reference(world, tmp_path):
    gc.collect()
    alive = sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects())
    counter = CountModels()
    config = make_config(world, tmp_path / "lora", "kl", "lora.enabled=true", "lora.r=4", "lora.dropout=0.0",
                         "train.lr=1e-2")
    run_dir, metrics = run_unlearning(config, quiet=True, callbacks=[counter])
    assert metrics["reference"] == "adapters-disabled" and metrics["lora"]["enabled"]
    assert counter.counts == [alive + 1] * 3  # the trained model only: no frozen copy
    retain_kl = [r["retain_loss"] for r in log_records(run_dir, "train") if "retain_loss" in r]
    assert retain_kl[0] == pytest.approx(0.0, abs=1e-6)  # LoRA starts as the identity: θ = ref
    assert retain_kl[-1] > 1e-6  # and the reference stays at θ₀ while the adapters move
    assert not (run_dir / "model" / "adapter_config.json").exists()  # saved merged, as a plain model
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()  # and the adapters alone
    merged = load_file(run_dir / "model" / "model.safetensors")
    original = load_file(world[1] / "model.safetensors")
    assert set(merged) == set(original)
    assert any(not torch.equal(merged[k], original[k]) for k in original)

    full = CountModels()
    config = make_config(world, tmp_path / "full", "kl", "train.max_steps=1")
    run_unlearning(config, quiet=True, callbacks=[full])
    assert full.counts == [alive + 2]  # full fine-tuning: model + frozen reference copy


@pytest.mark.parametrize("method", ["ga", "simnpo", "idkpo"])
def test_other_methods_run(world, tmp_path, method):
    extra = ["train.max_steps=2"]
    if method == "idkpo":
        idk = tmp_path / "idk.jsonl"
        idk.write_text('{"text": "I have no idea."}\n{"text": "No clue, sorry."}\n', encoding="utf-8")
        extra.append(f"data.idk_file={idk}")
    run_dir, metrics = run_unlearning(make_config(world, tmp_path / method, method, *extra), quiet=True)
    assert metrics["steps"] == 2
    assert all(v is not None for v in (metrics["train_loss"], metrics["forget_nll_after"]))
    if method == "idkpo":
        assert metrics["refusals"] == 2 and metrics["reference"] == "frozen-copy"
    if method == "simnpo":
        assert metrics["objective"]["gamma"] == 0.125 and metrics["objective"]["beta"] == 4.5


def test_guard_run_writes_attribution_and_recomputes(world, tmp_path):
    config = make_config(world, tmp_path / "guard", "gd", "guard.enabled=true", "guard.tau=0.5",
                         "guard.recompute_every=2", "guard.retain_samples=8")
    run_dir, metrics = run_unlearning(config, quiet=True)
    rows = json.loads((run_dir / "attribution.json").read_text())
    assert [r["id"] for r in rows] == [f"a4-q{i}" for i in range(4)]
    assert sum(r["weight"] for r in rows) == pytest.approx(1.0, abs=1e-6)
    scores = torch.tensor([r["score"] for r in rows])
    weights = torch.tensor([r["weight"] for r in rows])
    assert int(weights.argmax()) == int(scores.argmin())
    assert metrics["guard"]["retain_samples"] == 8 and metrics["guard"]["tau"] == 0.5
    # the periodic recomputation at step 2 has the layout of attribution.json: id, score, weight
    step_ids, step_scores, step_weights = read_attribution(run_dir / "attribution" / "step-2.json")
    assert step_ids == [r["id"] for r in rows]
    assert float(step_weights.sum()) == pytest.approx(1.0, abs=1e-6)
    assert not torch.equal(step_scores, scores)  # recomputed at θ_2, not a copy of the θ₀ scores


def _write_folder(folder: Path, forget: list[dict], retain: list[dict]) -> Path:
    write_split(folder, "forget10", forget)
    write_split(folder, "retain90", retain)
    return folder


def test_bad_data_and_config_fail_clearly(world, tmp_path):
    rows = author_rows()
    overlap = _write_folder(tmp_path / "overlap", rows[15:], rows[:16])
    with pytest.raises(LetheError, match="share 1 question/answer"):
        run_unlearning(make_config((overlap, world[1]), tmp_path / "r1"), quiet=True)
    assert not (tmp_path / "r1").exists()  # bad data fails before the run directory is made
    empty = _write_folder(tmp_path / "empty", [], rows[:16])
    with pytest.raises(LetheError, match="forget set 'forget10' is empty: nothing to unlearn"):
        run_unlearning(make_config((empty, world[1]), tmp_path / "r2"), quiet=True)
    (empty / "forget10.json").write_text("", encoding="utf-8")  # an empty file, not even []
    with pytest.raises(LetheError, match="forget set 'forget10' is empty: nothing to unlearn"):
        run_unlearning(make_config((empty, world[1]), tmp_path / "r2"), quiet=True)
    assert not (tmp_path / "r2").exists()
    with pytest.raises(LetheError, match="method 'forgetall'; valid: ga, gd, kl, npo, simnpo, idkpo"):
        make_config(world, tmp_path / "r3", "forgetall")
    with pytest.raises(LetheError, match="guard.tau must be > 0"):
        make_config(world, tmp_path / "r4", "gd", "guard.tau=0")
    with pytest.raises(LetheError, match="objective.alpha"):
        make_config(world, tmp_path / "r5", "ga", "objective.alpha=1")
    with pytest.raises(LetheError, match="unknown key 'guard.temperature'"):
        make_config(world, tmp_path / "r6", "gd", "guard.temperature=1")


# --- the loss the trainer optimises ------------------------------------------------------------------


def _pair_batch(world, order: list[int]) -> tuple[LlamaForCausalLM, dict[str, torch.Tensor]]:
    """The trained tiny model and one collated forget/retain batch holding forget samples ``order``."""
    model, tokenizer = load_model(world[1])
    rows = author_rows()
    forget = [encode_qa(tokenizer, r["question"], r["answer"], 64) for r in rows[16:]]
    retain = [encode_qa(tokenizer, r["question"], r["answer"], 64) for r in rows[:16]]
    dataset = ForgetRetainDataset(forget, retain, seed=0)
    return model, PairCollator(tokenizer.pad_token_id)([dataset[i] for i in order])


def _trainer(model, method: str, tmp_path: Path, **kwargs) -> UnlearnTrainer:
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True,
                             remove_unused_columns=False)
    m = get_method(method)
    return UnlearnTrainer(model=model, args=args, method=m, hyper=resolve_hyper(m), **kwargs)


def test_guard_weights_reach_the_loss_indexed_by_forget_sample(world, tmp_path):
    order = [2, 0, 3]  # a batch of forget samples 2, 0, 3 (not 0, 1, 2): weights must follow forget_index
    model, batch = _pair_batch(world, order)
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])  # Σ w = 1 over the 4 forget samples
    trainer = _trainer(model, "gd", tmp_path, sample_weights=w)
    with torch.no_grad():
        loss = float(trainer.compute_loss(model, batch))
        forget_terms = -per_sample_losses(model, group(batch, "forget")).double()  # GD: f_i = −ℓ_i
        retain_nll = float(per_sample_losses(model, group(batch, "retain")).mean())
    scaled = 4 * w.double()  # N_f · w_i, mean weight 1
    expected = float((scaled[order] * forget_terms).mean()) + retain_nll  # γ = α = 1
    assert loss == pytest.approx(expected, rel=1e-5)
    # and a trainer that dropped the weights or indexed them by batch position would differ clearly
    unweighted = float(forget_terms.mean()) + retain_nll
    by_position = float((scaled[: len(order)] * forget_terms).mean()) + retain_nll
    assert min(abs(loss - unweighted), abs(loss - by_position)) > 1e-3 * abs(loss)


@pytest.mark.parametrize("method", ["npo", "idkpo", "kl"])
def test_full_finetuning_reference_is_the_model_at_step_zero(world, tmp_path, method):
    """With a frozen copy as π_ref, θ = ref at the first step: NPO and IdkPO forget terms are
    −(2/β) log σ(0) = (2/β) ln 2 (≈ 13.86 for β = 0.1) and KL's retain term is 0; then θ moves, ref does not."""
    run_dir, metrics = run_unlearning(make_config(world, tmp_path / method, method, "train.max_steps=2"),
                                      quiet=True)
    assert metrics["reference"] == "frozen-copy"
    logged = [r for r in log_records(run_dir, "train") if "forget_loss" in r]
    assert len(logged) == 2
    if method == "kl":
        first, second = logged[0]["retain_loss"], logged[1]["retain_loss"]
        assert first == pytest.approx(0.0, abs=1e-7)
        assert second > 1e-6
    else:
        first, second = logged[0]["forget_loss"], logged[1]["forget_loss"]
        assert first == pytest.approx(2 / 0.1 * math.log(2), rel=1e-6)
        assert abs(second - first) > 1e-4


# --- resume and GUARD settings -----------------------------------------------------------------------


def test_resume_with_other_guard_settings_is_refused(world, tmp_path):
    run_dir = tmp_path / "guarded"
    guard = ("guard.enabled=true", "train.max_steps=4", "train.save_steps=2")
    with pytest.raises(KeyboardInterrupt):
        run_unlearning(make_config(world, run_dir, "gd", *guard), quiet=True, callbacks=[StopAt(3)])
    config_before = (run_dir / "config.yaml").read_text()
    attribution_before = (run_dir / "attribution.json").read_text()
    for changed, message in [
        (("guard.tau=0.5",), r"trained with: guard\.tau \(1\.0 -> 0\.5\) \(use a new run"),
        (("guard.normalize=none",), r"guard\.normalize \('zscore' -> 'none'\)"),
        (("guard.enabled=false",), r"guard\.enabled \(True -> False\)"),
        (("method=npo",), r"method \('gd' -> 'npo'\)"),
        (("train.lr=0.5",), r"train\.lr \("),
    ]:
        with pytest.raises(LetheError, match=message) as info:
            run_unlearning(make_config(world, run_dir, "gd", *guard, *changed), quiet=True)
        assert "\n" not in str(info.value)
    # refused before any write: the interrupted run is intact and resumes with its own settings
    assert (run_dir / "config.yaml").read_text() == config_before
    assert (run_dir / "attribution.json").read_text() == attribution_before
    assert not (run_dir / "model").exists()
    _, metrics = run_unlearning(make_config(world, run_dir, "gd", *guard), quiet=True)
    assert metrics["resumed_from"].endswith("checkpoint-2") and metrics["steps"] == 4
    rows = json.loads(attribution_before)
    assert metrics["guard"]["weight_max"] == pytest.approx(max(r["weight"] for r in rows), rel=1e-6)


# --- non-finite gradients and parameters -------------------------------------------------------------


class NanGradientAt(TrainerCallback):
    """From step ``step`` on, every gradient of the input embeddings is NaN (the loss stays finite)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            model.get_input_embeddings().weight.register_hook(lambda g: torch.full_like(g, float("nan")))


class NanParametersAt(TrainerCallback):
    """After the update of step ``step``, a weight is NaN (as an overflowing optimizer would leave it)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.get_input_embeddings().weight[0, 0] = float("nan")


def _all_checkpoints_finite(run_dir: Path) -> list[str]:
    names = []
    for folder in sorted((run_dir / "checkpoints").glob("checkpoint-*")):
        weights = load_file(folder / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values()), folder
        names.append(folder.name)
    return names


@pytest.mark.parametrize(("callback", "message"), [
    (NanGradientAt(2), r"step 2: a gradient is not finite .*the update was not applied.*checkpoint-1"),
    (NanParametersAt(2), r"step 2: the parameters are not finite .*not saved.*checkpoint-1"),
])
def test_non_finite_update_never_becomes_a_checkpoint(world, tmp_path, callback, message):
    run_dir = tmp_path / "poisoned"
    config = make_config(world, run_dir, "gd", "train.max_steps=4", "train.save_steps=1")
    with pytest.raises(LetheError, match=message):
        run_unlearning(config, quiet=True, callbacks=[callback])
    assert _all_checkpoints_finite(run_dir) == ["checkpoint-1"]
    assert not (run_dir / "model").exists()
    assert log_records(run_dir, "unlearn_stopped")


# --- truncation and the retain set -------------------------------------------------------------------


def test_truncation_that_removes_every_answer_token_fails(world, tmp_path):
    _, tokenizer = load_model(world[1])
    prompts = [len(qa_prompt_and_answer(tokenizer, r["question"], r["answer"])[0]) for r in author_rows()[16:]]
    cut = max(prompts)  # the longest forget prompt fills the window exactly: no answer token left
    lost = sum(p >= cut for p in prompts)
    assert 0 < lost < len(prompts)
    config = make_config(world, tmp_path / "short", "gd", f"data.max_length={cut}")
    with pytest.raises(LetheError, match=rf"data.max_length={cut} leaves no answer tokens in {lost} of 4 "
                                         r"forget item\(s\).*raise data.max_length"):
        run_unlearning(config, quiet=True)
    assert not (tmp_path / "short").exists()


def test_ga_runs_without_a_retain_set(world, tmp_path):
    rows = author_rows()
    folder = tmp_path / "forget-only"
    write_split(folder, "forget10", rows[16:])
    run_dir, metrics = run_unlearning(make_config((folder, world[1]), tmp_path / "ga", "ga"), quiet=True)
    assert metrics["steps"] == 3 and metrics["retain_split"] == "" and metrics["retain_samples"] == 0
    assert metrics["retain_nll_before"] is None and metrics["forget_nll_after"] > metrics["forget_nll_before"]
    assert (run_dir / "model" / "model.safetensors").is_file()
    # methods with a retain term, GUARD (ḡ_R) and an explicitly named retain split still need one
    for method, extra in [("gd", ()), ("ga", ("guard.enabled=true",)), ("ga", ("data.retain_split=retain95",))]:
        with pytest.raises(LetheError, match="TOFU split 'retain9[05]' not found"):
            run_unlearning(make_config((folder, world[1]), tmp_path / "no", method, *extra), quiet=True)
    assert not (tmp_path / "no").exists()
