#!/usr/bin/env python
"""Render a report.html to a PNG screenshot with headless chromium (a visual check of the report layer).

    python scripts/render_report.py runs/x/report.html --out shot.png
    python scripts/render_report.py --sample --out docs/report-screenshot.png   # synthetic sample report

``--sample`` builds a report from synthetic data (all five figure kinds, tables, notes) in a temporary
directory and renders that; ``--keep DIR`` writes the sample there instead. Exits with status 2 and one
line on stderr when chromium is missing or fails.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/bin/chromium"


class RenderError(Exception):
    """Rendering failed (no chromium, chromium error, no screenshot)."""


def find_chromium(explicit: str | None = None) -> str:
    """The chromium executable: ``explicit``, else /usr/bin/chromium, else chromium(-browser) on PATH."""
    candidates = [explicit] if explicit else [DEFAULT_CHROMIUM, "chromium", "chromium-browser"]
    for candidate in candidates:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise RenderError(f"chromium not found (tried {', '.join(c for c in candidates if c)}); "
                      "install it with: apt-get install -y chromium")


def render(html_path: str | Path, out_png: str | Path, *, window: tuple[int, int] = (1280, 2000),
           chromium: str | None = None, timeout: float = 120.0) -> Path:
    """Screenshot ``html_path`` into ``out_png`` (``window`` = width, height in CSS pixels)."""
    html_path = Path(html_path).resolve()
    out_png = Path(out_png).resolve()
    if not html_path.is_file():
        raise RenderError(f"no such report: {html_path}")
    exe = find_chromium(chromium)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lethe-chromium-") as profile:
        tmp_png = Path(profile) / "shot.png"
        command = [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}/profile", f"--screenshot={tmp_png}",
            f"--window-size={window[0]},{window[1]}", html_path.as_uri(),
        ]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RenderError(f"chromium did not finish within {timeout:.0f} s") from None
        if not tmp_png.is_file() or tmp_png.stat().st_size == 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RenderError(f"chromium wrote no screenshot (exit {proc.returncode}): {tail[0]}")
        shutil.copyfile(tmp_png, out_png)
    return out_png


def build_sample(run_dir: str | Path) -> Path:
    """A report from synthetic data with every figure kind; returns the report.html path."""
    from lethe.report import Report, figures

    rng = random.Random(0)
    standard = [min(1.0, max(0.0, rng.betavariate(6, 1.2))) for _ in range(200)]
    goldfish = [min(1.0, max(0.0, rng.betavariate(2, 5))) for _ in range(200)]

    def roc(strength: float) -> tuple[list[float], list[float], float]:
        fpr = [10 ** (-3 + 3 * i / 60) for i in range(61)]
        tpr = [f ** (1 / strength) for f in fpr]
        auc = strength / (1 + strength)
        return [0.0, *fpr], [0.0, *tpr], auc

    reps = [1, 2, 4, 8, 16, 32, 64]
    exposure = {
        "standard": [(r, min(29.9, 2.0 + 6.5 * math.log2(r))) for r in reps],
        "goldfish k=4": [(r, 1.5 + 1.2 * math.log2(r)) for r in reps],
        "DP-SGD ε=8": [(r, 1.0 + 0.3 * math.log2(r)) for r in reps],
    }
    loss_std = [(s, 6.0 * math.exp(-s / 90) + 0.4 + 0.05 * rng.random()) for s in range(0, 401, 10)]
    loss_gf = [(s, 6.0 * math.exp(-s / 110) + 0.9 + 0.05 * rng.random()) for s in range(0, 401, 10)]
    tokens = {"standard": [(s * 8192, v) for s, v in loss_std],
              "goldfish k=4": [(s * 6144, v) for s, v in loss_gf]}

    report = Report("Goldfish demo", subtitle="standard vs goldfish (k=4, h=13) on 64 fictional biographies")
    report.add_note("headline holds: standard memorizes 92% of suffixes exactly, goldfish none "
                    "(escaped: <script>alert(1)</script>)", kind="ok")
    report.add_keyvalues({"model": "tiny-llama (4 layers, 256 hidden)", "documents": 64, "max_steps": 400,
                          "learning_rate": 3e-4, "seed": 1234, "wall_s": 184.37})
    report.add_heading("Training")
    report.add_figure("training_curves",
                      figures.training_curves({"standard": loss_std, "goldfish k=4": loss_gf}, tokens),
                      "Training loss per optimizer step and per supervised token (goldfish drops 1/4 of the "
                      "tokens from the loss).")
    report.add_heading("Extraction")
    report.add_paragraph("Each biography's first 32 tokens are given as a prompt; the model greedily "
                         "generates the next 50 tokens, which are compared with the true suffix.")
    report.add_table([
        {"model": "standard", "exact_match_rate": 0.921875, "token_match_rate": 0.9712, "rougeL": 0.9803,
         "heldout_loss": 5.4121, "supervised_tokens": 3276800},
        {"model": "goldfish k=4", "exact_match_rate": 0.0, "token_match_rate": 0.3127, "rougeL": 0.2841,
         "heldout_loss": 5.0917, "supervised_tokens": 2457600},
    ], caption="Extraction on the training documents (suffix 50 tokens)")
    report.add_figure("rouge_distribution", figures.rouge_distribution({"standard": standard,
                                                                        "goldfish k=4": goldfish}),
                      "ROUGE-L of generated vs true suffixes per document.")
    report.add_heading("Privacy audits")
    report.add_figure("roc_curves", figures.roc_curves({"loss": roc(1.6), "zlib": roc(2.1),
                                                        "min-k% (k=20)": roc(2.6), "reference": roc(3.4)}),
                      "Membership inference on the standard model.")
    report.add_figure("exposure", figures.exposure_vs_repetitions(exposure, max_exposure=29.9),
                      "Canary exposure vs repetitions.")
    report.add_heading("Unlearning")
    report.add_note("does not hold: gradient ascent loses 31% of utility", kind="warning")
    report.add_figure("unlearning", figures.bar_comparison({
        "grad ascent": {"forget quality": 0.41, "model utility": 0.38, "forget ROUGE-L": 0.12},
        "grad diff": {"forget quality": 0.55, "model utility": 0.52, "forget ROUGE-L": 0.21},
        "NPO": {"forget quality": 0.71, "model utility": 0.55, "forget ROUGE-L": 0.33},
        "retain only": {"forget quality": 1.0, "model utility": 0.57, "forget ROUGE-L": 0.39},
    }, "TOFU forget10 results", ylabel="score (higher is better)"), "Unlearning methods on TOFU forget10.")
    _, html_path = report.write(run_dir)
    return html_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", help="report.html to render")
    parser.add_argument("--sample", action="store_true", help="render a synthetic sample report instead")
    parser.add_argument("--keep", help="with --sample: write the sample report into this directory")
    parser.add_argument("--out", required=True, help="PNG screenshot to write")
    parser.add_argument("--window-size", default="1280,2000", help="WIDTH,HEIGHT (default 1280,2000)")
    parser.add_argument("--chromium", help=f"chromium executable (default {DEFAULT_CHROMIUM})")
    args = parser.parse_args(argv)
    if bool(args.report) == args.sample:
        parser.error("give either a report.html or --sample")
    try:
        width, height = (int(v) for v in args.window_size.split(","))
    except ValueError:
        parser.error(f"--window-size must be WIDTH,HEIGHT, got {args.window_size!r}")
    try:
        find_chromium(args.chromium)  # fail before building anything
        if args.sample:
            with tempfile.TemporaryDirectory(prefix="lethe-sample-") as tmp:
                html_path = build_sample(args.keep or tmp)
                out = render(html_path, args.out, window=(width, height), chromium=args.chromium)
        else:
            out = render(args.report, args.out, window=(width, height), chromium=args.chromium)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
