"""Where data comes from: ``embedded`` is the generated fictional world, cached per (version, authors, seed)."""

from __future__ import annotations

from pathlib import Path

from lethe.data.fictional import GENERATOR_VERSION, generate_world
from lethe.errors import LetheError
from lethe.models import cache_dir
from lethe.runs import publish_dir

EMBEDDED = "embedded"


def embedded_world(n_authors: int = 100, seed: int = 0, overlap: float = 0.0) -> Path:
    """The embedded world's folder, generated on first use (about a second) into the cache; ``overlap`` > 0:
    forget authors share facts with retain authors (:func:`lethe.data.fictional.generate_world`)."""
    # keyed by the generator's version too: a newer Lethe never reads an older generator's cached world
    folder = cache_dir() / (f"world-v{GENERATOR_VERSION}-n{n_authors}-s{seed}" + (f"-o{overlap:g}" if overlap else ""))

    def complete(path: Path) -> bool:  # another process may finish first; its world is byte-identical
        return (path / "world.json").is_file()

    if not complete(folder):
        publish_dir(folder, lambda staging: generate_world(staging, n_authors=n_authors, seed=seed,
                                                                  overlap=overlap), complete)
    return folder


def resolve_source(source: str, *, n_authors: int = 100, seed: int = 0) -> Path:
    if source == EMBEDDED:
        return embedded_world(n_authors, seed)
    path = Path(source).expanduser()
    if not path.exists():
        raise LetheError(f"data source not found: {path}")
    return path
