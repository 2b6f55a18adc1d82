#!/usr/bin/env python
"""Render a report.html to a full-page PNG screenshot with headless chromium (a visual check of the report).

    python scripts/render_report.py runs/demo-gf/report.html --out docs/report-screenshot.png

Renders a real report written by Lethe (``lethe demo goldfish --run-dir runs/demo-gf`` writes the one in
the docs; any ``lethe audit ...`` or ``lethe report ...`` page works too). The page is laid out ``--width``
CSS pixels wide in a window tall enough for all of it (the window grows until the content ends above its
bottom edge), and the blank space under the footer is cropped, so the PNG shows the whole page. Chromium runs
offline: no network, no GPU, no sandbox, a fresh throw-away profile. Exits with status 2 and one line on
stderr when chromium is missing or fails.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)
FIRST_HEIGHT = 4000
MAX_HEIGHT = 32000
MARGIN = 24  # pixels of page background kept under the last painted row


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


def screenshot(html_path: Path, out_png: Path, width: int, height: int, exe: str, timeout: float) -> None:
    """One chromium screenshot of ``html_path`` in a ``width`` x ``height`` window."""
    with tempfile.TemporaryDirectory(prefix="lethe-chromium-") as profile:
        tmp_png = Path(profile) / "shot.png"
        command = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/profile", f"--screenshot={tmp_png}",
                   f"--window-size={width},{height}", html_path.as_uri()]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RenderError(f"chromium did not finish within {timeout:.0f} s") from None
        if not tmp_png.is_file() or tmp_png.stat().st_size == 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RenderError(f"chromium wrote no screenshot (exit {proc.returncode}): {tail[0]}")
        shutil.copyfile(tmp_png, out_png)


def content_bottom(image: Image.Image) -> int:
    """Index of the last row that differs from the page background (the bottom-right pixel's colour)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    background = pixels[-1, -1]
    painted = np.flatnonzero(np.abs(pixels - background).max(axis=(1, 2)) > 8)
    return int(painted[-1]) if painted.size else -1


def render(html_path: str | Path, out_png: str | Path, *, width: int = 1280, height: int | None = None,
           chromium: str | None = None, timeout: float = 120.0) -> Path:
    """Screenshot ``html_path`` into ``out_png``: the full page, or a ``width`` x ``height`` window if given."""
    html_path = Path(html_path).resolve()
    out_png = Path(out_png).resolve()
    if not html_path.is_file():
        raise RenderError(f"no such report: {html_path}")
    exe = find_chromium(chromium)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if height is not None:
        screenshot(html_path, out_png, width, height, exe, timeout)
        return out_png
    window = FIRST_HEIGHT
    while True:
        screenshot(html_path, out_png, width, window, exe, timeout)
        with Image.open(out_png) as shot:
            image = shot.convert("RGB")
        bottom = content_bottom(image)
        if bottom < image.height - MARGIN or window >= MAX_HEIGHT:
            break
        window = min(2 * window, MAX_HEIGHT)  # the page goes on below the window: try a taller one
    image.crop((0, 0, image.width, min(image.height, bottom + 1 + MARGIN))).save(out_png, optimize=True)
    return out_png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="report.html to render")
    parser.add_argument("--out", required=True, help="PNG screenshot to write")
    parser.add_argument("--width", type=int, default=1280, help="page width in CSS pixels (default 1280)")
    parser.add_argument("--window-size", help="WIDTH,HEIGHT: a fixed window instead of the full page")
    parser.add_argument("--chromium", help=f"chromium executable (default {DEFAULT_CHROMIUM})")
    args = parser.parse_args(argv)
    width, height = args.width, None
    if args.window_size:
        try:
            width, height = (int(v) for v in args.window_size.split(","))
        except ValueError:
            parser.error(f"--window-size must be WIDTH,HEIGHT, got {args.window_size!r}")
    try:
        out = render(args.report, args.out, width=width, height=height, chromium=args.chromium)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
