"""Shared fixtures: a generated world, a tiny BPE tokenizer and tiny LLaMA models (seconds to build)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on two cores: no oversubscription

SHARED_TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets the same session cache (the embedded world is generated once per worker)."""
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path_factory.getbasetemp() / "lethe-cache"))


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    from lethe.data.fictional import generate_world

    out = tmp_path_factory.mktemp("world")
    generate_world(out, n_authors=20, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(world_dir):
    from lethe.data.text import load_documents
    from lethe.models import train_bpe_tokenizer

    texts = [d.text for d in load_documents(world_dir / "biographies.jsonl")]
    return train_bpe_tokenizer(texts, vocab_size=600)


@pytest.fixture
def tiny_model(tiny_tokenizer):
    from lethe.models import tiny_model as make

    return make(tiny_tokenizer, seed=0, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
