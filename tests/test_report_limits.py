"""Reports that say no more than their data: unresolvable TPRs, ROC axes at 1/n, every canary with an
interval, few loss points as points, marked generations, sacrifice-rate readings, the unlearning report's
curves and GUARD weights, and `lethe report`'s summary and grouping by model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lethe.audit.commands import mia_summary
from lethe.audit.extraction import run_extraction, token_pieces
from lethe.audit.mia import mia_result, roc_metrics
from lethe.report import Report, compare_runs, figures
from lethe.report.tables import NOT_RESOLVABLE, extraction_examples, mia_rows, sacrifice_flag
from lethe.unlearn.config import UnlearnConfig
from lethe.unlearn.evaluation import write_unlearn_report

# -- MIA: resolution ---------------------------------------------------------------------------------------


def test_tpr_below_the_resolution_is_null_with_a_note_in_metrics_and_tables():
    rng = np.random.default_rng(0)
    out = roc_metrics(rng.normal(3, 1, 40), rng.normal(0, 1, 70), n_bootstrap=50)
    for fpr in ("0.1%", "1%"):  # 1/70 = 1.4%: neither can be measured
        assert out[f"tpr_at_{fpr}_fpr"] is None and out[f"tpr_at_{fpr}_fpr_ci"] is None
        assert "not resolvable with 70 non-members" in out[f"tpr_at_{fpr}_fpr_note"]
    assert out["tpr_at_5%_fpr"] is not None and "tpr_at_5%_fpr_note" not in out  # 3 false positives allowed
    assert 0 < out["tpr_at_0_fpr"] <= 1
    pooled = np.r_[rng.normal(3, 1, 40), rng.normal(0, 1, 70)]
    summary = mia_summary(mia_result({"loss": pooled}, 40, n_bootstrap=20))["attacks"]["loss"]
    assert summary["tpr_at_0.1%_fpr"] is None and summary["tpr_at_0.1%_fpr_note"]  # metrics.json says why
    json.dumps(summary, allow_nan=False)
    rows, notes = mia_rows({"loss": summary})
    assert rows[0]["TPR at 0.1% FPR"] == rows[0]["TPR at 1% FPR"] == NOT_RESOLVABLE
    assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", rows[0]["AUC [95% CI]"])
    assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", rows[0]["TPR at 5% FPR"])
    assert len(notes) == 1 and "0.1% and 1%" in notes[0] and "70 non-members" in notes[0]


def test_roc_axis_starts_at_one_over_the_nonmembers_and_shows_auc_intervals():
    fpr, tpr = [0.0, 1 / 70, 0.1, 1.0], [0.4, 0.5, 0.8, 1.0]
    fig = figures.roc_figure({"loss": figures.RocCurve(fpr, tpr, 0.81, [0.72, 0.9], 70)})
    ax = fig.axes[0]
    assert ax.get_xlim()[0] == pytest.approx(1 / 70)  # not 1e-3: nothing below 1/70 is measured
    assert "1/70" in ax.get_xlabel()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("AUC\u00a00.81\u00a0[0.72,\u00a00.90]" in label for label in labels)
    curve = next(line for line in ax.lines if line.get_label().startswith("loss"))
    assert min(curve.get_xdata()) == pytest.approx(1 / 70)  # the FPR = 0 point is drawn at 1/n
    both = figures.roc_figure({"a": figures.RocCurve(fpr, tpr, 0.8, None, 70),
                               "b": figures.RocCurve([0.0, 0.005, 1.0], [0.2, 0.3, 1.0], 0.6, None, 200)})
    assert both.axes[0].get_xlim()[0] == pytest.approx(1 / 200)
    # without a count, the smallest positive FPR of the curve stands in for 1/n
    assert figures.roc_figure({"x": (fpr, tpr, 0.8)}).axes[0].get_xlim()[0] == pytest.approx(1 / 70)


# -- canaries and loss curves ------------------------------------------------------------------------------


def test_exposure_figure_draws_every_canary_and_the_mean_with_a_t_interval():
    mean, low, high = figures.mean_interval([2.0, 4.0])
    assert mean == 3.0 and high - mean == pytest.approx(12.706, rel=1e-3)  # t(0.975, 1) · s / √2, s = √2
    assert figures.mean_interval([5.0]) == (5.0, None, None)
    fig = figures.exposure_figure({"m": [(1, 2.0), (1, 4.0), (4, 10.0), (4, 12.0), (4, 11.0)]}, 20.0)
    ax = fig.axes[0]
    dots = sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets") and
               c.get_offsets().shape[1:] == (2,) and len(c.get_offsets()) and c.__class__.__name__ == "PathCollection")
    assert dots == 5  # every canary, not only the means
    bars = ax.containers[0]
    _, ys = bars.lines[0].get_data()
    assert list(ys) == pytest.approx([3.0, 11.0])
    segments = bars.lines[2][0].get_segments()
    assert segments[0][0][1] == pytest.approx(0.0)  # 3 − 12.7 clipped at 0 (exposure cannot be negative)
    assert segments[0][1][1] == pytest.approx(3.0 + 12.706, rel=1e-3)
    _, low4, high4 = figures.mean_interval([10.0, 12.0, 11.0])
    assert segments[1][0][1] == pytest.approx(low4) and segments[1][1][1] == pytest.approx(high4)


def test_loss_series_with_few_points_are_points_not_a_line():
    few = figures.training_figure({"a": [(0, 5.0), (10, 3.0)]}).axes[0].lines[0]
    assert few.get_linestyle() == "None" and few.get_marker() == "o" and "2 logged points" in few.get_label()
    many = figures.training_figure({"a": [(s, 5.0 - s / 10) for s in range(0, 60, 10)]}).axes[0].lines[0]
    assert many.get_linestyle() == "-"


# -- example generations -----------------------------------------------------------------------------------


def test_generations_mark_exactly_the_mismatched_tokens(tmp_path):
    page = Report("x")
    page.add_generations([{"id": "doc-1", "target": [" the", " cat", " sat", " down"],
                           "generated": [" the", " dog", " sat", "<b>"], "prompt": "Once", "scores": "50%"}])
    _, html_path = page.write(tmp_path)
    html = html_path.read_text()
    assert '<td class="gen"><span class="prompt">…Once</span> the<mark> cat</mark> sat<mark> down</mark></td>' in html
    assert '<td class="gen"><span class="prompt">…Once</span> the<mark> dog</mark> sat<mark>&lt;b&gt;</mark>' in html
    md = (tmp_path / "report.md").read_text()
    assert "true:  the<mark> cat</mark> sat<mark> down</mark>" in md
    assert "generated:  the<mark> dog</mark> sat<mark>&lt;b&gt;</mark>" in md
    with pytest.raises(Exception, match="lists of token texts"):
        Report("y").add_generations([{"target": "abc", "generated": []}])


def test_extraction_items_carry_token_texts_and_examples_span_best_to_worst(tiny_model, tiny_tokenizer,
                                                                            world_dir):
    from lethe.data.text import load_documents

    docs = [(d.id, d.text) for d in load_documents(world_dir / "biographies.jsonl")][:3]
    result = run_extraction(tiny_model, tiny_tokenizer, docs, suffix_len=8, batch_size=4)
    for item in result.items:
        assert len(item.target_tokens) == len(item.target_ids) == 8 == len(item.generated_tokens)
        assert "".join(item.target_tokens).strip() == item.target_text.strip()
        assert item.to_dict()["generated_tokens"] == item.generated_tokens
    ids = tiny_tokenizer("Hello world again", add_special_tokens=False)["input_ids"]
    assert "".join(token_pieces(tiny_tokenizer, ids)) == tiny_tokenizer.decode(ids)
    items = [{"id": f"d{i}", "token_match_rate": i / 9, "rougeL": 0.5, "target_tokens": ["a"],
              "generated_tokens": ["b"]} for i in range(10)]
    examples, what = extraction_examples(items, n=4)
    assert [e["id"] for e in examples] == ["d9", "d6", "d3", "d0"] and "4 of 10" in what


# -- unlearning report -------------------------------------------------------------------------------------


def test_sacrifice_flags_read_the_sign():
    assert sacrifice_flag(0.1, 0.4).startswith("retain lost per unit")
    assert "retain metric improved" in sacrifice_flag(-0.1, 0.4)  # negative SR, good
    assert "NOT comparable" in sacrifice_flag(0.1, -0.4)  # negative SR, forget went up
    assert "NOT comparable" in sacrifice_flag(-0.1, -0.4)  # positive SR, nothing forgotten
    assert "did not change" in sacrifice_flag(0.1, 0.0)


def _unlearn_dir(tmp_path: Path) -> tuple[Path, UnlearnConfig, dict]:
    run_dir = tmp_path / "unlearn"
    run_dir.mkdir()
    events = [{"event": "train", "step": s, "forget_nll": 2.0 + s, "forget_loss": -2.0 - s, "retain_loss": 1.5}
              for s in range(1, 9)]
    (run_dir / "log.jsonl").write_text("\n".join(json.dumps(e) for e in events) + '\n{"event": "tr')
    (run_dir / "attribution.json").write_text(json.dumps(
        [{"id": f"f{i}", "score": float(i), "weight": w} for i, w in enumerate((0.4, 0.3, 0.2, 0.1))]))
    config = UnlearnConfig(method="gd")
    config.model.name, config.guard.enabled = "runs/full/model", True
    headline = {"model_utility": 0.5, "forget_Q_A_ROUGE": 0.4, "forget_Q_A_Prob": 0.3}
    metrics = {"steps": 8, "forget_samples": 4, "retain_samples": 20, "forget_nll_before": 2.0,
               "forget_nll_after": 9.0, "guard": {"tau": 1.0, "normalize": "zscore", "effective_samples": 3.3},
               "tofu_before": headline, "tofu": headline,
               "sacrifice_rate": {"truth_ratio": 0.5, "rougeL": -0.25, "probability": -2.0},
               "sacrifice_parts": {"truth_ratio": {"retain_drop": 0.05, "forget_drop": 0.1},
                                   "rougeL": {"retain_drop": -0.05, "forget_drop": 0.2},
                                   "probability": {"retain_drop": 0.2, "forget_drop": -0.1}}}
    return run_dir, config, metrics


def test_unlearn_report_flags_negative_sr_and_has_curves_and_guard_weights(tmp_path):
    run_dir, config, metrics = _unlearn_dir(tmp_path)
    write_unlearn_report(run_dir, config, metrics)
    html = (run_dir / "report.html").read_text()
    rouge_row = re.search(r"<tr><td>ROUGE-L</td>(.*?)</tr>", html).group(1)
    assert "−0.250" in rouge_row or "-0.250" in rouge_row
    assert "the retain metric improved while the forget metric went down" in rouge_row
    prob_row = re.search(r"<tr><td>probability</td>(.*?)</tr>", html).group(1)
    assert "NOT comparable: the forget metric went UP" in prob_row
    assert re.search(r'<div class="note warning"><strong>Warning:</strong> SR \(probability: NOT comparable', html)
    for name in ("forget_curve", "retain_curve", "guard_weights", "before_after"):
        assert f'id="fig-{name}"' in html and (run_dir / "figures" / f"{name}.png").is_file()
    assert "forget NLL before → after" in html and "2 → 9" in html
    # without an evaluation the report still has the curves and the weights, and says what is missing
    del metrics["tofu"], metrics["tofu_before"], metrics["sacrifice_rate"]
    write_unlearn_report(run_dir, config, metrics)
    html = (run_dir / "report.html").read_text()
    assert "No TOFU evaluation" in html and 'id="fig-guard_weights"' in html and "fig-before_after" not in html


# -- lethe report ------------------------------------------------------------------------------------------


def _run(path: Path, command: str, config: str, metrics: dict) -> Path:
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"command": command, "status": "finished", "pid": 1}))
    (path / "config.yaml").write_text(config)
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_lethe_report_summary_has_one_row_per_run_and_audits_sit_under_their_model(tmp_path):
    full = _run(tmp_path / "full", "train", "model:\n  name: tiny\n", {"train_loss": 1.25, "steps": 10})
    (full / "model").mkdir()
    pooled = np.r_[np.arange(10.0) + 5, np.arange(70.0)]
    mia = mia_summary(mia_result({"loss": pooled}, 10, n_bootstrap=20))
    audit_mia = _run(tmp_path / "mia-full", "audit-mia", f"model: {full / 'model'}\n", {"mia": mia})
    audit_ext = _run(tmp_path / "ext-other", "audit-extraction", "model: some/other-model\n",
                     {"extraction": {"exact_match_rate": 0.25, "rougeL": 0.5}})
    audit_ext2 = _run(tmp_path / "ext-full", "audit-extraction", f"model: {full / 'model'}\n",
                      {"extraction": {"exact_match_rate": 0.75, "rougeL": 0.9}})
    html = compare_runs([audit_mia, audit_ext, full, audit_ext2], tmp_path / "cmp").read_text()
    summary = re.search(r"<caption>One row per run.*?<tbody>(.*?)</tbody>", html).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", summary)
    assert len(rows) == 4
    assert [re.findall(r"<td[^>]*>(.*?)</td>", r)[:3] for r in rows] == [
        ["mia-full", "audit-mia", "full/model"], ["ext-other", "audit-extraction", "some/other-model"],
        ["full", "train", "full/model"], ["ext-full", "audit-extraction", "full/model"]]
    assert "75.0%" in rows[3] and "1.250" in rows[2]
    # the audits of full/model come under its heading, before the other model's
    sections = re.split(r"<h2>", html)
    full_section = next(s for s in sections if s.startswith("Model full/model"))
    other_section = next(s for s in sections if s.startswith("Model some/other-model"))
    assert "Written by run full (train from tiny)" in full_section
    assert "Audited by: mia-full, ext-full." in full_section
    assert "<caption>mia-full: membership inference per attack" in full_section
    assert NOT_RESOLVABLE in full_section and "70 non-members" in full_section
    assert "<caption>ext-full (audit-extraction;" in full_section and "ext-other" not in full_section
    assert "<caption>ext-other (audit-extraction;" in other_section
    assert html.index("Model full/model") < html.index("Model some/other-model")
    # the two extraction audits compared side by side, the differing metric highlighted
    assert "audit-extraction: 2 of 2 metrics differ between ext-other, ext-full" in html


def test_lethe_report_reads_an_unlearning_runs_sacrifice_rates(tmp_path):
    metrics = {"steps": 4, "objective": {"gamma": 1.0}, "model_dir": "x/model",
               "tofu_before": {"model_utility": 0.5}, "tofu": {"model_utility": 0.45},
               "sacrifice_rate": {"rougeL": -0.5},
               "sacrifice_parts": {"rougeL": {"retain_drop": 0.1, "forget_drop": -0.2}}}
    run = _run(tmp_path / "unl", "unlearn", "model:\n  name: base\n", metrics)
    (run / "model").mkdir()
    html = compare_runs([run], tmp_path / "cmp").read_text()
    row = re.search(r"<tr><td>rougeL</td>(.*?)</tr>", html).group(1)
    assert "NOT comparable: the forget metric went UP" in row
    assert re.search(r"<tr><td>model_utility</td><td class=\"num\">0\.500</td><td class=\"num\">0\.450</td>", html)
    assert "<td>objective.gamma</td>" not in html and "<td>model_dir</td>" not in html  # left to config.yaml
