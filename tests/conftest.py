"""Shared fixtures: a generated world, a tiny BPE tokenizer and tiny LLaMA models (seconds to build)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on two cores: no oversubscription

SHARED_TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"
USER_CACHE = os.environ.get("LETHE_CACHE")  # read before any test points LETHE_CACHE elsewhere

# plain English sentences for tests that train a tokenizer or a model on a few texts (import from conftest)
PLAIN_SENTENCES = [
    "the quick brown fox jumps over the lazy dog near the river bank",
    "a small red bird sings in the morning while the dog is running",
    "every child runs to school and reads a book about the old castle",
    "the farmer grows wheat and corn in the green field by the hill",
    "she walks along the quiet street and counts the yellow houses",
    "my neighbour runs a bakery that sells bread cake and sweet tea",
    "an old sailor mends his nets while gulls circle over the harbour",
    "the library opens at nine and closes when the last reader leaves",
]



class FullLogitsOnly(torch.nn.Module):
    """A wrapper whose forward has no ``logits_to_keep`` (like PEFT's or WHP's): scored from full logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


@pytest.fixture
def one_thread():
    """One torch thread for the test (the CPU is shared; one thread is also fastest for models this small)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


@pytest.fixture
def persistent_cache(tmp_path_factory, monkeypatch) -> Path:
    """The user's Lethe cache ($LETHE_CACHE, else ~/.cache/lethe), for costly one-off conversions.

    Safe to share: the only entry a test puts there is the SmolLM2 conversion, which is renamed into place
    complete, so a later suite run reuses it instead of converting again. An unwritable home falls back to
    the session's folder (a fresh conversion).
    """
    folder = Path(USER_CACHE) if USER_CACHE else Path.home() / ".cache" / "lethe"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        usable = os.access(folder, os.W_OK)
    except OSError:
        usable = False
    if not usable:
        folder = tmp_path_factory.getbasetemp() / "lethe-cache"
    monkeypatch.setenv("LETHE_CACHE", str(folder))
    return folder
