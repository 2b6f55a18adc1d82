"""TOFU evaluation metrics, computed as open-unlearning computes them (numbers compare with its leaderboard).

Sources: TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv 2401.06121) and
open-unlearning (Dorna et al. 2025, github.com/locuslab/open-unlearning: src/evals/metrics/memorization.py,
privacy.py, utility.py, utils.py, mia/min_k.py and configs/eval/tofu_metrics/*.yaml).

Per item i and answer variant y, ℓ(y) = mean NLL over the scored tokens of y, as the input protocol
(:mod:`lethe.audit.tofu_protocol`: ``open-unlearning``, the default, or ``lethe``) defines them. Every ℓ of a
run comes from ONE :func:`lethe.audit.scoring.score_sequences` pass over all variants of all splits.

- probability          p_i = exp(−ℓ(answer)) (length-normalised, open-unlearning's ``prob``);
                       ``*_Q_A_PARA_Prob`` / ``*_Q_A_PERT_Prob``: the paraphrased / perturbed answers
                       (PERT: mean over the perturbed answers of exp(−ℓ), then mean over items).
- normalised prob.     P_true / (P_true + Σ_j P_pert,j + 1e−10), P = exp(−ℓ) (real authors, world facts).
- ROUGE-L recall       rouge_score RougeScorer(["rougeL"], use_stemmer=True).score(answer, generation)
                       .recall; greedy generation from the prompt (max 200 new tokens, stops at EOS),
                       decoded with special tokens skipped, stripped.
- truth ratio          TR_i = exp(−mean_j ℓ(pert_j)) / (exp(−ℓ(correct)) + 1e−10): the mean is over the
                       perturbed answers' *losses* (a geometric mean of their probabilities); correct =
                       paraphrased answer on forget / retain, the answer on real authors / world facts.
                       forget (``forget_truth_ratio``): mean(min(TR, 1/(TR + 1e−10))), closer to 1 better;
                       others (``*_Truth_Ratio``): mean(max(0, 1 − TR)), "true better". The second form,
                       ``forget_truth_ratio_prob_mean`` = mean(c/(c + w + 1e−10)), is open-unlearning's
                       ``prob_mean`` (c = exp(−ℓ(correct)), w = exp(−mean_j ℓ(pert_j))).
- forget quality       scipy.stats.ks_2samp(TR_forget(model), TR_forget(retain model)).pvalue on the raw
                       per-item TR (the retain model's are read from its tofu_eval.json, which must be of
                       the same forget items: same split, count and questions, else LetheError).
- model utility        harmonic mean (as scipy.stats.hmean; 0 if any is 0) of the nine numbers
                       {retain, ra, wf} × {probability (retain: p; ra/wf: normalised p), ROUGE-L recall,
                       truth-ratio score (true better)}.
- MIA min-k (k = 0.4)  s_i = mean of the ⌊0.4·n⌋ (at least 1) lowest log p of the scored tokens without
                       the last one (open-unlearning) / the final EOS (lethe); higher = member.
                       ``mia_min_k`` = ROC-AUC of forget (members) vs holdout (non-members): 1 when the
                       forget answers are far more likely than the holdout ones (open-unlearning's sign).
- privleak             ((1 − AUC) − (1 − AUC_ret)) / ((1 − AUC_ret) + 1e−10) × 100, AUC_ret = the retain
                       model's ``mia_min_k`` (no retain log: 0.5 under open-unlearning, None under lethe):
                       0 = like the retain model; < 0 = forget set more exposed than
                       under the retain model (under-unlearning); > 0 = less exposed (over-unlearning).
- extraction strength  ES_i = 1 − k/n, k = the first index from which the teacher-forced argmax predictions
                       equal the labels to the end (answer tokens, EOS excluded). open-unlearning's search
                       stops at k = n − 1, so a wrong last token gives ES = 1/n, not 0: reproduced by default.
- exact memorization   EM_i = mean_t 1[argmax_t = label_t] over the same tokens.

Sacrifice rate (GUARD, Ma et al. 2025; DESIGN 3.4): SR = (M_retain(before) − M_retain(after)) /
(M_forget(before) − M_forget(after)). For the truth ratio both sides use the same "true better" statistic
mean(max(0, 1 − TR)): ``retain_Truth_Ratio`` and ``forget_Truth_Ratio_true_better``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rouge_score import rouge_scorer
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from lethe.audit import ou_logs
from lethe.audit.generation import generate_with_model_config, greedy_continue
from lethe.audit.scoring import TokenScores, score_sequences
from lethe.audit.tofu_protocol import (
    DEFAULT_PROTOCOL,
    QAItem,
    answer_slice,
    check_protocol,
    describe,
    encode_item,
    ou_generation_text,
    pad_id_of,
)
from lethe.data.tofu import load_split
from lethe.errors import LetheError
from lethe.runs import atomic_write_json

PRIVLEAK_REF_AUC = 0.5  # open-unlearning's privleak ref_value when no retain log is given
EPS = 1e-10  # open-unlearning's guard against division by zero, kept so values match to the last digit
MIN_K = 0.4  # TOFU / open-unlearning min-k fraction
# prompts per generate call (at least; --batch-size when larger): a decode step reads every weight once
# whatever the batch, so on a CPU 20 rows per step cost ~1.6x what 5 rows do (SmolLM2-135M, one thread),
# and one call over all splits' prompts replaces open-unlearning's one call per split (benchmarks/). Rows
# leave the batch at their EOS (lethe.audit.greedy), so a large batch no longer decodes its finished answers
# to the longest one's end: SmolLM2, 80 TOFU prompts, 200 new tokens, one thread: batches of 32 95 s, one
# batch of 80 71 s, identical tokens (generate, batches of 32, before the retiring loop: ~1.46x the 32's).
GENERATION_BATCH = 128
SPLITS = ("forget", "retain", "real_authors", "world_facts")
PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}
FILES = {"retain": "retain_perturbed", "real_authors": "real_authors_perturbed",
         "world_facts": "world_facts_perturbed"}
HAS_PARAPHRASE = ("forget", "retain")
UTILITY_KEYS = (
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
)
SUMMARY_KEYS = (
    "forget_quality", "model_utility", "forget_truth_ratio",
    "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Q_A_PARA_Prob", "forget_Q_A_PERT_Prob",
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Q_A_PARA_Prob", "retain_Q_A_PERT_Prob",
    "retain_Truth_Ratio",
    "ra_Q_A_Prob", "ra_Q_A_PERT_Prob", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob", "wf_Q_A_PERT_Prob", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
    "privleak", "mia_min_k", "extraction_strength", "exact_memorization",
    "retain_extraction_strength", "forget_Truth_Ratio_true_better", "forget_truth_ratio_prob_mean",
)
# sacrifice-rate metric -> (retain summary key, forget summary key)
SACRIFICE_KEYS = {
    "truth_ratio": ("retain_Truth_Ratio", "forget_Truth_Ratio_true_better"),
    "rougeL": ("retain_Q_A_ROUGE", "forget_Q_A_ROUGE"),
    "probability": ("retain_Q_A_Prob", "forget_Q_A_Prob"),
}


# ----------------------------------------------------------------------------------------- pure metrics


def _array(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise LetheError(f"{name}: no values")
    return array


def _row_means(loss_perturbed: Any) -> np.ndarray:
    """Mean over the perturbed answers of each item ([n, m] array, or ragged rows)."""
    if isinstance(loss_perturbed, torch.Tensor | np.ndarray):
        array = _array(loss_perturbed, "loss_perturbed")
        return array.mean(axis=tuple(range(1, array.ndim))) if array.ndim > 1 else array
    rows = [np.asarray(row, dtype=np.float64) for row in loss_perturbed]
    if not rows or any(row.size == 0 for row in rows):
        raise LetheError("loss_perturbed: every item needs at least one perturbed loss")
    return np.array([row.mean() for row in rows])


def truth_ratio(loss_correct: Any, loss_perturbed: Any) -> np.ndarray:
    """Per-item TR = exp(−mean_j ℓ_pert,j) / (exp(−ℓ_correct) + 1e−10) from mean-NLL losses ([n], [n, m])."""
    correct = _array(loss_correct, "loss_correct").reshape(-1)
    wrong = _row_means(loss_perturbed)
    if wrong.shape != correct.shape:
        raise LetheError(f"truth_ratio: {correct.size} correct losses but {wrong.size} perturbed rows")
    return np.exp(-wrong) / (np.exp(-correct) + EPS)


def truth_ratio_prob_mean(loss_correct: Any, loss_perturbed: Any) -> np.ndarray:
    """open-unlearning's second form (aggregator ``prob_mean``): v_i = c / (c + w + 1e−10) with
    c = exp(−ℓ_correct), w = exp(−mean_j ℓ_pert,j); reported as the plain mean of v (1 = only the truth)."""
    correct = np.exp(-_array(loss_correct, "loss_correct").reshape(-1))
    wrong = np.exp(-_row_means(loss_perturbed))
    if wrong.shape != correct.shape:
        raise LetheError(f"truth_ratio_prob_mean: {correct.size} correct losses but {wrong.size} perturbed rows")
    return correct / (correct + wrong + EPS)


def forget_truth_ratio_score(tr: Any) -> float:
    """Forget-split truth-ratio score: mean(min(TR, 1/TR)) (1 = correct and perturbed equally likely)."""
    tr = _array(tr, "truth ratios")
    return float(np.mean(np.minimum(tr, 1.0 / (tr + EPS))))


def utility_truth_ratio_score(tr: Any) -> float:
    """Retain / real-authors / world-facts score: mean(max(0, 1 − TR)) (higher = prefers the truth)."""
    tr = _array(tr, "truth ratios")
    return float(np.mean(np.maximum(0.0, 1.0 - tr)))


def normalised_probability(p_correct: Any, p_perturbed: Any) -> np.ndarray:
    """Per-item P_true / (P_true + Σ_j P_pert,j + 1e−10)."""
    correct = _array(p_correct, "p_correct").reshape(-1)
    if isinstance(p_perturbed, torch.Tensor | np.ndarray):
        wrong = _array(p_perturbed, "p_perturbed")
        wrong = wrong.sum(axis=tuple(range(1, wrong.ndim))) if wrong.ndim > 1 else wrong
    else:
        wrong = np.array([float(np.sum(row)) for row in p_perturbed])
    return correct / (correct + wrong + EPS)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean (as ``scipy.stats.hmean``): 0 when any value is 0; LetheError on negatives / missing."""
    array = _array([float("nan") if v is None else v for v in values], "harmonic_mean")
    if not np.all(np.isfinite(array)):
        raise LetheError("harmonic_mean: a value is missing or not finite")
    if np.any(array < 0):
        raise LetheError(f"harmonic_mean: negative value {float(array.min())}")
    if np.any(array == 0):
        return 0.0
    return float(array.size / np.sum(1.0 / array))


def forget_quality(tr_model: Any, tr_retain: Any) -> float:
    """KS-test p-value between the forget-split truth ratios of the model and of the retain model."""
    model, retain = _array(tr_model, "model truth ratios"), _array(tr_retain, "retain truth ratios")
    return float(ks_2samp(model, retain).pvalue)


def privleak(auc: float, auc_retain: float) -> float:
    """((1 − AUC) − (1 − AUC_ret)) / ((1 − AUC_ret) + 1e−10) × 100; 0 = as the retain model, < 0 = leakier."""
    score, ref = 1.0 - float(auc), 1.0 - float(auc_retain)
    return (score - ref) / (ref + EPS) * 100.0


def min_k_score(logp: Any, k: float = MIN_K) -> float:
    """Min-k% score: mean of the ⌊k·n⌋ (at least 1) lowest token log-probs; higher = more likely a member."""
    lp = np.sort(np.asarray(logp.cpu() if isinstance(logp, torch.Tensor) else logp, dtype=np.float64))
    if lp.size == 0:
        return 0.0  # open-unlearning scores an empty answer 0
    return float(lp[: max(1, int(lp.size * k))].mean())


def mia_auc(member_scores: Any, nonmember_scores: Any) -> float:
    """ROC-AUC of members (label 1) vs non-members (label 0) for scores where higher means member."""
    members = _array(member_scores, "member scores").reshape(-1)
    others = _array(nonmember_scores, "non-member scores").reshape(-1)
    labels = np.r_[np.ones(members.size), np.zeros(others.size)]
    return float(roc_auc_score(labels, np.r_[members, others]))


def _tokens(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(-1)


def extraction_strength(argmax: Any, targets: Any, *, strict: bool = False) -> float:
    """ES = 1 − k/n, k = first index from which the argmax predictions match the labels to the end.

    Default: open-unlearning's value, whose search stops at k = n − 1 (a mismatching last token gives 1/n);
    ``strict=True`` lets k reach n (ES = 0). An empty answer scores 0, as in open-unlearning.
    """
    preds, labels = _tokens(argmax), _tokens(targets)
    if preds.shape != labels.shape:
        raise LetheError(f"extraction_strength: {preds.size} predictions for {labels.size} labels")
    n = labels.size
    if n == 0:
        return 0.0
    mismatch = np.flatnonzero(preds != labels)
    k = 0 if mismatch.size == 0 else int(mismatch[-1]) + 1
    if not strict:
        k = min(k, n - 1)
    return 1.0 - k / n


def exact_memorization(argmax: Any, targets: Any) -> float | None:
    """EM = fraction of positions whose teacher-forced argmax equals the label (None for an empty answer)."""
    preds, labels = _tokens(argmax), _tokens(targets)
    if preds.shape != labels.shape:
        raise LetheError(f"exact_memorization: {preds.size} predictions for {labels.size} labels")
    return float(np.mean(preds == labels)) if labels.size else None


def rouge_l_recall(reference: str, generated: str, scorer: Any = None) -> float:
    """ROUGE-L recall of ``generated`` against ``reference`` (stemmed, as TOFU / open-unlearning)."""
    scorer = scorer or rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(scorer.score(reference, generated)["rougeL"].recall)


def sacrifice_rate(before: Mapping[str, Any], after: Mapping[str, Any], metric: str) -> float | None:
    """SR = (M_retain(before) − M_retain(after)) / (M_forget(before) − M_forget(after)); None if the
    denominator is 0. ``before``/``after`` are :func:`evaluate_tofu` results (or their summaries);
    ``metric`` ∈ {truth_ratio, rougeL, probability} (truth ratio: mean(max(0, 1 − TR)) on both sides)."""
    if metric not in SACRIFICE_KEYS:
        choices = ", ".join(SACRIFICE_KEYS)
        raise LetheError(f"unknown sacrifice-rate metric '{metric}' (choose from {choices})")
    values = []
    for name, result in (("before", before), ("after", after)):
        summary = result.get("summary", result)
        for key in SACRIFICE_KEYS[metric]:
            value = summary.get(key)
            if value is None or not math.isfinite(float(value)):
                raise LetheError(f"sacrifice_rate: '{key}' missing from the {name} evaluation")
        values.append([float(summary[key]) for key in SACRIFICE_KEYS[metric]])
    (retain_before, forget_before), (retain_after, forget_after) = values
    denominator = forget_before - forget_after
    return None if denominator == 0 else (retain_before - retain_after) / denominator


# -------------------------------------------------------------------------------------------- evaluation


def _holdout_for(forget_split: str) -> str:
    match = re.fullmatch(r"forget(\d+)", forget_split)
    if not match:
        raise LetheError(f"cannot derive a holdout split from forget split '{forget_split}': "
                         "pass holdout_split")
    return f"holdout{match.group(1)}"


def read_tofu_eval(source: str | Path | Mapping[str, Any], label: str) -> tuple[dict[str, Any], str]:
    """(content, label naming the file) of a tofu_eval.json (path or loaded dict); one-line LetheError when
    it is missing, not JSON or not a JSON object."""
    if isinstance(source, Mapping):
        return dict(source), label
    path = Path(source).expanduser()
    label = f"{label} {path}"
    if not path.is_file():
        raise LetheError(f"{label}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LetheError(f"{label}: not valid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise LetheError(f"{label}: expected a JSON object (a tofu_eval.json), got {type(data).__name__}")
    return data, label


def check_forget_items(data: Mapping[str, Any], label: str, forget_split: str,
                       questions: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The per-item forget results of a tofu_eval.json, checked to be of ``forget_split`` and, given
    ``questions`` (this evaluation's forget questions), of the same items in the same order."""
    config = data.get("config")
    other = config.get("forget_split") if isinstance(config, dict) else None
    if other is not None and other != forget_split:
        raise LetheError(f"{label}: computed on forget split '{other}', this evaluation uses '{forget_split}'")
    per_item = data.get("per_item")
    items = per_item.get("forget") if isinstance(per_item, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        raise LetheError(f"{label}: no per-item forget results (per_item.forget is missing or empty)")
    if questions is None:
        return items
    if len(items) != len(questions):
        raise LetheError(f"{label}: has {len(items)} forget items, this evaluation has {len(questions)} "
                         "(use the same data, forget split and eval limit)")
    for i, (item, question) in enumerate(zip(items, questions, strict=True)):
        if "question" in item and item["question"] != question:
            raise LetheError(f"{label}: forget item {i} is {item['question']!r}, this evaluation's is "
                             f"{question!r} (computed on other data)")
    return items


def protocol_of(data: Mapping[str, Any]) -> str:
    """The protocol a loaded evaluation was computed under (files from before protocols existed: lethe)."""
    if ou_logs.is_open_unlearning(data):
        return "open-unlearning"
    config = data.get("config")
    protocol = config.get("protocol") if isinstance(config, dict) else None
    return protocol if isinstance(protocol, str) else "lethe"


def check_same_protocol(data: Mapping[str, Any], label: str, protocol: str | None) -> None:
    """LetheError when ``data`` was computed under another protocol than ``protocol`` (truth ratios and AUCs
    of different input protocols are not comparable)."""
    other = protocol_of(data)
    if protocol is not None and other != protocol:
        raise LetheError(f"{label}: computed under protocol '{other}', this evaluation uses '{protocol}' "
                         f"(set the protocol to '{other}' or re-evaluate that model)")


def load_retain_eval(retain_eval: str | Path | Mapping[str, Any], forget_split: str,
                     questions: Sequence[str] | None = None, protocol: str | None = None) -> dict[str, Any]:
    """The retain model's forget truth ratios and min-k AUC from its Lethe ``tofu_eval.json`` or
    open-unlearning ``TOFU_EVAL.json`` (path or loaded dict). A Lethe file is checked as
    :func:`check_forget_items` (same split; same items when ``questions`` is given), an open-unlearning one
    for its item count; either must be of ``protocol`` when given."""
    data, label = read_tofu_eval(retain_eval, "retain_eval")
    if data and all(isinstance(v, int | float) for v in data.values()):
        raise LetheError(f"{label}: a summary of metric values (TOFU_SUMMARY.json?) has no per-item truth ratios; "
                         f"pass the {ou_logs.EVAL_FILE} beside it or Lethe's tofu_eval.json")
    check_same_protocol(data, label, protocol)
    if ou_logs.is_open_unlearning(data):
        return ou_logs.read_retain_log(data, label, None if questions is None else len(questions))
    items = check_forget_items(data, label, forget_split, questions)
    ratios = [item.get("truth_ratio") for item in items]
    if any(not isinstance(r, int | float) or not math.isfinite(r) for r in ratios):
        raise LetheError(f"{label}: per_item.forget has an item without a finite truth_ratio")
    summary = data.get("summary")
    auc = summary.get("mia_min_k") if isinstance(summary, dict) else None
    if auc is not None and (isinstance(auc, bool) or not isinstance(auc, int | float) or not 0 <= auc <= 1):
        raise LetheError(f"{label}: summary.mia_min_k must be an AUC in [0, 1] or null, got {auc!r}")
    return {"truth_ratio": [float(r) for r in ratios], "mia_min_k": None if auc is None else float(auc),
            "label": label, "protocol": protocol_of(data), "truth_ratio_form": "wrong/correct"}


def load_eval_records(data_dir: str | Path, *, forget_split: str = "forget10",
                      splits: Sequence[str] = SPLITS, holdout_split: str | None = None,
                      limit: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The records :func:`evaluate_tofu` scores, per split (plus ``holdout`` with the forget split),
    validated; ``limit`` > 0 keeps the first ``limit`` of each. Cheap: use it to check the data early."""
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise LetheError(f"TOFU folder not found: {folder}")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise LetheError(f"unknown TOFU split(s) {unknown or list(splits)}; choose from {', '.join(SPLITS)}")
    files = {**FILES, "forget": f"{forget_split}_perturbed"}
    records = {s: load_split(folder, files[s]) for s in SPLITS if s in splits}
    if "forget" in records:
        records["holdout"] = load_split(folder, holdout_split or _holdout_for(forget_split))
    if limit:
        records = {s: r[:limit] for s, r in records.items()}
    return records


def _answer_tokens(scores: TokenScores, eos_id: int | None, protocol: str) -> tuple[torch.Tensor, ...]:
    """(logp, argmax, targets) of the tokens ES / EM / min-k use (:func:`tofu_protocol.answer_slice`)."""
    last = int(scores.targets[-1]) if scores.n else None
    cut = answer_slice(scores.n, last, eos_id, protocol)
    return scores.logp[:cut], scores.argmax[:cut], scores.targets[:cut]


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _generate(model: Any, tokenizer: Any, items: Sequence[QAItem], protocol: str, max_new_tokens: int,
              batch_size: int) -> list[str]:
    """The greedy answer to each item's prompt, read as the protocol reads it."""
    eos_id = tokenizer.eos_token_id
    prompts = [item.prompt_ids for item in items]
    if protocol == "open-unlearning":
        pad = eos_id if eos_id is not None else pad_id_of(tokenizer)  # open-unlearning pads generations with EOS
        outputs = generate_with_model_config(model, prompts, [item.prompt_mask for item in items], max_new_tokens,
                                             pad_id=pad, batch_size=batch_size)
        return [ou_generation_text(tokenizer, tokens) for tokens in outputs]
    outputs = greedy_continue(model, prompts, max_new_tokens, pad_id=pad_id_of(tokenizer), batch_size=batch_size,
                              eos_id=eos_id, stop_at_eos=eos_id is not None)
    return [tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens in outputs]


def _privleak(summary: dict[str, Any], reference: dict[str, Any] | None, protocol: str,
              notes: list[str]) -> None:
    """privleak against the retain model's AUC; without one, open-unlearning's fallback AUC 0.5 (D4) under
    its protocol and None under Lethe's."""
    auc_ret = None if reference is None else reference["mia_min_k"]
    if auc_ret is None and protocol == "open-unlearning":
        auc_ret = PRIVLEAK_REF_AUC
        why = "no retain_eval" if reference is None else f"{reference['label']} has no mia_min_k"
        notes.append(f"privleak: against open-unlearning's default reference AUC {PRIVLEAK_REF_AUC} ({why})")
    elif auc_ret is None:
        why = "no retain_eval given" if reference is None else f"{reference['label']} has no mia_min_k"
        notes.append(f"privleak: None ({why}; the open-unlearning protocol would use a reference AUC of 0.5)")
        return
    summary["privleak"] = privleak(summary["mia_min_k"], auc_ret)


def evaluate_tofu(model: Any, tokenizer: Any, data_dir: str | Path, *, forget_split: str = "forget10",
                  retain_eval: str | Path | Mapping[str, Any] | None = None, holdout_split: str | None = None,
                  batch_size: int = 16, max_new_tokens: int = 200, splits: Sequence[str] = SPLITS,
                  limit: int = 0, protocol: str = DEFAULT_PROTOCOL, system_prompt: str = "",
                  date_string: str = "") -> dict[str, Any]:
    """All TOFU metrics of ``model`` on the TOFU-format folder ``data_dir`` under an input ``protocol``
    (``open-unlearning``, the default, or ``lethe``: :mod:`lethe.audit.tofu_protocol`).

    Returns ``{"summary": {open-unlearning key: value}, "per_item": {split: [...]}, "notes": [...],
    "config": {...}}``. ``retain_eval`` (the retain model's Lethe ``tofu_eval.json`` or open-unlearning
    ``TOFU_EVAL.json``, path or dict, of the same protocol) enables forget_quality and privleak; ``limit`` > 0
    keeps the first ``limit`` items of every split.
    """
    check_protocol(protocol)
    if limit < 0 or batch_size < 1 or max_new_tokens < 1:
        raise LetheError(f"need limit >= 0, batch_size >= 1, max_new_tokens >= 1 "
                         f"(got {limit}, {batch_size}, {max_new_tokens})")
    records = load_eval_records(data_dir, forget_split=forget_split, splits=splits,
                                holdout_split=holdout_split, limit=limit)
    splits = tuple(s for s in SPLITS if s in splits)
    with_forget = "forget" in splits
    if with_forget and holdout_split is None:
        holdout_split = _holdout_for(forget_split)
    reference = None
    if retain_eval is not None:
        questions = [r["question"] for r in records["forget"]] if with_forget else None
        reference = load_retain_eval(retain_eval, forget_split, questions, protocol)

    eos_id = tokenizer.eos_token_id
    items: list[QAItem] = []  # one scoring pass over every (question, answer variant) of every split

    def add(question: str, answer: str) -> int:
        items.append(encode_item(tokenizer, question, answer, protocol, system_prompt=system_prompt,
                                 date_string=date_string))
        return len(items) - 1

    slots: dict[str, list[dict[str, Any]]] = {}
    for split, rows in records.items():
        slots[split] = []
        for row in rows:
            slot = {"answer": add(row["question"], row["answer"])}
            if split in HAS_PARAPHRASE:
                slot["para"] = add(row["question"], row["paraphrased_answer"])
            if split != "holdout":
                slot["pert"] = [add(row["question"], p) for p in row["perturbed_answer"]]
            slots[split].append(slot)
    scores = score_sequences(model, [item.feature() for item in items], batch_size=batch_size,
                             pad_id=pad_id_of(tokenizer), mia_statistics=False,  # TOFU reads log p and argmax
                             pack=True)  # a question's prompt once for its 7 answer variants
    for index, s in enumerate(scores):
        if s.n == 0:
            raise LetheError(f"TOFU item variant {index} has no answer tokens (empty answer?)")

    # one batched greedy generation over every split's prompts
    asked = [items[slot["answer"]] for split in splits for slot in slots[split]]
    outputs = _generate(model, tokenizer, asked, protocol, max_new_tokens, max(batch_size, GENERATION_BATCH))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)

    summary: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    per_item: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    forget_tr: np.ndarray | None = None
    offset = 0
    for split in splits:
        rows, split_items, prefix = records[split], [], PREFIX[split]
        generated = outputs[offset: offset + len(rows)]
        offset += len(rows)
        loss = np.array([scores[slot["answer"]].mean_nll for slot in slots[split]])
        pert_loss = [np.array([scores[j].mean_nll for j in slot["pert"]]) for slot in slots[split]]
        prob = np.exp(-loss)
        pert_prob = [np.exp(-row) for row in pert_loss]
        if split in HAS_PARAPHRASE:
            para_loss = np.array([scores[slot["para"]].mean_nll for slot in slots[split]])
            correct_loss = para_loss
            summary[f"{prefix}_Q_A_PARA_Prob"] = float(np.exp(-para_loss).mean())
        else:
            para_loss, correct_loss = None, loss
            normalised = normalised_probability(prob, pert_prob)
            summary[f"{prefix}_Q_A_Prob_normalised"] = float(normalised.mean())
        tr = truth_ratio(correct_loss, pert_loss)
        tr_prob_mean = truth_ratio_prob_mean(correct_loss, pert_loss)
        for i, (row, slot, text) in enumerate(zip(rows, slots[split], generated, strict=True)):
            _, argmax, targets = _answer_tokens(scores[slot["answer"]], eos_id, protocol)
            reference_text = items[slot["answer"]].reference
            rouge = scorer.score(reference_text, text)
            item = {"index": i, "question": row["question"], "prob": float(prob[i]), "loss": float(loss[i]),
                    "pert_prob": float(pert_prob[i].mean()), "pert_loss": [float(x) for x in pert_loss[i]],
                    "truth_ratio": float(tr[i]), "truth_ratio_prob_mean": float(tr_prob_mean[i]),
                    "rougeL_recall": float(rouge["rougeL"].recall), "rouge1_recall": float(rouge["rouge1"].recall),
                    "rougeL_f1": float(rouge["rougeL"].fmeasure),
                    "extraction_strength": extraction_strength(argmax, targets),
                    "exact_memorization": exact_memorization(argmax, targets), "generated": text,
                    "reference": reference_text}
            if para_loss is not None:
                item["para_prob"], item["para_loss"] = float(np.exp(-para_loss[i])), float(para_loss[i])
            else:
                item["prob_normalised"] = float(normalised[i])
            split_items.append(item)
        per_item[split] = split_items
        summary[f"{prefix}_Q_A_Prob"] = float(prob.mean())
        summary[f"{prefix}_Q_A_PERT_Prob"] = float(np.mean([p.mean() for p in pert_prob]))
        summary[f"{prefix}_Q_A_ROUGE"] = float(np.mean([it["rougeL_recall"] for it in split_items]))
        if split == "forget":
            forget_tr = tr
            summary["forget_truth_ratio"] = forget_truth_ratio_score(tr)
            summary["forget_Truth_Ratio_true_better"] = utility_truth_ratio_score(tr)
            summary["forget_truth_ratio_prob_mean"] = float(tr_prob_mean.mean())
            summary["extraction_strength"] = _mean([it["extraction_strength"] for it in split_items])
            summary["exact_memorization"] = _mean([it["exact_memorization"] for it in split_items])
        else:
            summary[f"{prefix}_Truth_Ratio"] = utility_truth_ratio_score(tr)
        if split == "retain":
            summary["retain_extraction_strength"] = _mean([it["extraction_strength"] for it in split_items])

    if with_forget:
        def min_k(slot: dict[str, Any]) -> float:
            return min_k_score(_answer_tokens(scores[slot["answer"]], eos_id, protocol)[0])

        member = [min_k(s) for s in slots["forget"]]
        nonmember = [min_k(s) for s in slots["holdout"]]
        for item, value in zip(per_item["forget"], member, strict=True):
            item["mia_min_k"] = value
        per_item["holdout"] = [
            {"index": i, "question": row["question"], "mia_min_k": value}
            for i, (row, value) in enumerate(zip(records["holdout"], nonmember, strict=True))
        ]
        summary["mia_min_k"] = mia_auc(member, nonmember)

    if None in [summary[k] for k in UTILITY_KEYS]:
        notes.append("model_utility: None (needs the retain, real_authors and world_facts splits)")
    else:
        summary["model_utility"] = harmonic_mean([summary[k] for k in UTILITY_KEYS])
    if forget_tr is None:
        notes.append("forget_quality, privleak: None (the forget split was not evaluated)")
    else:
        if reference is None:
            notes.append("forget_quality: None (no retain_eval given: pass the retain model's tofu_eval.json "
                         "or open-unlearning TOFU_EVAL.json)")
        else:
            summary["forget_quality"] = forget_quality(forget_tr, reference["truth_ratio"])
            if reference.get("truth_ratio_form", "wrong/correct") != "wrong/correct":
                notes.append(f"forget_quality: {reference['label']} truth ratios read as "
                             f"{reference['truth_ratio_form']}")
        _privleak(summary, reference, protocol, notes)
    notes.append(describe(protocol, tokenizer, system_prompt))
    notes.append("truth ratio forms: forget_truth_ratio = mean(min(TR, 1/TR)) and *_Truth_Ratio = "
                 "mean(max(0, 1-TR)) of TR = wrong/correct (TOFU; open-unlearning closer_to_1_better / "
                 "true_better); forget_truth_ratio_prob_mean = mean(correct/(correct+wrong)) (open-unlearning "
                 "prob_mean); forget_quality is the KS test on TR (the same p-value in either form)")
    notes.append("extraction_strength follows open-unlearning: k stops at n-1, "
                 "so a wrong last token gives 1/n")
    notes.append("mia_min_k: ROC-AUC of min-k (k=0.4) forget vs holdout, 1 = forget answers far more likely; "
                 "privleak < 0: forget set more exposed than under the retain model")
    if limit:
        notes.append(f"limit={limit}: only the first {limit} items of each split were evaluated")
    config = {"protocol": protocol, "system_prompt": system_prompt, "date_string": date_string,
              "forget_split": forget_split, "holdout_split": holdout_split,
              "splits": list(splits), "limit": limit, "max_new_tokens": max_new_tokens, "min_k": MIN_K,
              "n_items": {split: len(rows) for split, rows in records.items()}}
    return {"summary": summary, "per_item": per_item, "notes": notes, "config": config}


def write_tofu_eval(result: Mapping[str, Any], path: str | Path, *, open_unlearning: bool = False) -> Path:
    """Write an :func:`evaluate_tofu` result as JSON, atomically (NaN/inf become null); with
    ``open_unlearning`` also open-unlearning's ``TOFU_EVAL.json`` and ``TOFU_SUMMARY.json`` beside it."""
    path = atomic_write_json(path, dict(result))
    if open_unlearning:
        logs, summary = ou_logs.to_open_unlearning(result)
        atomic_write_json(Path(path).parent / ou_logs.EVAL_FILE, logs)
        atomic_write_json(Path(path).parent / ou_logs.SUMMARY_FILE, summary)
    return path
