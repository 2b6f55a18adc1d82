"""Report figures: pure functions from plain data to PNG bytes.

Every function builds a :class:`matplotlib.figure.Figure` directly on an Agg canvas (no pyplot, no global
state, safe to call from threads), returns the PNG bytes and, when ``path`` is given, also writes them there
atomically. One style throughout: the Okabe-Ito colour-blind-safe palette, 6x4 inches at 110 dpi.

Edge cases, the same for every function:

* no data at all (an empty mapping, or only empty / all-NaN series) gives a placeholder figure with the
  title and the words "no data", so a report never fails because one run measured nothing;
* NaN / inf values (and, on log axes, non-positive coordinates) are skipped point by point;
* malformed input (mismatched lengths, non-numbers) raises :class:`~lethe.errors.LetheError`.
"""

from __future__ import annotations

import io
import math
import numbers
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, NullFormatter

from lethe.errors import LetheError
from lethe.runs import atomic_write_bytes

__all__ = [
    "PALETTE",
    "PNG_MAGIC",
    "bar_comparison",
    "empirical_cdf",
    "exposure_vs_repetitions",
    "placeholder",
    "roc_curves",
    "rouge_distribution",
    "training_curves",
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DPI = 110
FIGSIZE = (6.0, 4.0)
# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
LINESTYLES = ("-", "--", "-.", ":")
TITLE_SIZE = 12
LABEL_SIZE = 10.5
TICK_SIZE = 9.5
LEGEND_SIZE = 9.5
WRAP = 56  # characters per legend line for long (merged) entries


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _linestyle(i: int) -> str:
    """Solid for the first palette round, then dashed etc., so > 8 series stay distinguishable."""
    return LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]


def _number(value: object, what: str) -> float:
    """``value`` as a float (numpy scalars included); anything else, bools too, is a LetheError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LetheError(f"{what}: expected a number, got {value!r:.60}")
    return float(value)


def _short(value: float) -> str:
    """A bar label: two decimals in the usual range, else three significant digits."""
    return f"{value:.2f}" if 0.01 <= abs(value) < 1000 else f"{value:.3g}"


def _finite(values: Iterable[float]) -> bool:
    return all(math.isfinite(v) for v in values)


def _figure(figsize: tuple[float, float] = FIGSIZE, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.tick_params(labelsize=TICK_SIZE)
        ax.grid(True, color="#d0d7de", linewidth=0.6, alpha=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def _label(ax: Axes, title: str | None, xlabel: str, ylabel: str) -> None:
    if title:
        ax.set_title(title, fontsize=TITLE_SIZE, fontweight="bold")
    ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    ax.set_ylabel(ylabel, fontsize=LABEL_SIZE)


def _legend(ax: Axes, loc: str = "best", **kwargs: object) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc=loc, fontsize=LEGEND_SIZE, frameon=True, framealpha=0.92, edgecolor="#d0d7de", **kwargs)


def _legend_below(fig: Figure, ax: Axes, ncol: int = 2) -> None:
    """The legend under the axes, outside the data (for plots where any inside spot may hide a curve)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        if any("\n" in label or len(label) > WRAP // 2 + 10 for label in labels):
            ncol = 1  # long entries side by side would run off the figure
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(handles)),
                   fontsize=LEGEND_SIZE, frameon=False)


def _finish(fig: Figure, path: str | Path | None) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    data = buffer.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def placeholder(title: str, message: str = "no data", path: str | Path | None = None) -> bytes:
    """A figure with ``title`` and a centred ``message``: what every function draws when given no data."""
    fig, (ax,) = _figure()
    ax.set_axis_off()
    ax.set_title(title, fontsize=TITLE_SIZE, fontweight="bold")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="#57606a", transform=ax.transAxes)
    return _finish(fig, path)


def rouge_distribution(models: Mapping[str, Sequence[float]], *, bins: int = 20,
                       title: str = "ROUGE-L of extracted suffixes", path: str | Path | None = None) -> bytes:
    """Histogram of per-document ROUGE-L in [0, 1], one step outline per model, means in the legend.

    Like the goldfish paper's standard-vs-goldfish figure: mass near 1 means verbatim memorization.
    """
    if bins < 1:
        raise LetheError(f"rouge_distribution: bins must be at least 1, got {bins}")
    clean: dict[str, list[float]] = {}
    for name, scores in models.items():
        values = [_number(v, f"rouge_distribution[{name!r}]") for v in scores]
        values = [v for v in values if math.isfinite(v)]
        if any(v < 0 or v > 1 for v in values):
            raise LetheError(f"rouge_distribution[{name!r}]: ROUGE-L scores must lie in [0, 1]")
        if values:
            clean[str(name)] = values
    if not clean:
        return placeholder(title, path=path)
    fig, (ax,) = _figure()
    edges = [i / bins for i in range(bins + 1)]
    filled = len(clean) <= 3
    tallest = 1
    for i, (name, values) in enumerate(clean.items()):
        mean = sum(values) / len(values)
        label = f"{name} (mean {mean:.3f}, n={len(values)})"
        color = _color(i)
        if filled:
            ax.hist(values, bins=edges, histtype="stepfilled", color=color, alpha=0.18, linewidth=0)
        counts, _, _ = ax.hist(values, bins=edges, histtype="step", color=color, linewidth=1.8,
                               linestyle=_linestyle(i), label=label)
        tallest = max(tallest, int(max(counts)))
        ax.axvline(mean, color=color, linestyle=":", linewidth=1.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, tallest * (1.15 + 0.09 * len(clean)))  # headroom for the legend
    _label(ax, title, "ROUGE-L (generated vs. true suffix)", "documents")
    _legend(ax, loc="upper center")
    return _finish(fig, path)


def empirical_cdf(models: Mapping[str, Sequence[float]], *, title: str = "Empirical CDF",
                  xlabel: str = "value", xlim: tuple[float, float] | None = None,
                  path: str | Path | None = None) -> bytes:
    """Empirical CDF per model (a step curve F(x) = share of values <= x), medians in the legend.

    Two distributions match when their curves coincide; the largest vertical gap is the KS statistic.
    """
    clean: dict[str, list[float]] = {}
    for name, values in models.items():
        finite = sorted(v for v in (_number(x, f"empirical_cdf[{name!r}]") for x in values) if math.isfinite(v))
        if finite:
            clean[str(name)] = finite
    if not clean:
        return placeholder(title, path=path)
    fig, (ax,) = _figure()
    for i, (name, values) in enumerate(clean.items()):
        n = len(values)
        median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2
        xs = [values[0], *values]
        ys = [0.0, *((j + 1) / n for j in range(n))]
        ax.step(xs, ys, where="post", color=_color(i), linestyle=_linestyle(i), linewidth=1.8,
                label=f"{name} (median {median:.3f}, n={n})")
    ax.set_ylim(0, 1.02)
    if xlim is not None:
        ax.set_xlim(*xlim)
    _label(ax, title, xlabel, "share of documents <= x")
    _legend(ax, loc="upper left")
    return _finish(fig, path)


def roc_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float], float]], *,
               fpr_min: float = 1e-3, title: str = "Membership inference ROC",
               path: str | Path | None = None) -> bytes:
    """ROC curve per attack (or per model/attack name): ``name -> (fpr, tpr, auc)``, log-scale FPR axis.

    The FPR axis spans ``[fpr_min, 1]`` (the low-FPR regime is what matters for membership inference);
    points with FPR below ``fpr_min`` (including FPR = 0, which a log axis cannot show) are drawn at
    ``fpr_min``, so a perfectly separating attack appears as a step at the left edge rather than vanishing
    (the axis starts a little left of ``fpr_min`` and ends a little above TPR = 1 so that step and a TPR = 1
    plateau do not hide under the frame). Curves that are identical after this clipping (several perfect
    attacks, say) are drawn once with their names joined in one legend entry, so none is hidden under
    another. The dotted line is chance (TPR = FPR).
    """
    if not 0 < fpr_min < 1:
        raise LetheError(f"roc_curves: fpr_min must lie in (0, 1), got {fpr_min}")
    clean: dict[str, tuple[list[float], list[float], float]] = {}
    for name, curve in curves.items():
        try:
            fpr_raw, tpr_raw, auc_raw = curve
        except (TypeError, ValueError):
            raise LetheError(f"roc_curves[{name!r}]: expected (fpr, tpr, auc), got {curve!r:.80}") from None
        if len(fpr_raw) != len(tpr_raw):
            raise LetheError(f"roc_curves[{name!r}]: {len(fpr_raw)} fpr but {len(tpr_raw)} tpr points")
        what = f"roc_curves[{name!r}]"
        pairs = [(_number(f, what), _number(t, what)) for f, t in zip(fpr_raw, tpr_raw, strict=True)]
        pairs = sorted((max(f, fpr_min), t) for f, t in pairs if _finite((f, t)) and f >= 0)
        auc = _number(auc_raw, what) if auc_raw is not None else math.nan
        if pairs:
            clean[str(name)] = ([f for f, _ in pairs], [t for _, t in pairs], auc)
    if not clean:
        return placeholder(title, path=path)
    fig, (ax,) = _figure()
    chance = [fpr_min ** (1 - i / 200) for i in range(201)]  # dense: 2 points would draw a straight line
    ax.plot(chance, chance, color="#8c959f", linestyle=":", linewidth=1.2, label="chance")
    for i, (names, (fpr, tpr), aucs) in enumerate(_merge_identical(clean)):
        ax.plot(fpr, tpr, color=_color(i), linestyle=_linestyle(i), linewidth=1.8,
                label=_roc_label(names, aucs))
    ax.set_xscale("log")
    ax.set_xlim(fpr_min / 1.5, 1)
    ax.set_ylim(0, 1.03)
    _label(ax, title, "false positive rate (log scale)", "true positive rate")
    _legend_below(fig, ax, ncol=2)
    return _finish(fig, path)


def _merge_identical(curves: Mapping[str, tuple[list[float], list[float], float]]
                     ) -> list[tuple[list[str], tuple[list[float], list[float]], list[float]]]:
    """Group curves with identical points: [(names, (fpr, tpr), aucs)] in first-seen order."""
    groups: dict[tuple[tuple[float, ...], tuple[float, ...]], tuple[list[str], list[float]]] = {}
    for name, (fpr, tpr, auc) in curves.items():
        names, aucs = groups.setdefault((tuple(fpr), tuple(tpr)), ([], []))
        names.append(name)
        aucs.append(auc)
    return [(names, (list(key[0]), list(key[1])), aucs) for key, (names, aucs) in groups.items()]


def _roc_label(names: list[str], aucs: list[float]) -> str:
    texts = [f"AUC\u00a0{auc:.2f}" if math.isfinite(auc) else "AUC\u00a0n/a" for auc in aucs]  # kept on one line
    if len(names) == 1:
        return f"{names[0]} ({texts[0]})"
    if len(set(texts)) == 1:
        label = f"{', '.join(names)} (identical curves, {texts[0]})"
    else:
        label = "identical curves: " + ", ".join(f"{n} ({t})" for n, t in zip(names, texts, strict=True))
    return textwrap.fill(label, WRAP, break_on_hyphens=False)


def exposure_vs_repetitions(series: Mapping[str, Sequence[tuple[int, float]]],
                            max_exposure: float | None = None, *,
                            title: str = "Canary exposure vs. repetitions",
                            path: str | Path | None = None) -> bytes:
    """Canary exposure (bits) against how often the canary was repeated (log x), one line per model.

    ``max_exposure`` (log2 of the randomness-space size |R|) is drawn dashed: exposure cannot exceed it.
    Points with a repetition count <= 0 cannot sit on the log axis and are skipped.
    """
    clean: dict[str, list[tuple[float, float]]] = {}
    for name, points in series.items():
        what = f"exposure_vs_repetitions[{name!r}]"
        pairs = []
        for point in points:
            if len(point) != 2:
                raise LetheError(f"{what}: expected (repetitions, exposure) pairs, got {point!r}")
            pairs.append((_number(point[0], what), _number(point[1], what)))
        pairs = sorted(p for p in pairs if _finite(p) and p[0] > 0)
        if pairs:
            clean[str(name)] = pairs
    if not clean:
        return placeholder(title, path=path)
    fig, (ax,) = _figure()
    markers = ("o", "s", "^", "D", "v", "P", "X", "*")
    for i, (name, pairs) in enumerate(clean.items()):
        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], color=_color(i), linestyle=_linestyle(i),
                marker=markers[i % len(markers)], markersize=5, linewidth=1.8, label=name)
    if max_exposure is not None and math.isfinite(max_exposure):
        ax.axhline(max_exposure, color="#57606a", linestyle="--", linewidth=1.2,
                   label=f"max exposure log2|R| = {max_exposure:.1f} bits")
        ax.set_ylim(bottom=0, top=max_exposure * 1.12 if max_exposure > 0 else None)
    else:
        ax.set_ylim(bottom=0)
    ax.set_xscale("log")
    reps = sorted({p[0] for pairs in clean.values() for p in pairs})
    if len(reps) <= 12:  # label the measured repetition counts themselves, not powers of ten
        ax.set_xticks(reps, [f"{r:g}" for r in reps])
        ax.xaxis.set_minor_formatter(NullFormatter())
    _label(ax, title, "repetitions of the canary in training (log scale)", "exposure (bits)")
    _legend_below(fig, ax, ncol=3)  # exposure often sits near the ceiling, where any inside spot hides a line
    return _finish(fig, path)


def _clean_xy(series: Mapping[str, Sequence[tuple[float, float]]], what: str) -> dict[str, list[tuple]]:
    clean: dict[str, list[tuple[float, float]]] = {}
    for name, points in series.items():
        pairs = []
        for point in points:
            if len(point) != 2:
                raise LetheError(f"{what}[{name!r}]: expected (x, y) pairs, got {point!r}")
            pairs.append((_number(point[0], f"{what}[{name!r}]"), _number(point[1], f"{what}[{name!r}]")))
        pairs = sorted(p for p in pairs if _finite(p))
        if pairs:
            clean[str(name)] = pairs
    return clean


def training_curves(series: Mapping[str, Sequence[tuple[int, float]]],
                    series_tokens: Mapping[str, Sequence[tuple[int, float]]] | None = None, *,
                    title: str = "Training loss", path: str | Path | None = None) -> bytes:
    """Loss vs. optimizer step per run; with ``series_tokens``, a second panel of loss vs. supervised tokens.

    The second panel compares runs at equal supervision (a goldfish run sees fewer supervised tokens
    per step than a standard one).
    """
    by_step = _clean_xy(series, "training_curves")
    by_tokens = _clean_xy(series_tokens or {}, "training_curves(tokens)")
    if not by_step and not by_tokens:
        return placeholder(title, path=path)
    panels = [(by_step, "optimizer step"), (by_tokens, "supervised tokens")]
    panels = [p for p in panels if p[0]]
    fig, axes = _figure((10.0, 4.0) if len(panels) == 2 else FIGSIZE, ncols=len(panels))
    names = list(dict.fromkeys([*by_step, *by_tokens]))  # same colour for a run in both panels
    for ax, (data, xlabel) in zip(axes, panels, strict=True):
        for name, pairs in data.items():
            i = names.index(name)
            ax.plot([p[0] for p in pairs], [p[1] for p in pairs], color=_color(i), linestyle=_linestyle(i),
                    linewidth=1.6, marker="o" if len(pairs) <= 12 else None, markersize=3.5, label=name)
        sub = title if len(panels) == 1 else f"{title} vs. {xlabel.split()[-1]}"
        _label(ax, sub, xlabel, "loss (nats / token)")
        if data is by_tokens:
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 1.5M, not "1.5" with a "1e6" offset
        _legend(ax, loc="upper right")
    return _finish(fig, path)


def bar_comparison(values: Mapping[str, Mapping[str, float]], title: str = "Comparison", *,
                   ylabel: str = "value", path: str | Path | None = None) -> bytes:
    """Grouped bars: one group per outer key (e.g. method), one coloured bar per inner key (e.g. metric).

    Values are printed above the bars; a NaN / missing value leaves a gap marked "n/a".
    """
    groups = [str(g) for g in values]
    series = list(dict.fromkeys(str(k) for inner in values.values() for k in inner))
    table: dict[tuple[str, str], float] = {}
    for group, inner in values.items():
        for key, value in inner.items():
            number = _number(value, f"bar_comparison[{group!r}][{key!r}]") if value is not None else math.nan
            table[(str(group), str(key))] = number
    if not groups or not series or not any(math.isfinite(v) for v in table.values()):
        return placeholder(title, path=path)
    fig, (ax,) = _figure()
    width = 0.8 / len(series)
    finite = [v for v in table.values() if math.isfinite(v)]
    span = max(max(finite), 0) - min(min(finite), 0) or 1.0
    for j, key in enumerate(series):
        offset = (j - (len(series) - 1) / 2) * width
        for g, group in enumerate(groups):
            value = table.get((group, key), math.nan)
            x = g + offset
            if not math.isfinite(value):
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#57606a")
                continue
            ax.bar(x, value, width=width * 0.92, color=_color(j), label=key if g == 0 else None,
                   edgecolor="white", linewidth=0.5)
            if len(series) * len(groups) <= 24:
                ax.text(x, value + (0.01 * span if value >= 0 else -0.01 * span), _short(value),
                        ha="center", va="bottom" if value >= 0 else "top", fontsize=7)
    # legend entries for series whose first group was n/a
    seen = set(ax.get_legend_handles_labels()[1])
    for j, key in enumerate(series):
        if key not in seen:
            ax.bar([0], [0], width=0, color=_color(j), label=key)
    ax.set_xticks(range(len(groups)), groups, rotation=20 if max(map(len, groups)) > 10 else 0,
                  ha="right" if max(map(len, groups)) > 10 else "center")
    ax.grid(False, axis="x")
    ax.axhline(0, color="#57606a", linewidth=0.8)
    ax.margins(y=0.15)
    _label(ax, title, "", ylabel)
    _legend_below(fig, ax, ncol=4)
    return _finish(fig, path)
