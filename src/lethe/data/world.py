"""Where data comes from: ``embedded`` means the generated fictional world, cached per (authors, seed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lethe.data.fictional import generate_world
from lethe.errors import LetheError
from lethe.models import cache_dir

EMBEDDED = "embedded"


def embedded_world(n_authors: int = 100, seed: int = 0) -> Path:
    """The embedded world's folder, generated on first use (about a second) into the cache."""
    folder = cache_dir() / f"world-n{n_authors}-s{seed}"
    if not (folder / "world.json").is_file():
        staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        generate_world(staging, n_authors=n_authors, seed=seed)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first; its world is byte-identical
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolve_source(source: str, *, n_authors: int = 100, seed: int = 0) -> Path:
    if source == EMBEDDED:
        return embedded_world(n_authors, seed)
    path = Path(source).expanduser()
    if not path.exists():
        raise LetheError(f"data source not found: {path}")
    return path
