"""Goldfish loss inside TRL's ``SFTTrainer``: ``lethe.GoldfishCollator`` around TRL's own collator.

    pip install 'lethe[trl]'
    python examples/trl_sft_goldfish.py MODEL TEXTS.jsonl OUT_DIR [--k 4] [--h 13] [--max-steps 100]

MODEL is anything ``lethe`` loads (a model or peft adapter folder, ``smollm2-135m``, a hub id in the local
HF cache); TEXTS.jsonl holds one ``{"text": ...}`` per line. SFTTrainer tokenizes the texts, TRL's collator
pads them and builds ``labels``, and ``GoldfishCollator`` then sets a hashed 1/k of those labels to −100,
so the model never gets the loss of those tokens (Hans et al. 2024). ``tests/test_trl_example.py`` runs
:func:`train_sft_goldfish` on a tiny model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from lethe import GoldfishCollator


def train_sft_goldfish(model, tokenizer, texts: list[str], output_dir: str | Path, *, k: int = 4, h: int = 13,
                       max_steps: int = 100, batch_size: int = 4, lr: float = 1e-4) -> SFTTrainer:
    """Fine-tune ``model`` on ``texts`` with TRL's SFTTrainer and goldfish loss; returns the trained trainer."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    collator = GoldfishCollator(DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id),
                                k=k, h=h, special_ids=tokenizer.all_special_ids)
    args = SFTConfig(output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=batch_size,
                     learning_rate=lr, logging_steps=10, save_strategy="no", report_to="none",
                     use_cpu=True, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"text": t} for t in texts]),
                         processing_class=tokenizer, data_collator=collator)
    trainer.train()
    return trainer


def main() -> None:
    from lethe.models import load_model, save_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("texts", help="JSONL, one {\"text\": ...} per line")
    parser.add_argument("out")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--h", type=int, default=13)
    parser.add_argument("--max-steps", type=int, default=100)
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    lines = Path(args.texts).read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    trainer = train_sft_goldfish(model, tokenizer, texts, Path(args.out) / "checkpoints", k=args.k, h=args.h,
                                 max_steps=args.max_steps)
    save_model(trainer.model, tokenizer, Path(args.out) / "model")
    print(f"saved {Path(args.out) / 'model'}")


if __name__ == "__main__":
    main()
