"""Tests for lethe.report: figures, the Markdown/HTML builder, run comparison, and the chromium render."""

from __future__ import annotations

import base64
import functools
import importlib.util
import io
import json
import math
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from conftest import PLAIN_SENTENCES
from lethe.audit.mia import mia_result
from lethe.errors import LetheError
from lethe.report import Report, compare, compare_runs, figures, format_value
from lethe.report.figures import PNG_MAGIC, placeholder

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "render_report.py"
CHROMIUM = Path("/usr/bin/chromium")
NAN = float("nan")


def decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_MAGIC)
    return imread(io.BytesIO(png), format="png")


def distinct_colours(image: np.ndarray) -> int:
    rgb = (image[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    return len(np.unique(rgb, axis=0))


def roc(strength: float, n: int = 30) -> tuple[list[float], list[float], float]:
    fpr = [0.0] + [10 ** (-3 + 3 * i / (n - 1)) for i in range(n)]
    return fpr, [f ** (1 / strength) for f in fpr], strength / (1 + strength)


# -- figures ----------------------------------------------------------------------------------------------


FIGURE_CALLS = {
    "rouge": lambda: figures.rouge_distribution({"standard": [0.9, 1.0, 0.95, NAN], "goldfish": [0.1, 0.3]}),
    "roc": lambda: figures.roc_curves({"loss": roc(1.5), "zlib": roc(2.5)}),
    "exposure": lambda: figures.exposure_vs_repetitions({"std": [(1, 2.0), (10, 20.0), (0, 5.0)]}, 29.9),
    "training": lambda: figures.training_curves({"a": [(0, 5.0), (10, 3.0), (20, NAN)]},
                                                {"a": [(0, 5.0), (4096, 3.0)]}),
    "cdf": lambda: figures.empirical_cdf({"standard": [0.9, 1.0, 0.95, NAN], "control": [0.1, 0.3, 0.2]},
                                         xlim=(0, 1)),
    "bars": lambda: figures.bar_comparison({"GA": {"utility": 0.4, "forget": 0.9},
                                            "NPO": {"utility": 0.6, "forget": NAN}}, "unlearning"),
}


@functools.cache
def rendered(kind: str) -> bytes:
    """Each sample figure rendered once per session (rendering dominates this file's runtime)."""
    return FIGURE_CALLS[kind]()


@pytest.mark.parametrize("kind", sorted(FIGURE_CALLS))
def test_figures_return_real_pngs(kind: str) -> None:
    image = decode(rendered(kind))
    height, width = image.shape[:2]
    assert 300 < height < 700 and 500 < width < 1200
    assert distinct_colours(image) > 30  # drawn curves / bars, not a blank canvas


def test_training_curves_two_panels_are_wider() -> None:
    one = decode(figures.training_curves({"a": [(0, 5.0), (10, 3.0)]}))
    two = decode(rendered("training"))
    assert two.shape[1] > 1.4 * one.shape[1]


def test_figures_are_thread_safe() -> None:
    """No pyplot state: the same figure drawn from several threads at once gives identical bytes."""
    call = functools.partial(figures.rouge_distribution, {"a": [0.1, 0.5, 0.9]})
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: call(), range(4)))
    assert len(set(results)) == 1 and results[0].startswith(PNG_MAGIC)


def test_figure_path_is_written(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "rouge.png"
    png = figures.rouge_distribution({"m": [0.2, 0.4]}, path=out)
    assert out.read_bytes() == png
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_empty_data_gives_no_data_placeholder() -> None:
    """Documented choice: no data -> a placeholder figure with the title and "no data", never an error."""
    blank = placeholder("T")
    assert figures.rouge_distribution({"a": [], "b": [NAN]}, title="T") == blank
    assert figures.roc_curves({"x": ([], [], 0.5)}, title="T") == blank
    assert figures.exposure_vs_repetitions({}, None, title="T") == blank
    assert figures.training_curves({"a": []}, title="T") == blank
    assert figures.bar_comparison({"m": {"x": NAN}}, "T") == blank
    assert figures.empirical_cdf({"a": [NAN]}, title="T") == blank
    image = decode(blank)
    assert distinct_colours(image) > 2  # the text is drawn
    assert image.shape == decode(rendered("rouge")).shape


def test_nan_points_are_skipped() -> None:
    with_nan = figures.rouge_distribution({"a": [0.25, 0.75, NAN, math.inf]})
    without = figures.rouge_distribution({"a": [0.25, 0.75]})
    assert with_nan == without
    fpr, tpr, auc = roc(2.0)
    with_nan = figures.roc_curves({"a": ([*fpr, NAN], [*tpr, 0.5], NAN)})  # NaN AUC -> "AUC n/a"
    assert with_nan == figures.roc_curves({"a": (fpr, tpr, NAN)})


def test_malformed_figure_input_raises() -> None:
    with pytest.raises(LetheError, match="fpr but"):
        figures.roc_curves({"a": ([0.1, 0.2], [0.3], 0.5)})
    with pytest.raises(LetheError, match=r"\[0, 1\]"):
        figures.rouge_distribution({"a": [1.5]})
    with pytest.raises(LetheError, match="expected a number"):
        figures.rouge_distribution({"a": ["0.5"]})
    with pytest.raises(LetheError, match="pairs"):
        figures.exposure_vs_repetitions({"a": [(1, 2.0, 3.0)]}, None)
    with pytest.raises(LetheError, match="expected a number"):
        figures.bar_comparison({"m": {"x": True}}, "T")


# -- number formatting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "key", "text"), [
    (0.25, "exact_match_rate", "25.0%"),
    (0.0004, "extraction.exact_match_rate", "0.04%"),
    (3e-4, "learning_rate", "0.0003"),
    (3e-4, "generated_tokens", "0.0003"),
    (0.98034, "rougeL", "0.980"),
    (0.0071434, "probability_familiarity", "0.00714"),
    (0.0123, "probability_familiarity", "0.012"),
    (1.2e-7, "forget_quality", "1.2e-07"),
    (123456.7, "wall_s", "123,457"),
    (3276800, "supervised_tokens", "3,276,800"),
    (123456, "seed", "123456"),
    (7, "n", "7"),
    (True, "holds", "yes"),
    (None, "x", "—"),
    (NAN, "x", "n/a"),
    (np.float32(0.5), "tpr_rate", "50.0%"),
    ("text", "x", "text"),
])
def test_format_value(value: object, key: str, text: str) -> None:
    assert format_value(value, key) == text


# -- the builder ------------------------------------------------------------------------------------------


def sample_report() -> tuple[Report, bytes]:
    png = figures.rouge_distribution({"std": [0.9, 1.0], "gold": [0.1, 0.2]})
    report = Report("Audit <b>x</b>", subtitle="sub & title")
    report.add_heading("Results <i>")
    report.add_paragraph("evil <script>alert('x')</script> paragraph")
    report.add_note("headline holds", kind="ok")
    report.add_note("<script>bad()</script>", kind="warning")
    report.add_keyvalues({"model": "<script>m</script>", "learning_rate": 1e-4})
    report.add_table([{"model": "<script>s</script>", "exact_match_rate": 0.5, "rougeL": 0.123456}],
                     caption="extraction")
    report.add_table([["a", 1.0], ["b", 2.0]], header=["name", "value"], highlight=[1])
    report.add_figure("rouge", png, "ROUGE-L <per> document")
    return report, png


def test_report_writes_md_html_and_figures(tmp_path: Path) -> None:
    report, png = sample_report()
    md_path, html_path = report.write(tmp_path / "run")
    assert md_path == tmp_path / "run" / "report.md" and html_path == tmp_path / "run" / "report.html"
    assert (tmp_path / "run" / "figures" / "rouge.png").read_bytes() == png
    assert not list((tmp_path / "run").rglob("*.tmp"))

    md = md_path.read_text()
    for ref in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (md_path.parent / ref).is_file()
    assert "figures/rouge.png" in md
    assert "| <script>s</script> | 50.0% | 0.123 |" in md
    assert "> **Holds:** headline holds" in md

    html = html_path.read_text()
    assert f'data:image/png;base64,{base64.b64encode(png).decode()}" width="660" height="440">' in html
    assert "max-width: 100%" in html  # shown at most at its own size (never upscaled), shrunk to fit
    assert "<script" not in html.lower()  # every piece of text is escaped
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "Audit &lt;b&gt;x&lt;/b&gt;" in html and "sub &amp; title" in html
    assert "ROUGE-L &lt;per&gt; document" in html
    assert '<td class="num">50.0%</td>' in html and '<td class="num">0.123</td>' in html
    assert '<tr class="diff"><td>b</td>' in html
    assert "0.0001" in html  # learning_rate is not a percentage
    assert "generated by Lethe" in html and str((tmp_path / "run").resolve()) in html
    # self-contained: no scripts, no external resources
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<link" not in html and "@import" not in html


def test_report_rejects_bad_input(tmp_path: Path) -> None:
    report, png = sample_report()
    with pytest.raises(LetheError, match="already added"):
        report.add_figure("rouge", png)
    with pytest.raises(LetheError, match="bad figure name"):
        report.add_figure("../evil", png)
    with pytest.raises(LetheError, match="not PNG"):
        report.add_figure("x", b"GIF89a")
    with pytest.raises(LetheError, match="kind must be"):
        report.add_note("x", kind="danger")
    with pytest.raises(LetheError, match="need a header"):
        report.add_table([[1, 2]])
    with pytest.raises(LetheError, match="row 0 has 1 cells"):
        report.add_table([[1]], header=["a", "b"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(LetheError, match="not a directory"):
        report.write(tmp_path / "file")


# -- run comparison ---------------------------------------------------------------------------------------


def fake_mia(strength: float, n: int = 60, seed: int = 0,
             attacks: tuple[str, ...] = ("min_k_pp_0.4", "zlib", "loss", "min_k_0.2")) -> dict:
    """A ``mia.json`` exactly as run_mia writes it: the real mia_result on synthetic scores (higher = member)."""
    rng = np.random.default_rng(seed)
    members, nonmembers = rng.normal(strength, 1, n), rng.normal(0, 1, n)
    pooled = np.r_[members, nonmembers]
    return mia_result({name: (i + 1) * pooled - i for i, name in enumerate(attacks)}, n, {}, n_bootstrap=0)


def fake_canaries(exposures: dict[int, float], space_size: int = 10**6) -> dict:
    """A ``canaries.json`` in the layout canary_exposure writes (one canary per repetition count)."""
    rows = [{"id": f"canary-{r}", "repetitions": r, "format": "digits6", "space_size": space_size,
             "log_perplexity": 1.0, "rank_estimate": 2 ** (math.log2(space_size) - e),
             "exposure": e, "max_exposure": math.log2(space_size), "method": "skewnorm",
             "n_candidates_scored": 100, "fraction_lower": 0.0} for r, e in exposures.items()]
    return {"units": "log_perplexity: nats; exposure: bits", "n_samples": 100, "seed": 0, "canaries": rows,
            "exposure_by_repetitions": {str(r): e for r, e in exposures.items()}}


def fake_run(path: Path, exact: float, loss: float, *, extras: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({
        "documents": 64, "headline_holds": exact > 0.5,
        "standard": {"extraction": {"exact_match_rate": exact, "rougeL": 0.75}, "heldout_loss": loss},
        "tags": ["a", "b"], "long": list(range(100)),
    }))
    if extras:
        arm = path / "standard"
        arm.mkdir()
        (arm / "extraction.json").write_text(json.dumps({"items": [{"rougeL": exact}, {"rougeL": 0.5}],
                                                         "rougeL_all": [0.0]}))
        mia = fake_mia(0.5 + 2 * exact, attacks=("min_k_pp_0.4", "loss"))
        (path / "mia.json").write_text(json.dumps(mia, allow_nan=False))
        (arm / "canaries.json").write_text(json.dumps(fake_canaries({1: 2 + 10 * exact, 4: 3 + 15 * exact})))
        events = [{"event": "train_start"}] + [
            {"event": "train", "step": s, "loss": loss + 3 / (s + 1), "supervised_tokens": 512 * s}
            for s in range(0, 50, 10)]
        lines = [json.dumps(e) for e in events] + ['{"event": "tr']  # a killed run's partial last line
        (arm / "log.jsonl").write_text("\n".join(lines))
    return path


def figure_png(html: str, name: str) -> bytes:
    """The PNG embedded in the report page as figure ``name`` (fails if the page has no such figure)."""
    match = re.search(rf'<figure id="fig-{re.escape(name)}"[^>]*><img alt="[^"]*" src="data:image/png;base64,'
                      r'([A-Za-z0-9+/=]+)"', html)
    assert match, f"no figure {name!r} in the page"
    return base64.b64decode(match.group(1))


def test_compare_runs_table_and_figures(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "run-a", exact=0.875, loss=5.25)
    b = fake_run(tmp_path / "run-b", exact=0.0, loss=5.0)
    html_path = compare_runs([a, b], tmp_path / "cmp")
    assert html_path == tmp_path / "cmp" / "report.html"
    html = html_path.read_text()
    # both runs' values, rates as percentages, the differing metric highlighted, the equal one not
    row = re.search(r'<tr class="diff"><td>standard\.extraction\.exact_match_rate</td>(.*?)</tr>', html)
    assert row and "87.5%" in row.group(1) and "0.0%" in row.group(1) and "-87.5 pp" in row.group(1)
    assert re.search(r"<tr><td>standard\.extraction\.rougeL</td><td class=\"num\">0\.750</td>", html)
    assert re.search(r'<tr class="diff"><td>standard\.heldout_loss</td>.*?5\.250.*?5\.000.*?-0\.250', html)
    assert '<tr class="diff"><td>headline_holds</td><td>yes</td><td>no</td>' in html
    assert "<td>tags</td><td>a, b</td>" in html and "<td>long</td>" not in html
    assert "3 of 6 metrics differ" in html
    # the runs' figures (one ROC figure with every attack); exposure from canaries.json; all embedded
    names = ["m1_rouge_distribution", "m1_roc", "m1_exposure", "m1_training_curves"]
    assert re.findall(r'<figure id="fig-([^"]+)"', html) == names
    for name in names:
        png = (tmp_path / "cmp" / "figures" / f"{name}.png").read_bytes()
        assert figure_png(html, name) == png
        assert png != placeholder(name) and distinct_colours(decode(png)) > 30
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| **standard.extraction.exact_match_rate** ◆ | 87.5% | 0.0% |" in md


def test_compare_reads_run_mia_curves_and_canary_exposure(tmp_path: Path) -> None:
    """The figures are drawn from the real mia.json / canaries.json layouts, not placeholders."""
    mia = fake_mia(1.0)
    curves = compare._mia_curves(json.loads(json.dumps(mia)))
    assert set(curves) == {"loss", "zlib", "min_k_0.2", "min_k_pp_0.4"}
    fpr, tpr, auc = curves["loss"]
    assert (fpr, tpr, auc) == (mia["attacks"]["loss"]["roc"]["fpr"], mia["attacks"]["loss"]["roc"]["tpr"],
                               mia["attacks"]["loss"]["auc"])
    assert 0.6 < auc < 0.9
    assert compare._mia_curves({"attacks": {"x": {"auc": 0.5, "fpr": [0, 1], "tpr": [0, 1]}}}) == {
        "x": ([0.0, 1.0], [0.0, 1.0], 0.5)}  # an entry with the points at its top level
    points, ceiling = compare._exposure(fake_canaries({1: 2.0, 10: 15.5, 4: 6.0}, space_size=2**20))
    assert points == [(1, 2.0), (4, 6.0), (10, 15.5)] and ceiling == 20.0
    expected = figures.exposure_vs_repetitions({"run": points}, 20.0)
    run = fake_run(tmp_path / "run", exact=0.5, loss=1.0, extras=False)
    (run / "canaries.json").write_text(json.dumps(fake_canaries({1: 2.0, 10: 15.5, 4: 6.0}, space_size=2**20)))
    html = compare_runs([run], tmp_path / "cmp").read_text()
    assert figure_png(html, "m1_exposure") == expected


def test_compare_runs_on_demo_arm_directories(tmp_path: Path) -> None:
    """Directories without metrics.json (a demo's standard/ and goldfish/) are summarised from their results."""
    arms = []
    for name, exact, strength in (("standard", 1.0, 3.0), ("goldfish", 0.0, 0.5)):
        arm = tmp_path / "demo" / name
        arm.mkdir(parents=True)
        (arm / "train_metrics.json").write_text(json.dumps({"steps": 300, "supervised_tokens": 1000}))
        (arm / "extraction.json").write_text(json.dumps({
            "exact_match_rate": exact, "rougeL": 0.5 + exact / 2, "items": [{"rougeL": exact}],
            "rougeL_all": [exact], "semantic": {"featurizer": "MiniLM", "bertscore_f1": 0.9, "items": [{}]}}))
        (arm / "mia.json").write_text(json.dumps(fake_mia(strength, seed=1)))
        (arm / "canaries.json").write_text(json.dumps(fake_canaries({1: 5 + 10 * exact})))
        arms.append(arm)
    html = compare_runs(arms, tmp_path / "cmp").read_text()
    for key in ("train.steps", "extraction.exact_match_rate", "extraction.semantic.bertscore_f1",
                "extraction.semantic.featurizer", "mia.loss.auc", "mia.min_k_0.2.tpr_at_1%_fpr",
                "canaries.exposure_by_repetitions.1"):
        assert f"<td>{key}</td>" in html, key
    assert "<td>extraction.items</td>" not in html and "mia.loss.scores" not in html
    assert re.search(r'<tr class="diff"><td>extraction\.exact_match_rate</td><td class="num">100\.0%</td>', html)
    for name in ("m1_rouge_distribution", "m1_roc", "m1_exposure"):
        figure_png(html, name)


def test_compare_runs_leaves_extra_attacks_to_the_table(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", exact=0.5, loss=1.0, extras=False)
    pooled = np.r_[np.arange(5.0) + 1, np.arange(5.0)]
    scores = {name: pooled for name in ("a1", "gradnorm", "loss", "zlib", "reference", "min_k_0.2")}
    (run / "mia.json").write_text(json.dumps(mia_result(scores, 5, n_bootstrap=0)))
    html = compare_runs([run], tmp_path / "cmp").read_text()
    assert re.findall(r'<figure id="fig-([^"]+)"', html) == ["m1_roc"]  # loss, zlib, min_k_0.2, reference
    assert "ROC curves of gradnorm, a1 are not drawn" in html


def test_roc_identical_curves_share_one_legend_entry() -> None:
    fpr, tpr, _ = roc(2.0)
    merged = figures._merge_identical({"a": (fpr, tpr, 0.7), "b": ([0.0, 1.0], [0.0, 1.0], 0.5),
                                       "c": (list(fpr), list(tpr), 0.7)})
    assert [names for names, _, _ in merged] == [["a", "c"], ["b"]]
    assert figures._roc_label(["a", "c"], [0.7, 0.7]) == "a, c (identical curves, AUC\u00a00.70)"
    long = figures._roc_label([f"model-{i} loss" for i in range(6)], [1.0] * 6)
    assert all(len(line) <= figures.WRAP for line in long.splitlines()) and long.count("\n") >= 1
    # the same curves drawn separately would hide one under the other: merged, they give one line
    assert figures.roc_curves({"a": (fpr, tpr, 0.7), "c": (fpr, tpr, 0.7)}) != figures.roc_curves(
        {"a": (fpr, tpr, 0.7)})


def test_compare_runs_without_extras_and_same_names(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "x" / "run", exact=0.5, loss=1.0, extras=False)
    b = fake_run(tmp_path / "y" / "run", exact=0.5, loss=1.0, extras=False)
    html = compare_runs([a, b], tmp_path / "cmp").read_text()
    assert "run (2)" in html and "0 of 6 metrics differ" in html and 'class="diff"' not in html
    assert not (tmp_path / "cmp" / "figures").exists()


def test_compare_runs_missing_metrics_names_the_run(tmp_path: Path) -> None:
    good = fake_run(tmp_path / "good", exact=0.5, loss=1.0, extras=False)
    bad = tmp_path / "empty-run"
    bad.mkdir()
    with pytest.raises(LetheError, match=f"no metrics.json in run directory {re.escape(str(bad))}"):
        compare_runs([good, bad], tmp_path / "cmp")
    with pytest.raises(LetheError, match="does not exist"):
        compare_runs([tmp_path / "nowhere"], tmp_path / "cmp")
    (bad / "metrics.json").write_text("{not json")
    with pytest.raises(LetheError, match="invalid JSON"):
        compare_runs([good, bad], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


# -- headless chromium render -----------------------------------------------------------------------------


def load_script():
    spec = importlib.util.spec_from_file_location("render_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_script_reports_missing_chromium(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "report.html").write_text("<html></html>")
    code = load_script().main([str(tmp_path / "report.html"), "--out", str(tmp_path / "x.png"),
                               "--chromium", str(tmp_path / "no-chromium")])
    assert code == 2
    assert "chromium not found" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


AUDIT_TEXTS = PLAIN_SENTENCES[:6]


def real_audit_report(run_dir: Path) -> Path:
    """A report.html written by `lethe audit mia` (audit_mia) on a tiny model: real tables, ROC figure."""
    from lethe.audit.commands import MIASettings, audit_mia
    from lethe.models import build_tiny

    model, tokenizer = build_tiny(AUDIT_TEXTS, vocab_size=300, seed=0, hidden_size=32, num_layers=1,
                                  num_heads=2, intermediate_size=64)
    (run_dir.parent / "members.txt").write_text("\n\n".join(AUDIT_TEXTS[:3]))
    (run_dir.parent / "nonmembers.txt").write_text("\n\n".join(AUDIT_TEXTS[3:]))
    settings = MIASettings(model="tiny-test-model", members=str(run_dir.parent / "members.txt"),
                           nonmembers=str(run_dir.parent / "nonmembers.txt"), n_bootstrap=20)
    out, _ = audit_mia(settings, run_dir, model=model, tokenizer=tokenizer)
    return out / "report.html"


def find_subimage(image: np.ndarray, part: np.ndarray) -> tuple[int, int] | None:
    """(row, column) where ``part`` appears exactly inside ``image`` (RGB floats), or None."""
    height, width = part.shape[:2]
    if height > image.shape[0] or width > image.shape[1]:
        return None
    probe = height // 2
    for y in range(image.shape[0] - height + 1):
        windows = np.lib.stride_tricks.sliding_window_view(image[y + probe], width, axis=0)  # [x, rgb, w]
        hits = np.flatnonzero((windows[:, :, ::7] == part[probe, ::7].T).all(axis=(1, 2)))
        for x in hits:
            if np.array_equal(image[y:y + height, x:x + width], part):
                return y, int(x)
    return None


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_chromium_renders_a_real_audit_report(tmp_path: Path) -> None:
    html_path = real_audit_report(tmp_path / "audit")
    assert "fig-roc" in html_path.read_text()
    out = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(html_path), "--out", str(out), "--width", "1000"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    image = decode(out.read_bytes())[..., :3]
    height, width = image.shape[:2]
    assert width == 1000 and 700 < height < 4000  # the whole page, cropped under the footer
    assert distinct_colours(image) > 50  # text, header bar, table and figure were painted
    assert (image[:40].mean(axis=2) < 0.3).mean() > 0.8  # the dark header bar at the top
    figure = decode((html_path.parent / "figures" / "roc.png").read_bytes())[..., :3]
    where = find_subimage(image, figure)
    assert where is not None  # the embedded ROC figure was painted pixel for pixel (not scaled, not blank)
    assert where[0] > 300  # below the title and the table
    assert image[-10:].min() > 0.95  # a margin of page background under the footer


def test_learning_rate_with_a_space_is_not_a_percentage():
    from lethe.report.html import format_value

    assert format_value(0.003, "learning rate") == "0.003"
    assert format_value(0.25, "exact-match rate") == "25.0%"
