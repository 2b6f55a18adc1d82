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

from lethe.errors import LetheError
from lethe.report import Report, compare_runs, figures, format_value
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
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in html
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
        fpr, tpr, auc = roc(1 + 3 * exact)
        mia = {"attacks": {"loss": {"fpr": fpr, "tpr": tpr, "auc": auc}}}
        (path / "mia.json").write_text(json.dumps(mia))
        events = [{"event": "train_start"}] + [
            {"event": "train", "step": s, "loss": loss + 3 / (s + 1), "supervised_tokens": 512 * s}
            for s in range(0, 50, 10)]
        lines = [json.dumps(e) for e in events] + ['{"event": "tr']  # a killed run's partial last line
        (arm / "log.jsonl").write_text("\n".join(lines))
    return path


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
    for name in ("rouge_distribution", "roc_curves", "training_curves"):
        assert (tmp_path / "cmp" / "figures" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| **standard.extraction.exact_match_rate** ◆ | 87.5% | 0.0% |" in md


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


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_chromium_renders_a_non_blank_report(tmp_path: Path) -> None:
    report = Report("Render check", subtitle="chromium")
    report.add_note("headline holds", kind="ok")
    report.add_table([{"model": "standard", "exact_match_rate": 0.9},
                      {"model": "goldfish", "exact_match_rate": 0}])
    report.add_figure("roc", figures.roc_curves({"loss": roc(2.0)}), "ROC")
    _, html_path = report.write(tmp_path / "run")
    out = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(html_path), "--out", str(out),
                           "--window-size", "900,900"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    image = decode(out.read_bytes())
    assert image.shape[:2] == (900, 900)
    assert distinct_colours(image) > 50  # text, header bar, note box and figure were painted
    assert image[..., :3].mean() < 0.98  # not a white page
