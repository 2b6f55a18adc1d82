"""lethe.GoldfishCollator: goldfish on top of any HF data collator, and inside a plain HF Trainer run."""

import pytest
import torch
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

import lethe
from lethe.errors import LetheError
from lethe.losses import IGNORE_INDEX
from lethe.train.goldfish import apply_goldfish, goldfish_mask


def _features(tokenizer, n=6):
    texts = [f"Author number {i} wrote a long book about the sea and the mountains of the north." * 3
             for i in range(n)]
    return [{"input_ids": tokenizer(t)["input_ids"]} for t in texts]


def _base(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


def test_wraps_hf_collator_and_drops_exactly_the_goldfish_positions(tiny_tokenizer):
    base = _base(tiny_tokenizer)
    features = _features(tiny_tokenizer)
    plain = base(features)
    wrapped = lethe.GoldfishCollator(base, k=4, h=13, special_ids=tiny_tokenizer.all_special_ids)(features)
    assert torch.equal(wrapped["input_ids"], plain["input_ids"])
    expected = apply_goldfish(plain["labels"], plain["input_ids"], 4, 13, "hash",
                              special_ids=tiny_tokenizer.all_special_ids)
    assert torch.equal(wrapped["labels"], expected)
    kept = plain["labels"] != IGNORE_INDEX
    dropped = (wrapped["labels"] == IGNORE_INDEX) & kept
    assert 0.15 < dropped.sum() / kept.sum() < 0.35  # about 1/k of the supervised targets
    assert not ((wrapped["labels"] != IGNORE_INDEX) & ~kept).any()  # padding is never supervised


def test_base_without_labels_gets_input_ids_with_padding_ignored(tiny_tokenizer):
    def pad_only(features):
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features])
        mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features])
        return {"input_ids": ids, "attention_mask": mask}

    features = _features(tiny_tokenizer, 3)
    features[0]["input_ids"] = features[0]["input_ids"][:10]
    batch = lethe.GoldfishCollator(pad_only, k=3, h=5, strategy="static")(features)
    assert (batch["labels"][0, 10:] == IGNORE_INDEX).all()
    static = goldfish_mask(batch["input_ids"][1], 3, 5, "static")
    assert static.any() and torch.equal(batch["labels"][1] == IGNORE_INDEX, static)


@pytest.mark.parametrize(("kwargs", "message"), [({"k": 1}, "k must be an integer >= 2"),
                                                 ({"strategy": "random"}, "per-epoch seeds"),
                                                 ({"strategy": "nope"}, "strategy must be one of")])
def test_bad_settings_are_one_line_errors(tiny_tokenizer, kwargs, message):
    with pytest.raises(LetheError, match=message):
        lethe.GoldfishCollator(_base(tiny_tokenizer), **kwargs)


def test_a_plain_hf_trainer_trains_with_it(tiny_model, tiny_tokenizer, tmp_path):
    collator = lethe.GoldfishCollator(_base(tiny_tokenizer), k=4, h=13, special_ids=tiny_tokenizer.all_special_ids)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to=[],
                             save_strategy="no", logging_steps=1, use_cpu=True, disable_tqdm=True)
    before = [p.detach().clone() for p in tiny_model.parameters()]
    Trainer(model=tiny_model, args=args, train_dataset=_features(tiny_tokenizer), data_collator=collator).train()
    assert any(not torch.equal(a, b) for a, b in zip(before, tiny_model.parameters(), strict=True))
