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
from dataclasses import dataclass
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
    "RocCurve",
    "auc_text",
    "bar_comparison",
    "empirical_cdf",
    "exposure_figure",
    "exposure_vs_repetitions",
    "guard_weights_figure",
    "mean_interval",
    "placeholder",
    "roc_curves",
    "roc_figure",
    "rouge_distribution",
    "training_curves",
    "training_figure",
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
MIN_LINE_POINTS = 5  # fewer logged points than this are drawn as points, not joined by a line


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


@dataclass(frozen=True)
class RocCurve:
    """One ROC curve to draw: its points, AUC, the AUC's bootstrap interval and the non-member count.

    ``n_nonmembers`` sets the resolution: the smallest non-zero FPR is 1/n_nonmembers. Without it, the
    smallest positive FPR among the points stands in for it (an upper bound: a thinned curve may lack it).
    """

    fpr: Sequence[float]
    tpr: Sequence[float]
    auc: float | None = None
    auc_ci: Sequence[float] | None = None
    n_nonmembers: int | None = None


def _as_roc(name: str, curve: object) -> RocCurve:
    if isinstance(curve, RocCurve):
        return curve
    try:
        return RocCurve(*curve)  # (fpr, tpr, auc[, auc_ci[, n_nonmembers]])
    except TypeError:
        raise LetheError(f"roc_curves[{name!r}]: expected (fpr, tpr, auc), got {curve!r:.80}") from None


def _ci_pair(value: object, what: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        raise LetheError(f"{what}: auc_ci must be a (low, high) pair, got {value!r:.60}")
    low, high = (_number(v, what) for v in value)
    return (low, high) if _finite((low, high)) else None


def roc_figure(curves: Mapping[str, RocCurve | tuple], *, title: str = "Membership inference ROC") -> Figure | None:
    """The ROC figure of :func:`roc_curves` (None when there is nothing to draw), for callers and tests that
    inspect the axes."""
    clean: dict[str, tuple[list[float], list[float], float, tuple[float, float] | None, float]] = {}
    for name, raw in curves.items():
        curve = _as_roc(str(name), raw)
        what = f"roc_curves[{name!r}]"
        if len(curve.fpr) != len(curve.tpr):
            raise LetheError(f"{what}: {len(curve.fpr)} fpr but {len(curve.tpr)} tpr points")
        pairs = [(_number(f, what), _number(t, what)) for f, t in zip(curve.fpr, curve.tpr, strict=True)]
        pairs = [(f, t) for f, t in pairs if _finite((f, t)) and f >= 0]
        if not pairs:
            continue
        if curve.n_nonmembers is not None:
            n = _number(curve.n_nonmembers, what)
            if n < 1:
                raise LetheError(f"{what}: n_nonmembers must be >= 1, got {curve.n_nonmembers!r}")
            resolution = 1.0 / n
        else:
            resolution = min([f for f, _ in pairs if f > 0] or [1.0])
        pairs = sorted((max(f, resolution), t) for f, t in pairs)  # FPR = 0 drawn at 1/n, the first step
        auc = _number(curve.auc, what) if curve.auc is not None else math.nan
        clean[str(name)] = ([f for f, _ in pairs], [t for _, t in pairs], auc, _ci_pair(curve.auc_ci, what),
                            resolution)
    if not clean:
        return None
    fpr_min = min(c[4] for c in clean.values())
    fig, (ax,) = _figure()
    chance = [fpr_min ** (1 - i / 200) for i in range(201)]  # dense: 2 points would draw a straight line
    ax.plot(chance, chance, color="#8c959f", linestyle=":", linewidth=1.2, label="chance")
    merged = _merge_identical({name: (fpr, tpr, auc) for name, (fpr, tpr, auc, _, _) in clean.items()})
    for i, (names, (fpr, tpr), aucs) in enumerate(merged):
        cis = [clean[name][3] for name in names]
        ax.plot(fpr, tpr, color=_color(i), linestyle=_linestyle(i), linewidth=1.8, clip_on=False,
                label=_roc_label(names, aucs, cis))
    ax.set_xscale("log")
    ax.set_xlim(fpr_min, 1)  # nothing is measured below 1/n_nonmembers
    ax.set_ylim(0, 1.03)
    n_text = f"1/{round(1 / fpr_min)}" if abs(1 / fpr_min - round(1 / fpr_min)) < 1e-6 else f"{fpr_min:.2g}"
    _label(ax, title, f"false positive rate (log scale, from the resolution {n_text})", "true positive rate")
    _legend_below(fig, ax, ncol=2)
    return fig


def roc_curves(curves: Mapping[str, RocCurve | tuple], *, title: str = "Membership inference ROC",
               path: str | Path | None = None) -> bytes:
    """ROC curve per attack (or per model/attack name): ``name -> RocCurve`` or ``(fpr, tpr, auc)``, log FPR.

    The FPR axis starts at the resolution of the data, 1/n_nonmembers (the largest non-member count among
    the curves): no FPR between 0 and 1/n can be measured, so an axis reaching 10⁻³ with 70 non-members would
    draw more than the data says. Each curve's FPR = 0 point is drawn at its own 1/n, as the step it makes
    at the left edge (drawn over the frame). The legend gives each AUC with its bootstrap 95% interval when
    known. Curves identical after this clipping (several perfect attacks, say) are drawn once with their
    names joined in one legend entry, so none is hidden under another. The dotted line is chance (TPR = FPR).
    """
    fig = roc_figure(curves, title=title)
    return placeholder(title, path=path) if fig is None else _finish(fig, path)


def _merge_identical(curves: Mapping[str, tuple[list[float], list[float], float]]
                     ) -> list[tuple[list[str], tuple[list[float], list[float]], list[float]]]:
    """Group curves with identical points: [(names, (fpr, tpr), aucs)] in first-seen order."""
    groups: dict[tuple[tuple[float, ...], tuple[float, ...]], tuple[list[str], list[float]]] = {}
    for name, (fpr, tpr, auc) in curves.items():
        names, aucs = groups.setdefault((tuple(fpr), tuple(tpr)), ([], []))
        names.append(name)
        aucs.append(auc)
    return [(names, (list(key[0]), list(key[1])), aucs) for key, (names, aucs) in groups.items()]


def auc_text(auc: float, ci: Sequence[float] | None = None) -> str:
    """"AUC 0.62 [0.55, 0.70]" (the bootstrap 95% interval when given), kept on one line."""
    if not math.isfinite(auc):
        return "AUC\u00a0n/a"
    text = f"AUC\u00a0{auc:.2f}"
    return text + (f"\u00a0[{ci[0]:.2f},\u00a0{ci[1]:.2f}]" if ci is not None else "")


def _roc_label(names: list[str], aucs: list[float], cis: Sequence[Sequence[float] | None] | None = None) -> str:
    texts = [auc_text(auc, ci) for auc, ci in zip(aucs, cis or [None] * len(aucs), strict=True)]
    if len(names) == 1:
        return f"{names[0]} ({texts[0]})"
    if len(set(texts)) == 1:
        label = f"{', '.join(names)} (identical curves, {texts[0]})"
    else:
        label = "identical curves: " + ", ".join(f"{n} ({t})" for n, t in zip(names, texts, strict=True))
    return textwrap.fill(label, WRAP, break_on_hyphens=False)


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the Student-t ``level`` interval of the mean; (mean, None, None) for one value.

    With n values the half-width is t_{(1+level)/2, n−1} · s / √n (s: the sample standard deviation), so
    two canaries give an honestly wide interval (t = 12.7) rather than a bare mean.
    """
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def exposure_figure(series: Mapping[str, Sequence[tuple[int, float]]], max_exposure: float | None = None, *,
                    title: str = "Canary exposure vs. repetitions") -> Figure | None:
    """The figure of :func:`exposure_vs_repetitions` (None when there is nothing to draw)."""
    clean: dict[str, dict[float, list[float]]] = {}
    for name, points in series.items():
        what = f"exposure_vs_repetitions[{name!r}]"
        by_reps: dict[float, list[float]] = {}
        for point in points:
            if len(point) != 2:
                raise LetheError(f"{what}: expected (repetitions, exposure) pairs, got {point!r}")
            reps, value = _number(point[0], what), _number(point[1], what)
            if _finite((reps, value)) and reps > 0:
                by_reps.setdefault(reps, []).append(value)
        if by_reps:
            clean[str(name)] = dict(sorted(by_reps.items()))
    if not clean:
        return None
    fig, (ax,) = _figure()
    markers = ("o", "s", "^", "D", "v", "P", "X", "*")
    top = max_exposure if max_exposure is not None and math.isfinite(max_exposure) else math.inf
    for i, (name, by_reps) in enumerate(clean.items()):
        shift = 10 ** (0.035 * (i - (len(clean) - 1) / 2))  # series side by side on the log axis
        xs = [r * shift for r in by_reps]
        stats = [mean_interval(values) for values in by_reps.values()]
        color = _color(i)
        for x, values in zip(xs, by_reps.values(), strict=True):  # every canary, spread a little in x
            spread = [x * 10 ** (0.012 * (j - (len(values) - 1) / 2)) for j in range(len(values))]
            ax.scatter(spread, values, s=16, color=color, alpha=0.45, linewidths=0, zorder=2)
        low = [m - max(0.0, lo) if lo is not None else 0.0 for m, lo, _ in stats]
        high = [min(top, hi) - m if hi is not None else 0.0 for m, _, hi in stats]
        counts = sorted({len(v) for v in by_reps.values()})
        n_text = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        label = f"{name}: mean ± 95% t-interval ({n_text} canar{'y' if counts == [1] else 'ies'} per count)"
        ax.errorbar(xs, [m for m, _, _ in stats], yerr=[low, high], color=color, linestyle=_linestyle(i),
                    marker=markers[i % len(markers)], markersize=5, linewidth=1.8, capsize=3, label=label,
                    zorder=3)
    if math.isfinite(top):
        ax.axhline(top, color="#57606a", linestyle="--", linewidth=1.2,
                   label=f"max exposure log2|R| = {top:.1f} bits")
        ax.set_ylim(bottom=0, top=top * 1.12 if top > 0 else None)
    else:
        ax.set_ylim(bottom=0)
    ax.set_xscale("log")
    reps = sorted({r for by_reps in clean.values() for r in by_reps})
    if len(reps) <= 12:  # label the measured repetition counts themselves, not powers of ten
        ax.set_xticks(reps, [f"{r:g}" for r in reps])
        ax.xaxis.set_minor_formatter(NullFormatter())
    _label(ax, title, "repetitions of the canary in training (log scale)", "exposure (bits)")
    _legend_below(fig, ax, ncol=1)  # exposure often sits near the ceiling, where any inside spot hides a line
    return fig


def exposure_vs_repetitions(series: Mapping[str, Sequence[tuple[int, float]]],
                            max_exposure: float | None = None, *,
                            title: str = "Canary exposure vs. repetitions",
                            path: str | Path | None = None) -> bytes:
    """Canary exposure (bits) against how often the canary was repeated (log x), one series per model.

    ``series`` maps a model to its canaries' ``(repetitions, exposure)`` points, one per canary (several at
    one repetition count). Every canary is drawn as a faint dot; the line joins the mean per repetition
    count, with its Student-t 95% interval as error bars (:func:`mean_interval`; clipped to the possible
    range [0, log2|R|]; none for a count with a single canary). ``max_exposure`` (log2 of the
    randomness-space size |R|) is drawn dashed: exposure cannot exceed it. Points with a repetition count
    <= 0 cannot sit on the log axis and are skipped.
    """
    fig = exposure_figure(series, max_exposure, title=title)
    return placeholder(title, path=path) if fig is None else _finish(fig, path)


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
    per step than a standard one). A series with fewer than :data:`MIN_LINE_POINTS` points is drawn as
    points only, its count in the legend: a line through two logged losses suggests a curve that was never
    measured (lower ``train.logging_steps`` for a real one).
    """
    fig = training_figure(series, series_tokens, title=title)
    return placeholder(title, path=path) if fig is None else _finish(fig, path)


def training_figure(series: Mapping[str, Sequence[tuple[int, float]]],
                    series_tokens: Mapping[str, Sequence[tuple[int, float]]] | None = None, *,
                    title: str = "Training loss") -> Figure | None:
    """The figure of :func:`training_curves` (None when there is nothing to draw)."""
    by_step = _clean_xy(series, "training_curves")
    by_tokens = _clean_xy(series_tokens or {}, "training_curves(tokens)")
    if not by_step and not by_tokens:
        return None
    panels = [(by_step, "optimizer step"), (by_tokens, "supervised tokens")]
    panels = [p for p in panels if p[0]]
    fig, axes = _figure((10.0, 4.0) if len(panels) == 2 else FIGSIZE, ncols=len(panels))
    names = list(dict.fromkeys([*by_step, *by_tokens]))  # same colour for a run in both panels
    for ax, (data, xlabel) in zip(axes, panels, strict=True):
        for name, pairs in data.items():
            i = names.index(name)
            few = len(pairs) < MIN_LINE_POINTS  # a line through 2 points would draw a trend nobody measured
            ax.plot([p[0] for p in pairs], [p[1] for p in pairs], color=_color(i),
                    linestyle="none" if few else _linestyle(i), linewidth=1.6,
                    marker="o" if len(pairs) <= 12 else None, markersize=6 if few else 3.5,
                    label=f"{name} ({len(pairs)} logged point{'s' if len(pairs) > 1 else ''})" if few else name)
        sub = title if len(panels) == 1 else f"{title} vs. {xlabel.split()[-1]}"
        _label(ax, sub, xlabel, "loss (nats / token)")
        if data is by_tokens:
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 1.5M, not "1.5" with a "1e6" offset
        _legend(ax, loc="upper right")
    return fig


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


def guard_weights_figure(weights: Sequence[float], scores: Sequence[float] | None = None, *,
                         title: str = "GUARD weights", path: str | Path | None = None) -> bytes:
    """Per-sample GUARD weights as N·w (1 = uniform): sorted, one bar per forget sample, and, with ``scores``,
    against the attribution score a_i (w = softmax(−a/τ) falls with a).

    N·w > 1: the sample is unlearned more strongly than under uniform weights; < 1: more gently.
    """
    what = "guard_weights_figure"
    w = [_number(v, what) for v in weights]
    if scores is not None and len(scores) != len(w):
        raise LetheError(f"{what}: {len(w)} weights but {len(scores)} scores")
    a = [_number(v, what) for v in scores] if scores is not None else None
    keep = [i for i in range(len(w)) if math.isfinite(w[i]) and (a is None or math.isfinite(a[i]))]
    if not keep:
        return placeholder(title, path=path)
    total = sum(w[i] for i in keep)
    scaled = [len(keep) * w[i] / total if total > 0 else math.nan for i in keep]
    fig, axes = _figure((10.0, 4.0) if a is not None else FIGSIZE, ncols=2 if a is not None else 1)
    ordered = sorted(scaled, reverse=True)
    axes[0].bar(range(1, len(ordered) + 1), ordered, width=1.0 if len(ordered) > 40 else 0.8, color=PALETTE[0],
                linewidth=0)
    axes[0].axhline(1.0, color="#57606a", linestyle="--", linewidth=1.2, label="uniform (N·w = 1)")
    effective = total ** 2 / sum(w[i] ** 2 for i in keep) if total > 0 else math.nan
    _label(axes[0], f"{title}, sorted", f"forget samples, largest weight first (N = {len(keep)}, "
                                        f"effective {effective:.1f})", "N·w")
    _legend(axes[0], loc="upper right")
    if a is not None:
        axes[1].scatter([a[i] for i in keep], scaled, s=14, color=PALETTE[0], alpha=0.7, linewidths=0)
        axes[1].axhline(1.0, color="#57606a", linestyle="--", linewidth=1.2)
        _label(axes[1], "weight vs. attribution score", "attribution score a_i = ⟨∇ℓ_i, ḡ_R⟩", "N·w")
    return _finish(fig, path)
