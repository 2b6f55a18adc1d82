"""examples/trl_sft_goldfish.py: TRL's SFTTrainer trains with lethe.GoldfishCollator (a few steps, tiny model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from conftest import PLAIN_SENTENCES
from lethe.losses import IGNORE_INDEX
from lethe.train.goldfish import goldfish_mask

pytest.importorskip("trl", reason="TRL is the optional extra lethe[trl]")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trl_sft_goldfish.py"


def _example():
    spec = importlib.util.spec_from_file_location("trl_sft_goldfish", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nll(model, batch, labels) -> float:
    """Mean next-token NLL over the labels that are not −100 (what a causal LM loss averages)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = labels[:, 1:]
    return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                                   ignore_index=IGNORE_INDEX))


def test_sft_trainer_trains_on_goldfish_labels(tiny_model, tiny_tokenizer, tmp_path, one_thread, monkeypatch):
    """The batches SFTTrainer trains on are TRL's (padding at −100) with exactly the goldfish-masked tokens also
    at −100, SFTTrainer's loss is the mean over the remaining labels only, and the weights move."""
    example = _example()
    seen: list[dict[str, torch.Tensor]] = []
    collate = example.GoldfishCollator.__call__

    def recording(self, features):
        batch = collate(self, features)
        seen.append({key: batch[key].clone() for key in ("input_ids", "labels", "attention_mask")})
        return batch

    monkeypatch.setattr(example.GoldfishCollator, "__call__", recording)
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    texts = [f"{a} and {b}" for a, b in zip(PLAIN_SENTENCES, PLAIN_SENTENCES[1:], strict=False)] * 2
    trainer = example.train_sft_goldfish(tiny_model, tiny_tokenizer, texts, tmp_path / "out", k=3, h=2,
                                         max_steps=3, batch_size=4, lr=1e-2)
    assert trainer.state.global_step == 3 and len(seen) >= 3
    dropped = kept = 0
    for batch in seen:
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
        goldfish = goldfish_mask(ids, k=3, h=2, strategy="hash", special_ids=tiny_tokenizer.all_special_ids)
        real = mask.bool()
        expected = torch.where(real & ~goldfish, ids, torch.full_like(ids, IGNORE_INDEX))
        assert torch.equal(labels, expected)
        dropped += int((real & goldfish).sum())
        kept += int((labels != IGNORE_INDEX).sum())
    assert 0.2 < dropped / (dropped + kept) < 0.45  # about 1/k of the real tokens
    moved = [name for name, p in tiny_model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert moved

    batch, model = seen[0], trainer.model.eval()
    with torch.no_grad():
        loss = float(trainer.compute_loss(model, dict(batch)))
        goldfish_loss = _nll(model, batch, batch["labels"])
        full = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        full_loss = _nll(model, batch, full)
    assert loss == pytest.approx(goldfish_loss, rel=1e-4)
    assert abs(loss - full_loss) > 1e-3  # the dropped tokens are not in SFTTrainer's loss
