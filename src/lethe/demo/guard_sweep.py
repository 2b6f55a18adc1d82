"""GUARD where its premise holds: ``lethe demo unlearn`` over a knowledge-overlap sweep, several seeds.

GUARD (Niu, Ma et al. 2025, arXiv 2506.10946; DESIGN 3.4) weights each forget sample's unlearning loss by
softmax(−a_i/τ) with a_i = ⟨∇ℓ_i, ḡ_R⟩, so forget samples that share knowledge with the retain set are
unlearned gently. The embedded world's authors share almost no facts, so there ḡ_R is about 1/√N of the
per-sample retain gradient norms and the scores are noise. The world's ``overlap`` knob
(:func:`lethe.data.fictional._share_facts`) makes forget authors share home towns, residences, mentors,
prizes for co-authored books, genres, themes, habits and inspirations with retain authors. This sweep runs
the unlearning demo (full and retain models, GD and NPO with and without GUARD) for every (overlap, seed)
— the seed draws the world, the fine-tuning and the unlearning order — and compares each method with its
GUARD arm, paired over seeds:

- sacrifice rate SR_M = (M_retain(full) − M_retain(arm)) / (M_forget(full) − M_forget(arm)) for
  M ∈ {truth ratio, ROUGE-L, probability} (lower is better);
- the paper's form: the retain truth-ratio loss L = TR_retain(full) − TR_retain(arm) and its reduction by
  GUARD, 100 · (L_base − L_guard) / |L_base| % (the paper: up to 194.92% at forget10), and the retain truth
  ratio of GUARD relative to its base, 100 · (TR_guard − TR_base) / TR_base % (the paper: up to +32.08%
  over GA);
- per metric: mean ± sd (ddof 1) of both arms, the paired difference, a paired t-test
  (``scipy.stats.ttest_rel``) and a two-sided sign test (``scipy.stats.binomtest``) over the seeds;
- the premise at each overlap: ‖ḡ_R‖ / mean ‖∇ℓ_r‖ against 1/√N_R, and the split-half correlation of the
  scores (:func:`lethe.demo.unlearn.attribution_diagnostics`).

Writes ``sweep.json`` and ``report.md`` / ``report.html`` into the run directory; each (overlap, seed)
is a complete ``lethe demo unlearn`` run directory below it, reused when the sweep is re-run.
"""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lethe.demo.unlearn import SR_LABELS, UnlearnDemoConfig, run_unlearn_demo
from lethe.errors import LetheError
from lethe.report import Report
from lethe.runs import atomic_write_json, demo_run
from lethe.unlearn.evaluation import SACRIFICE_METRICS

# what each (overlap, seed) contributes per arm; lower is better for all but retain_truth_ratio
COMPARED = {**{f"sr_{m}": f"SR {SR_LABELS[m]}" for m in SACRIFICE_METRICS},
            "retain_tr_loss": "retain truth-ratio loss", "retain_truth_ratio": "retain truth ratio",
            # an SR can fall by unlearning less: how much each arm forgot, and what it kept
            "forget_Q_A_ROUGE": "forget ROUGE-L after", "model_utility": "model utility"}
HIGHER_IS_BETTER = ("retain_truth_ratio", "model_utility")
PREMISE = ("retain_coherence", "retain_coherence_if_unrelated", "split_half_correlation", "cosine_mean")


def _sweep_demo() -> UnlearnDemoConfig:
    """The demo's settings at sweep size, so 3 overlaps × 3 seeds fit in well under an hour of CPU: a
    10-author world (forget10 = 1 author, 20 QA; 9 retain authors) and 150 fine-tuning steps (about 9
    epochs, as the demo's 600 steps on 40 authors); unlearning exactly as in the demo (25 steps, lr 2e-4)."""
    demo = UnlearnDemoConfig(world_authors=10)
    demo.train.max_steps = 150
    demo.train.save_steps = 150
    return demo


@dataclass
class GuardSweepConfig:
    run_dir: str = ""
    # run in this order (the extremes first, so an interrupted sweep has them); reported in increasing order
    overlaps: list[float] = field(default_factory=lambda: [0.0, 1.0, 0.5])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    demo: UnlearnDemoConfig = field(default_factory=_sweep_demo)  # every run's settings (seeds/overlap set per run)
    jobs: int = 3  # demo runs at a time, each in its own process with demo.threads torch threads
    report_only: bool = False  # no new runs: the statistics of the finished ones

    def validate(self) -> None:
        if not self.overlaps or not self.seeds:
            raise LetheError("config: overlaps and seeds must not be empty")
        if len(set(self.overlaps)) != len(self.overlaps) or len(set(self.seeds)) != len(self.seeds):
            raise LetheError(f"config: overlaps and seeds must not repeat, got {self.overlaps} / {self.seeds}")
        if any(not 0 <= o <= 1 for o in self.overlaps):
            raise LetheError(f"config: overlaps must be in [0, 1], got {self.overlaps}")
        if any(s < 0 for s in self.seeds):
            raise LetheError(f"config: seeds must be >= 0, got {self.seeds}")
        if self.jobs < 1:
            raise LetheError(f"config: jobs must be >= 1, got {self.jobs}")
        if not self.demo.diagnostics:
            raise LetheError("config: demo.diagnostics must stay true (the sweep reports GUARD's premise)")
        self.demo.validate()


def run_config(config: GuardSweepConfig, overlap: float, seed: int, run_dir: Path) -> UnlearnDemoConfig:
    """The demo run of one (overlap, seed): the seed draws the world, the fine-tuning and the unlearning."""
    demo = config.demo
    return replace(demo, run_dir=str(run_dir / f"overlap{overlap:g}-seed{seed}"), overlap=overlap,
                   world_seed=seed, train=replace(demo.train, seed=seed), unlearn=replace(demo.unlearn, seed=seed))


# --- statistics --------------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return mean, sd


def paired_comparison(base: Sequence[float | None], guard: Sequence[float | None]) -> dict[str, Any]:
    """GUARD vs its base method over seeds (pairs where either value is missing or non-finite are dropped):
    mean ± sd of each, of the difference guard − base, how many seeds GUARD is lower, the paired t-test
    p-value (None with < 2 pairs or identical differences) and the two-sided sign-test p-value (ties
    dropped; None without untied pairs)."""
    from scipy import stats  # scipy costs start-up time: imported when the statistics are computed

    if len(base) != len(guard):
        raise LetheError(f"paired_comparison: {len(base)} base values vs {len(guard)} GUARD values")
    pairs = [(float(b), float(g)) for b, g in zip(base, guard, strict=True) if _finite(b) and _finite(g)]
    b_values, g_values = [b for b, _ in pairs], [g for _, g in pairs]
    diffs = [g - b for b, g in pairs]
    lower, higher = sum(d < 0 for d in diffs), sum(d > 0 for d in diffs)
    out: dict[str, Any] = {"n": len(pairs), "guard_lower": lower, "guard_higher": higher}
    for name, values in (("base", b_values), ("guard", g_values), ("diff", diffs)):
        out[f"{name}_mean"], out[f"{name}_sd"] = _mean_sd(values)
    varied = len(diffs) >= 2 and max(diffs) - min(diffs) > 1e-12 * max(1.0, max(abs(d) for d in diffs))
    out["t_p"] = float(stats.ttest_rel(g_values, b_values).pvalue) if varied else None
    out["sign_p"] = float(stats.binomtest(lower, lower + higher, 0.5).pvalue) if lower + higher else None
    return out


def percent_change(base: float | None, guard: float | None, *, of_loss: bool) -> float | None:
    """of_loss: 100·(base − guard)/|base|, the % reduction of a loss; else 100·(guard − base)/|base|."""
    if not (_finite(base) and _finite(guard)) or base == 0:
        return None
    return 100.0 * ((base - guard) if of_loss else (guard - base)) / abs(base)


def arm_values(arm: dict[str, Any], retain_tr_full: float) -> dict[str, float | None]:
    """The compared numbers of one arm of a demo run's metrics.json."""
    values: dict[str, float | None] = {f"sr_{m}": arm["sacrifice_rate"].get(m) for m in SACRIFICE_METRICS}
    values["retain_truth_ratio"] = arm.get("retain_Truth_Ratio")
    values["retain_tr_loss"] = (retain_tr_full - arm["retain_Truth_Ratio"]
                                if _finite(arm.get("retain_Truth_Ratio")) else None)
    values["forget_truth_ratio_drop"] = arm["sacrifice_parts"]["truth_ratio"]["forget_drop"]
    values["forget_Q_A_ROUGE"] = arm.get("forget_Q_A_ROUGE")
    values["model_utility"] = arm.get("model_utility")
    return values


def run_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """One demo run's numbers: per method, the base and GUARD arms' values, and the premise diagnostics."""
    retain_tr_full = metrics["full"]["retain_Truth_Ratio"]
    methods: dict[str, dict[str, Any]] = {}
    for arm in metrics["arms"].values():
        methods.setdefault(arm["method"], {})["guard" if arm["guard"] else "base"] = arm_values(arm, retain_tr_full)
    d = metrics.get("attribution_diagnostics") or {}
    return {"methods": methods, "premise": {k: d.get(k) for k in PREMISE},
            "full": {k: metrics["full"].get(k) for k in ("model_utility", "forget_Q_A_ROUGE", "retain_Truth_Ratio")}}


def summarize(runs: dict[float, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per overlap: the premise (mean ± sd over seeds) and, per method and compared metric, the paired
    comparison of GUARD with its base, with the paper's % forms per seed and their mean ± sd."""
    out: dict[str, Any] = {}
    for overlap, by_seed in runs.items():
        seeds = sorted(by_seed)
        premise = {}
        for key in PREMISE:
            values = [float(by_seed[s]["premise"][key]) for s in seeds if _finite(by_seed[s]["premise"].get(key))]
            premise[key] = dict(zip(("mean", "sd"), _mean_sd(values), strict=True))
        methods: dict[str, Any] = {}
        for method in by_seed[seeds[0]]["methods"]:
            arms = [by_seed[s]["methods"][method] for s in seeds]
            comparisons = {key: paired_comparison([a["base"][key] for a in arms], [a["guard"][key] for a in arms])
                           for key in COMPARED}
            loss_cut = [percent_change(a["base"]["retain_tr_loss"], a["guard"]["retain_tr_loss"], of_loss=True)
                        for a in arms]
            tr_gain = [percent_change(a["base"]["retain_truth_ratio"], a["guard"]["retain_truth_ratio"],
                                      of_loss=False) for a in arms]
            methods[method] = {
                "comparisons": comparisons,
                "retain_tr_loss_reduction_pct": _pct_summary(loss_cut),
                "retain_tr_gain_pct": _pct_summary(tr_gain),
                "per_seed": {s: a for s, a in zip(seeds, arms, strict=True)},
            }
        out[f"{overlap:g}"] = {"overlap": overlap, "seeds": seeds, "premise": premise, "methods": methods}
    return out


def _pct_summary(values: list[float | None]) -> dict[str, Any]:
    kept = [v for v in values if v is not None]
    mean, sd = _mean_sd(kept)
    return {"per_seed": values, "mean": mean, "sd": sd, "max": max(kept) if kept else None}


def guard_better(comparison: dict[str, Any], key: str) -> bool | None:
    """Did GUARD do better on average (lower, or higher for HIGHER_IS_BETTER)?"""
    diff = comparison["diff_mean"]
    if diff is None:
        return None
    return diff > 0 if key in HIGHER_IS_BETTER else diff < 0


# --- the sweep ---------------------------------------------------------------------------------------


COST_FILE = "sweep_cost.json"  # in each demo run directory: the wall and CPU seconds the sweep measured


def _run_one(demo: UnlearnDemoConfig) -> dict[str, Any]:
    """One (overlap, seed): the demo run (reused when finished), its numbers, wall and CPU seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    _, metrics = run_unlearn_demo(demo, quiet=True)
    cost = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    atomic_write_json(Path(demo.run_dir) / COST_FILE, cost)
    return {"summary": run_summary(metrics), **cost}


def _finished(demo: UnlearnDemoConfig) -> dict[str, Any] | None:
    """A finished demo run's numbers and cost, read from its folder (None if it has not finished)."""
    folder = Path(demo.run_dir)
    if not (folder / "metrics.json").is_file():
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    cost = folder / COST_FILE  # absent when the run was made by `lethe demo unlearn` itself
    known = json.loads(cost.read_text()) if cost.is_file() else {"wall_s": metrics.get("wall_s"), "cpu_s": None}
    return {"summary": run_summary(metrics), **known}


def run_guard_sweep(config: GuardSweepConfig, *, quiet: bool = False) -> tuple[Path, dict[str, Any]]:
    """Every (overlap, seed) demo run, ``jobs`` at a time (worker processes, one torch thread each),
    overlap by overlap in the order given; then the paired statistics. ``report_only``: no new runs, the
    statistics of the finished ones (an interrupted sweep's results so far)."""
    config.validate()
    started, cpu0 = time.perf_counter(), _cpu_s()
    with demo_run("demo-guard-sweep", config.run_dir or None) as run_dir:
        tasks = [(overlap, seed) for overlap in config.overlaps for seed in config.seeds]
        demos = {task: run_config(config, *task, run_dir) for task in tasks}
        results: dict[tuple[float, int], dict[str, Any]] = {}
        if config.report_only:
            results = {task: found for task in tasks if (found := _finished(demos[task])) is not None}
            tasks = []

        def done(task: tuple[float, int], result: dict[str, Any]) -> None:
            results[task] = result
            if not quiet:
                print(f"[overlap {task[0]:g}, seed {task[1]}] done in {result['wall_s']:.0f} s "
                      f"({result['cpu_s'] or 0:.0f} s CPU) → {demos[task].run_dir}", flush=True)
            partial = {f"{o:g}/{s}": r["summary"] for (o, s), r in results.items()}
            atomic_write_json(run_dir / "sweep_partial.json", partial)

        if config.jobs > 1 and len(tasks) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch state
            with ProcessPoolExecutor(max_workers=config.jobs, mp_context=context) as pool:
                futures = {task: pool.submit(_run_one, demos[task]) for task in tasks}
                for task, future in futures.items():
                    done(task, future.result())
        else:
            for task in tasks:
                done(task, _run_one(demos[task]))
        if not results:
            raise LetheError(f"{run_dir}: no finished (overlap, seed) run to report")
        runs: dict[float, dict[int, dict[str, Any]]] = {}
        for (overlap, seed) in sorted(results):
            runs.setdefault(overlap, {})[seed] = results[(overlap, seed)]["summary"]
        result = {"overlaps": sorted(runs), "seeds": config.seeds, "world_authors": config.demo.world_authors,
                  "forget_split": config.demo.forget_split, "methods": config.demo.methods,
                  "summary": summarize(runs),
                  "runs": [{"overlap": o, "seed": s, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"]}
                           for (o, s), r in sorted(results.items())],
                  "runs_cpu_s": sum(r["cpu_s"] or 0.0 for r in results.values()),
                  "wall_s": time.perf_counter() - started, "cpu_s": _cpu_s() - cpu0}
        atomic_write_json(run_dir / "sweep.json", result)
        page = sweep_report(config, result)
        page.write(run_dir)
        if not quiet:
            print(page.to_markdown())
            print(f"run directory: {run_dir}  (sweep.json, report.md, report.html)")
        return run_dir, result


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- report ------------------------------------------------------------------------------------------


def _pm(mean: float | None, sd: float | None, digits: int = 3) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def _p(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def table_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (overlap, method, metric): base and GUARD mean ± sd, the paired difference and p-values."""
    rows = []
    for block in summary.values():
        for method, m in block["methods"].items():
            for key, label in COMPARED.items():
                c = m["comparisons"][key]
                better = guard_better(c, key)
                rows.append({"overlap": f"{block['overlap']:g}", "method": method.upper(), "metric": label,
                             "base": _pm(c["base_mean"], c["base_sd"]), "+GUARD": _pm(c["guard_mean"], c["guard_sd"]),
                             "GUARD − base": _pm(c["diff_mean"], c["diff_sd"]),
                             "GUARD lower (seeds)": f"{c['guard_lower']}/{c['n']}",
                             "paired t p": _p(c["t_p"]), "sign test p": _p(c["sign_p"]),
                             "GUARD better": "—" if better is None else ("yes" if better else "no")})
    return rows


def paper_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for block in summary.values():
        for method, m in block["methods"].items():
            cut, gain = m["retain_tr_loss_reduction_pct"], m["retain_tr_gain_pct"]
            rows.append({"overlap": f"{block['overlap']:g}", "method": method.upper(),
                         "retain TR loss reduction %": _pm(cut["mean"], cut["sd"], 1),
                         "best seed %": "—" if cut["max"] is None else f"{cut['max']:.1f}",
                         "retain TR vs base %": _pm(gain["mean"], gain["sd"], 1),
                         "best seed TR %": "—" if gain["max"] is None else f"{gain['max']:.1f}"})
    return rows


def premise_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for block in summary.values():
        p = block["premise"]
        rows.append({"overlap": f"{block['overlap']:g}",
                     "‖ḡ_R‖ / mean ‖∇ℓ_r‖": _pm(p["retain_coherence"]["mean"], p["retain_coherence"]["sd"]),
                     "1/√N_R (unrelated)": _pm(p["retain_coherence_if_unrelated"]["mean"], None),
                     "split-half r": _pm(p["split_half_correlation"]["mean"], p["split_half_correlation"]["sd"], 2),
                     "cos(∇ℓ_i, ḡ_R)": _pm(p["cosine_mean"]["mean"], p["cosine_mean"]["sd"])})
    return rows


def sweep_report(config: GuardSweepConfig, result: dict[str, Any]) -> Report:
    d = config.demo
    page = Report("GUARD over a knowledge-overlap sweep",
                  subtitle=f"{', '.join(m.upper() for m in d.methods)} with and without GUARD, {d.forget_split} of a "
                           f"{d.world_authors}-author world, overlaps {', '.join(f'{o:g}' for o in config.overlaps)}, "
                           f"seeds {', '.join(map(str, config.seeds))}")
    page.add_keyvalues({"per run": f"lethe demo unlearn, {d.train.max_steps} fine-tuning steps, "
                                   f"{d.unlearn.max_steps} unlearning steps at lr {d.unlearn.lr:g}, "
                                   f"GUARD τ={d.guard.tau:g} ({d.guard.normalize})",
                        "runs": f"{len(result['runs'])} (overlap, seed) runs, {result['runs_cpu_s']:.0f} s CPU in "
                                f"all (their own processes' CPU time)",
                        "wall_s": result["wall_s"]})
    summary = result["summary"]
    sections = (
        ("GUARD's premise at each overlap", premise_rows(summary),
         "At θ₀ (the full model): ‖ḡ_R‖ relative to the mean per-sample retain gradient norm (1/√N_R if the "
         "retain gradients were unrelated), the correlation of the scores from two halves of the retain set, and "
         "the mean cosine of forget gradients with ḡ_R; mean ± sd over seeds."),
        ("GUARD vs its base method, paired over seeds", table_rows(summary),
         "mean ± sd over seeds (sd with ddof 1). SR and retain truth-ratio loss: lower is better; retain truth "
         "ratio and model utility: higher is better; forget ROUGE-L: lower = more forgotten. p: paired t-test "
         "and two-sided sign test over seeds (with 3 seeds the sign test cannot go below 0.25)."),
        ("The paper's form", paper_rows(summary),
         "Reduction of the retain truth-ratio loss TR_retain(full) − TR_retain(arm) by GUARD, "
         "100·(L_base − L_guard)/|L_base| (paper: up to 194.92% at forget10), and the retain truth ratio of GUARD "
         "relative to its base (paper: up to +32.08% over GA); mean ± sd and the best seed."),
    )
    for heading, rows, caption in sections:
        page.add_heading(heading)
        page.add_table(rows, caption=caption)
    return page
