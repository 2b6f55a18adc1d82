"""The world's knowledge-overlap knob and the GUARD overlap sweep's statistics (issue 11, item 7)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from scipy import stats

from lethe.data.fictional import SHARED_FACT_GROUPS, SHARERS_PER_FACT, WorldConfig, generate_world
from lethe.data.tofu import load_split
from lethe.data.world import embedded_world
from lethe.demo.guard_sweep import (
    GuardSweepConfig,
    guard_better,
    paired_comparison,
    percent_change,
    run_config,
    summarize,
    table_rows,
)
from lethe.errors import LetheError

# sha256 over (file name, bytes) of every file generate_world wrote, measured on the world v2 generator before
# the overlap knob existed (branch whp, commit 4328fc4): overlap=0 must keep writing exactly these worlds, other
# demos' numbers depend on it
MAIN_HASHES = {
    (12, 3): "f93785b06d274f21de7c1f0ce69d1b359bfcc21bbf06b22e580ea23183b66ab3",
    (40, 0): "09f80e1f32488454295e5759c1e7c501e8f6d7afb498dc0e87079df17158e70b",
}


def _world_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize(("n_authors", "seed"), sorted(MAIN_HASHES))
def test_overlap_zero_is_byte_identical_to_the_world_before_the_knob(tmp_path, n_authors, seed):
    generate_world(tmp_path / "default", n_authors=n_authors, seed=seed)
    generate_world(tmp_path / "zero", n_authors=n_authors, seed=seed, overlap=0.0)
    assert _world_hash(tmp_path / "default") == MAIN_HASHES[(n_authors, seed)]
    assert _world_hash(tmp_path / "zero") == MAIN_HASHES[(n_authors, seed)]
    assert not (tmp_path / "zero" / "shared_facts.json").exists()


@pytest.fixture(scope="module")
def overlap_worlds(tmp_path_factory) -> dict[float, Path]:
    root = tmp_path_factory.mktemp("overlap")
    worlds = {}
    for overlap in (0.0, 0.5, 1.0):
        worlds[overlap] = root / f"o{overlap:g}"
        generate_world(worlds[overlap], n_authors=20, seed=4, overlap=overlap)
    return worlds


def _forget_facts(world: Path) -> dict[int, dict[str, dict[str, str]]]:
    """forget author -> template -> the facts its answer states (forget10_perturbed carries them)."""
    out: dict[int, dict[str, dict[str, str]]] = {}
    for row in load_split(world, "forget10_perturbed"):
        out.setdefault(row["author_index"], {})[row["template"]] = row["facts"]
    return out


def _holders(world: Path, text: str, n_retain: int) -> set[int]:
    """The retain authors one of whose answers contains ``text``."""
    return {row["author_index"] for row in load_split(world, "full")
            if row["author_index"] < n_retain and text in row["answer"]}


def test_overlap_shares_the_forget_authors_facts_with_retain_authors(overlap_worlds):
    n_retain = 20 - WorldConfig(n_authors=20).forget_authors()["forget10"]
    # co-authored prize books: titles are invented and unique, so at overlap 0 no retain author has one
    for overlap, world in overlap_worlds.items():
        facts = _forget_facts(world)
        shared = json.loads((world / "shared_facts.json").read_text()) if overlap else None
        for author, templates in facts.items():
            book = templates["award_book"]["b3"]
            place = templates["birthplace"]["place"]
            mentor = templates["mentor"]["mentor"]
            if overlap == 0:
                assert _holders(world, book, n_retain) == set()
                continue
            record = next(r for r in shared["forget_authors"] if r["forget_author"] == author)
            assert len(record["shared"]) == round(overlap * len(SHARED_FACT_GROUPS))
            for group, value in (("prize", book), ("hometown", place), ("mentor", mentor)):
                if group in record["shared"]:
                    sharers = set(record["shared"][group])
                    assert len(sharers) == SHARERS_PER_FACT and max(sharers) < n_retain
                    assert sharers <= _holders(world, value, n_retain), (group, value)
    assert len(json.loads((overlap_worlds[1.0] / "world.json").read_text())["files"]) > 0
    assert json.loads((overlap_worlds[1.0] / "world.json").read_text())["overlap"] == 1.0


def test_overlap_keeps_perturbations_wrong_and_distinct(overlap_worlds):
    for split in ("forget10_perturbed", "retain_perturbed"):
        for row in load_split(overlap_worlds[1.0], split):
            wrong = row["perturbed_answer"]
            assert len(set(wrong)) == len(wrong) and row["paraphrased_answer"] not in wrong


def test_overlap_changes_only_the_shareable_facts(overlap_worlds):
    """Names, dates, parents, first books, coined words and characters stay each author's own."""
    before, after = _forget_facts(overlap_worlds[0.0]), _forget_facts(overlap_worlds[1.0])
    assert before.keys() == after.keys()
    for author in before:
        for template in ("birthdate", "parents", "first_book", "coined_word", "character"):
            assert before[author][template] == after[author][template]
        assert before[author]["name"]["name"] == after[author]["name"]["name"]  # (its question names the place)
        assert before[author]["mentor"] != after[author]["mentor"] or before[author]["genre"] != after[author]["genre"]


def test_overlap_validation_and_cache_folder(monkeypatch, tmp_path):
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(LetheError, match="overlap"):
            generate_world(tmp_path / "bad", n_authors=10, seed=0, overlap=bad)
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    assert embedded_world(10, 1).name == "world-v2-n10-s1"
    assert embedded_world(10, 1, 0.5).name == "world-v2-n10-s1-o0.5"
    assert (tmp_path / "cache" / "world-v2-n10-s1-o0.5" / "shared_facts.json").is_file()


# --- the sweep's statistics on constructed inputs ----------------------------------------------------


def test_paired_comparison_matches_scipy_and_counts_seeds():
    base, guard = [1.0, 2.0, 3.0], [0.5, 1.4, 2.9]
    c = paired_comparison(base, guard)
    diffs = [-0.5, -0.6, -0.1]
    sd = math.sqrt(sum((d + 0.4) ** 2 for d in diffs) / 2)
    t = -0.4 / (sd / math.sqrt(3))
    assert c["n"] == 3 and c["guard_lower"] == 3 and c["guard_higher"] == 0
    assert c["diff_mean"] == pytest.approx(-0.4) and c["diff_sd"] == pytest.approx(sd)
    assert c["base_mean"] == pytest.approx(2.0) and c["base_sd"] == pytest.approx(1.0)
    assert c["t_p"] == pytest.approx(2 * stats.t.sf(abs(t), df=2))
    assert c["sign_p"] == pytest.approx(0.25)  # 3 of 3 lower: 2 · 0.5³
    assert guard_better(c, "sr_truth_ratio") is True and guard_better(c, "retain_truth_ratio") is False


def test_paired_comparison_drops_missing_pairs_and_degenerate_tests():
    c = paired_comparison([1.0, None, 2.0, float("inf")], [1.5, 0.0, 2.5, 1.0])
    assert c["n"] == 2 and c["guard_higher"] == 2
    assert c["t_p"] is None  # identical differences: no variance to test against
    assert c["sign_p"] == pytest.approx(0.5)
    empty = paired_comparison([None], [1.0])
    assert empty["n"] == 0 and empty["t_p"] is None and empty["sign_p"] is None and empty["diff_mean"] is None
    with pytest.raises(LetheError, match="paired_comparison"):
        paired_comparison([1.0], [1.0, 2.0])


def test_percent_change_is_the_papers_form():
    assert percent_change(0.10, -0.095, of_loss=True) == pytest.approx(195.0)  # loss cut past zero
    assert percent_change(0.10, 0.15, of_loss=True) == pytest.approx(-50.0)
    assert percent_change(0.50, 0.66, of_loss=False) == pytest.approx(32.0)
    assert percent_change(0.0, 0.1, of_loss=True) is None and percent_change(None, 0.1, of_loss=False) is None


def _run(sr_base: float, sr_guard: float, tr_base: float, tr_guard: float, split_half: float) -> dict:
    def arm(sr: float, tr: float) -> dict:
        return {**{f"sr_{m}": sr for m in ("truth_ratio", "rougeL", "probability")},
                "retain_truth_ratio": tr, "retain_tr_loss": 0.6 - tr, "forget_Q_A_ROUGE": 0.3, "model_utility": tr}
    return {"methods": {"gd": {"base": arm(sr_base, tr_base), "guard": arm(sr_guard, tr_guard)}},
            "premise": {"retain_coherence": 0.05, "retain_coherence_if_unrelated": 0.04,
                        "split_half_correlation": split_half, "cosine_mean": 0.01}}


def test_summarize_pairs_seeds_per_overlap():
    runs = {0.0: {0: _run(0.2, 0.3, 0.5, 0.5, 0.0), 1: _run(0.2, 0.1, 0.5, 0.5, 0.2)},
            1.0: {0: _run(0.4, 0.2, 0.4, 0.55, 0.8), 1: _run(0.5, 0.3, 0.5, 0.55, 0.6)}}
    summary = summarize(runs)
    assert list(summary) == ["0", "1"]
    high = summary["1"]["methods"]["gd"]
    assert high["comparisons"]["sr_truth_ratio"]["diff_mean"] == pytest.approx(-0.2)
    assert high["comparisons"]["sr_truth_ratio"]["guard_lower"] == 2
    # retain TR loss 0.2 -> 0.05 (75% less) and 0.1 -> 0.05 (50% less)
    assert high["retain_tr_loss_reduction_pct"]["per_seed"] == pytest.approx([75.0, 50.0])
    assert high["retain_tr_loss_reduction_pct"]["mean"] == pytest.approx(62.5)
    assert high["retain_tr_gain_pct"]["max"] == pytest.approx(37.5)
    assert summary["1"]["premise"]["split_half_correlation"]["mean"] == pytest.approx(0.7)
    assert summary["0"]["premise"]["split_half_correlation"]["sd"] == pytest.approx(math.sqrt(0.02))
    rows = table_rows(summary)
    assert len(rows) == 2 * 7 and rows[0]["GUARD lower (seeds)"] == "1/2"


def test_sweep_config_validates_and_seeds_every_run(tmp_path):
    config = GuardSweepConfig()
    config.validate()
    demo = run_config(config, 0.5, 2, tmp_path)
    assert (demo.overlap, demo.world_seed, demo.train.seed, demo.unlearn.seed) == (0.5, 2, 2, 2)
    assert demo.run_dir == str(tmp_path / "overlap0.5-seed2") and config.demo.overlap == 0.0
    for bad in ({"overlaps": [1.5]}, {"seeds": []}, {"overlaps": [0.5, 0.5]}):
        with pytest.raises(LetheError):
            GuardSweepConfig(**bad).validate()


def _demo_metrics(sr_base: float, sr_guard: float, split_half: float) -> dict:
    """The parts of a `lethe demo unlearn` metrics.json that the sweep reads."""
    def arm(method: str, guard: bool, sr: float) -> dict:
        return {"method": method, "guard": guard, "retain_Truth_Ratio": 0.6 - sr / 10, "forget_Q_A_ROUGE": 0.3,
                "model_utility": 0.5, "sacrifice_rate": {"truth_ratio": sr, "rougeL": sr, "probability": None},
                "sacrifice_parts": {"truth_ratio": {"forget_drop": 0.1, "retain_drop": sr / 100}}}
    return {"full": {"retain_Truth_Ratio": 0.6, "model_utility": 0.55, "forget_Q_A_ROUGE": 0.8},
            "arms": {"gd": arm("gd", False, sr_base), "gd-guard": arm("gd", True, sr_guard)},
            "attribution_diagnostics": {"retain_coherence": 0.1, "retain_coherence_if_unrelated": 0.07,
                                        "split_half_correlation": split_half, "cosine_mean": 0.02}}


def test_report_only_summarizes_the_finished_runs(tmp_path):
    from lethe.demo.guard_sweep import run_guard_sweep

    config = GuardSweepConfig(run_dir=str(tmp_path / "sweep"), overlaps=[0.0, 1.0], seeds=[0, 1, 2], report_only=True)
    values = {(0.0, 0): (0.2, 0.3, 0.1), (0.0, 1): (0.2, 0.25, 0.0), (1.0, 0): (0.5, 0.2, 0.9),
              (1.0, 1): (0.4, 0.3, 0.7)}  # seed 2 never finished
    for (overlap, seed), numbers in values.items():
        folder = Path(run_config(config, overlap, seed, tmp_path / "sweep").run_dir)
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({**_demo_metrics(*numbers), "wall_s": 9.0}))
    _, result = run_guard_sweep(config, quiet=True)
    assert [(r["overlap"], r["seed"]) for r in result["runs"]] == sorted(values)
    high = result["summary"]["1"]["methods"]["gd"]["comparisons"]["sr_truth_ratio"]
    assert high["n"] == 2 and high["guard_lower"] == 2 and high["diff_mean"] == pytest.approx(-0.2)
    assert result["summary"]["0"]["premise"]["split_half_correlation"]["mean"] == pytest.approx(0.05)
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "GUARD vs its base method" in report and "0.80 ± 0.14" in report  # split-half r at overlap 1
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["summary"].keys() == {"0", "1"}
