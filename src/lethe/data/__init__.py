"""Lethe's data layer: plain documents, TOFU-format QA splits and the embedded fictional world.

- :mod:`lethe.data.text`: :class:`Document`, :func:`load_documents`, atomic :func:`write_jsonl`;
- :mod:`lethe.data.tofu`: :func:`load_split`, :func:`available_splits`, :func:`load_refusals`;
- :mod:`lethe.data.fictional`: :func:`generate_world`, the seeded generator of invented authors;
- :mod:`lethe.data.world` (data sources) and :mod:`lethe.data.formatting` (tokenization) are imported
  on demand: they pull in torch / transformers.
"""

from lethe.data.fictional import WorldConfig, WorldSummary, generate_world
from lethe.data.text import Document, load_documents, write_json, write_jsonl
from lethe.data.tofu import SPLIT_NAMES, available_splits, load_refusals, load_split

__all__ = [
    "SPLIT_NAMES",
    "Document",
    "WorldConfig",
    "WorldSummary",
    "available_splits",
    "generate_world",
    "load_documents",
    "load_refusals",
    "load_split",
    "write_json",
    "write_jsonl",
]
