"""Reports: figures (PNG bytes from plain data), the Markdown + self-contained HTML builder, run comparison.

    from lethe.report import Report, figures
    report = Report("Extraction audit", subtitle="runs/x/model")
    report.add_table([{"model": "x", "exact_match_rate": 0.25}])
    report.add_figure("rouge", figures.rouge_distribution({"x": [0.1, 0.9]}), "ROUGE-L per document")
    md_path, html_path = report.write(run_dir)   # report.md, report.html, figures/rouge.png
"""

from __future__ import annotations

from lethe.report import figures
from lethe.report.compare import compare_runs
from lethe.report.figures import (
    bar_comparison,
    exposure_vs_repetitions,
    roc_curves,
    rouge_distribution,
    training_curves,
)
from lethe.report.html import Report, format_value

__all__ = [
    "Report",
    "bar_comparison",
    "compare_runs",
    "exposure_vs_repetitions",
    "figures",
    "format_value",
    "roc_curves",
    "rouge_distribution",
    "training_curves",
]
