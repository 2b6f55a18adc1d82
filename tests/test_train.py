"""Training through HF Trainer: loss goes down, goldfish removes ~1/k of the supervision, resume works."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import lethe.train.trainer as trainer_module
from lethe.config import GoldfishSettings, TrainConfig, load_config
from lethe.data.formatting import encode_qa
from lethe.data.text import stable_doc_id
from lethe.data.tofu import load_split
from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.models import load_tokenizer_folder
from lethe.train.collator import CausalLMCollator
from lethe.train.trainer import encode_records, load_training_records, run_training

TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.intermediate_size=64",
        "model.vocab_size=400", "train.logging_steps=5", "train.batch_size=4", "train.lr=0.003"]


def _config(source: Path, run_dir: Path, *extra: str) -> TrainConfig:
    overrides = [f"data.source={source}", f"run_dir={run_dir}", "data.limit=8", *TINY, *extra]
    return load_config(TrainConfig, None, overrides)


def _logged(run_dir: Path) -> list[dict]:
    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [e for e in events if e["event"] == "train" and "loss" in e]


def _patch_init(monkeypatch, after) -> None:
    """Run ``after(trainer)`` on every LetheTrainer that run_training builds."""
    original = trainer_module.LetheTrainer.__init__

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        after(self)

    monkeypatch.setattr(trainer_module.LetheTrainer, "__init__", patched)


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
    assert not (tmp_path / "r").exists()  # data is checked before the run directory is made


def test_bad_data_leaves_no_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # without run_dir, a run would go to ./runs/train-<timestamp>
    (tmp_path / "empty.jsonl").write_text("")
    for source in ("empty.jsonl", "missing.jsonl"):
        with pytest.raises(LetheError, match=source):
            run_training(load_config(TrainConfig, None, [f"data.source={source}", *TINY]), quiet=True)
    assert not (tmp_path / "runs").exists()


def test_qa_format_defaults_to_full_and_names_the_split_to_set(world_dir):
    qa = [f"data.source={world_dir}", "data.format=qa"]
    records = load_training_records(load_config(TrainConfig, None, qa))
    assert len(records) == len(load_split(world_dir, "full"))
    hint = r"; set data\.file to a QA split name \(this folder has: full, forget01"
    with pytest.raises(LetheError, match=r"data\.file='biographies\.jsonl' .*field 'question' missing" + hint):
        load_training_records(load_config(TrainConfig, None, [*qa, "data.file=biographies.jsonl"]))
    with pytest.raises(LetheError, match=r"data\.file='forget99' .*split 'forget99' not found: .*" + hint):
        load_training_records(load_config(TrainConfig, None, [*qa, "data.file=forget99"]))


def test_token_counts_are_summed_over_processes_at_log_time(world_dir, tmp_path, monkeypatch):
    extra = ("train.max_steps=4", "train.grad_accum=2", "train.logging_steps=2")
    one_dir, one = run_training(_config(world_dir, tmp_path / "one", *extra), quiet=True)
    syncs = []

    def two_identical_ranks(trainer):
        def reduce(tensor, reduction="mean"):
            assert reduction == "sum"
            syncs.append(tensor.clone())
            return tensor * 2
        trainer.accelerator.reduce = reduce

    _patch_init(monkeypatch, two_identical_ranks)
    two_dir, two = run_training(_config(world_dir, tmp_path / "two", *extra), quiet=True)
    assert (two["supervised_tokens"], two["input_tokens"]) == (2 * one["supervised_tokens"], 2 * one["input_tokens"])
    assert [e["supervised_tokens"] for e in _logged(two_dir)] == [2 * e["supervised_tokens"] for e in _logged(one_dir)]
    assert [e["input_tokens"] for e in _logged(two_dir)] == [2 * e["input_tokens"] for e in _logged(one_dir)]
    assert len(syncs) <= 5  # at the 2 logs, the save and the end, not at each of the 8 micro-steps
    assert len([t for t in syncs if t.any()]) == 2  # each log carries the 4 micro-steps since the last one
    assert sum(int(t[0]) for t in syncs) == one["supervised_tokens"]  # each micro-step counted exactly once


def _documents(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def test_resume_uses_the_saved_tokenizer_and_refuses_other_settings(world_dir, tmp_path):
    docs = _documents(tmp_path / "docs.jsonl", [json.loads(line)["text"] for line in
                                               (world_dir / "biographies.jsonl").read_text().splitlines()[:8]])
    run = tmp_path / "run"
    run_training(_config(docs, run, "train.max_steps=4", "train.save_steps=4"), quiet=True)
    saved_vocab = load_tokenizer_folder(run / "tokenizer").get_vocab()
    _documents(docs, ["ab ba " * 20] * 8)  # changed data: a retrained tokenizer would be far smaller
    with pytest.raises(LetheError, match=r"cannot resume .*: train\.lr \(0\.003 -> 0\.01\) \(use a new --run-dir"):
        run_training(_config(docs, run, "train.max_steps=6", "train.save_steps=4", "train.lr=0.01"), quiet=True)
    _, metrics = run_training(_config(docs, run, "train.max_steps=6", "train.save_steps=4"), quiet=True)
    assert metrics["resumed_from"].endswith("checkpoint-4") and metrics["steps"] == 6  # extended
    assert load_tokenizer_folder(run / "model").get_vocab() == saved_vocab
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert ["train.max_steps (4 -> 6)"] in [e["changes"] for e in events if e["event"] == "resume_config_changes"]
    assert "max_steps: 6" in (run / "config.yaml").read_text()


def test_random_goldfish_masks_depend_only_on_the_sequence_and_seed():
    def collator(seed: int) -> CausalLMCollator:
        return CausalLMCollator(pad_id=0, goldfish=GoldfishSettings(enabled=True, k=4, strategy="random", seed=seed))

    long_ids, short_ids = list(range(5, 205)), list(range(300, 360))
    a = {"input_ids": long_ids, "labels": long_ids, "doc_id": 1}
    b = {"input_ids": short_ids, "labels": short_ids, "doc_id": 2}
    first = collator(7)([a, b])["labels"]
    resumed = collator(7)  # a new process after a resume: it has collated nothing yet
    resumed([b])
    again = resumed([b, a])["labels"]  # other batch position, other padding, other call count
    assert torch.equal(first[0], again[1]) and torch.equal(first[1, :60], again[0, :60])
    dropped = first[0, 1:].eq(IGNORE_INDEX).float().mean().item()
    assert 0.15 < dropped < 0.35
    assert not torch.equal(first[0], collator(8)([a])["labels"][0])
    next_epoch = collator(7)
    next_epoch.epoch = 1
    assert not torch.equal(first[0], next_epoch([a])["labels"][0])  # a fresh mask every epoch
    copies = collator(7)([{**a, "sample_index": 0}, {**a, "sample_index": 1}])["labels"]
    assert not torch.equal(copies[0], copies[1])  # repeated copies of a passage: independent masks


def test_random_goldfish_masks_change_per_epoch_and_survive_a_resume(world_dir, tmp_path, monkeypatch):
    """Two epochs of one batch each: the trained labels differ between epochs; a run killed after epoch 1
    and resumed trains epoch 2 on exactly the labels of the uninterrupted run."""
    seen: list[dict[tuple[int, ...], torch.Tensor]] = []  # per step: each document's (unpadded) labels
    original = trainer_module.LetheTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        rows = zip(inputs["input_ids"], inputs["labels"], inputs["attention_mask"].sum(1), strict=True)
        seen.append({tuple(ids[:n].tolist()): labels[:n].clone() for ids, labels, n in rows})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer_module.LetheTrainer, "compute_loss", recording)
    settings = ("data.limit=4", "train.batch_size=4", "train.save_steps=1", "train.goldfish.enabled=true",
                "train.goldfish.strategy=random", "train.goldfish.h=1")
    run_training(_config(world_dir, tmp_path / "whole", "train.max_steps=2", *settings), quiet=True)
    epoch1, epoch2 = seen
    assert epoch1.keys() == epoch2.keys() and len(epoch1) == 4
    assert all(not torch.equal(epoch1[doc], epoch2[doc]) for doc in epoch1)
    seen.clear()
    run_training(_config(world_dir, tmp_path / "cut", "train.max_steps=1", *settings), quiet=True)
    run_training(_config(world_dir, tmp_path / "cut", "train.max_steps=2", *settings), quiet=True)
    assert len(seen) == 2
    for step, expected in zip(seen, (epoch1, epoch2), strict=True):
        assert step.keys() == expected.keys() and all(torch.equal(step[d], expected[d]) for d in step)


def test_training_collator_never_drops_special_tokens(world_dir, tmp_path, monkeypatch):
    batches = []
    original = trainer_module.LetheTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        batches.append((inputs["input_ids"].clone(), inputs["labels"].clone()))
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer_module.LetheTrainer, "compute_loss", recording)
    goldfish = ("train.goldfish.enabled=true", "train.goldfish.k=2", "train.goldfish.h=4")
    run, _ = run_training(_config(world_dir, tmp_path / "gf", "train.max_steps=2", *goldfish), quiet=True)
    eos = load_tokenizer_folder(run / "tokenizer").eos_token_id
    eos_seen = 0
    for input_ids, labels in batches:
        at_eos = input_ids.eq(eos)
        eos_seen += int(at_eos.sum())
        assert labels[at_eos].eq(eos).all()  # EOS stays a target under `hash` (k=2 would drop half of them)
        assert labels[:, 1:].eq(IGNORE_INDEX).float().mean() > 0.3  # goldfish is on
    assert eos_seen == 8


def test_doc_ids_come_from_record_ids_or_content(tiny_tokenizer, tmp_path):
    records = [{"id": "bio-1", "text": "Alpha beta."}, {"id": "bio-1", "text": "Another text."},
               {"id": None, "text": "Gamma delta."}, {"id": None, "text": "Gamma delta."},
               {"id": None, "text": "Epsilon."}, {"id": "bio-2", "text": "Alpha beta."}]
    ids = [f["doc_id"] for f in encode_records(records, tiny_tokenizer, 64)]
    assert ids[0] == ids[1] == 5442024423419501780  # stable across processes (no salted hash())
    assert ids[2] == ids[3] == 4049215683454410147  # repetitions without an id share one
    assert len({ids[0], ids[2], ids[4], ids[5]}) == 4 and all(0 <= i < 2**63 for i in ids)
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "Same."}\n{"text": "Same."}\n{"text": "Other."}\n{"id": 7, "text": "Same."}\n')
    loaded = load_training_records(load_config(TrainConfig, None, [f"data.source={docs}"]))
    assert [r["id"] for r in loaded] == [None, None, None, "7"]
    doc_ids = [f["doc_id"] for f in encode_records(loaded, tiny_tokenizer, 64)]
    assert doc_ids[0] == doc_ids[1] == stable_doc_id(None, "Same.") and len(set(doc_ids)) == 3
