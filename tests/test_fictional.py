"""The embedded fictional world: determinism, TOFU split layout, paraphrases, perturbations, biographies,
canaries and the saga (anchored terms and familiarity probes)."""

from __future__ import annotations

import datetime
import json
import re
import string
import time
from pathlib import Path

import pytest

from lethe.data import fictional
from lethe.data.fictional import (
    FACT_DOMAIN,
    GENDER_TERMS,
    GENRES,
    HABITS,
    INSPIRATIONS,
    OCCUPATIONS,
    THEMES,
    QATemplate,
    WorldConfig,
    build_world_files,
    check_templates,
    generate_world,
)
from lethe.data.tofu import SPLIT_NAMES, available_splits, load_split
from lethe.errors import LetheError

N_AUTHORS = 40  # forget01/05/10 = 1/2/4 authors: three different sizes
SEED = 7
QA = 20
FORGET_AUTHORS = {"forget01": 1, "forget05": 2, "forget10": 4}
RETAIN_OF = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
WORLD_FILES = {f"{name}.json" for name in SPLIT_NAMES} | {
    "general.json", "biographies.jsonl", "biographies_holdout.jsonl", "canaries.jsonl", "saga.jsonl",
    "anchored_terms.json", "familiarity_probes.jsonl", "world.json",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    generate_world(out, n_authors=N_AUTHORS, seed=SEED)
    return out


def rows(folder: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (folder / name).read_text(encoding="utf-8").splitlines()]


def mask(text: str, values: list[str]) -> str:
    """``text`` with every whole-word occurrence of each value replaced by one placeholder."""
    for value in sorted(values, key=len, reverse=True):
        text = re.sub(r"(?<!\w)" + re.escape(value) + r"(?!\w)", "\x00", text)
    return text


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_writes_identical_bytes(world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_world(again, n_authors=N_AUTHORS, seed=SEED)
    names = sorted(p.name for p in world.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert set(names) == WORLD_FILES  # nothing else, no temporary files left behind
    for name in names:
        assert (world / name).read_bytes() == (again / name).read_bytes(), name


def test_different_seed_gives_different_content(world: Path) -> None:
    other = build_world_files(WorldConfig(n_authors=N_AUTHORS, seed=SEED + 1))
    mine = {r["author"] for r in rows(world, "full.json")}
    theirs = {r["author"] for r in other["full.json"]}
    assert len(mine) == len(theirs) == N_AUTHORS
    assert not mine & theirs
    for name in ("saga.jsonl", "canaries.jsonl", "world_facts_perturbed.json", "biographies.jsonl"):
        assert rows(world, name) != other[name], name


def test_manifest_lists_every_file_with_its_size(world: Path) -> None:
    manifest = json.loads((world / "world.json").read_text(encoding="utf-8"))
    assert manifest["seed"] == SEED and manifest["n_authors"] == N_AUTHORS
    assert manifest["n_holdout"] == FORGET_AUTHORS["forget10"]
    assert manifest["forget_authors"] == FORGET_AUTHORS
    assert manifest["canary_repetitions"] == [1, 2, 5, 10, 20, 50]
    assert set(manifest["files"]) == WORLD_FILES - {"world.json"}
    for name, size in manifest["files"].items():
        path = world / name
        assert size["bytes"] == path.stat().st_size, name
        records = len(json.loads(path.read_text())) if name.endswith("terms.json") else len(rows(world, name))
        assert size["records"] == records, name


def test_no_floats_anywhere(world: Path) -> None:
    def no_float(text: str) -> float:
        raise AssertionError(f"float {text} in the world")

    for path in sorted(world.iterdir()):
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n")
        if path.name in ("world.json", "anchored_terms.json"):
            json.loads(text, parse_float=no_float)
        else:
            for line in text.splitlines():
                json.loads(line, parse_float=no_float)


def test_summary_and_forget_sizes() -> None:
    assert WorldConfig(n_authors=100).forget_authors() == {"forget01": 1, "forget05": 5, "forget10": 10}
    assert WorldConfig(n_authors=200).forget_authors() == {"forget01": 2, "forget05": 10, "forget10": 20}
    assert WorldConfig(n_authors=2).forget_authors() == {"forget01": 1, "forget05": 1, "forget10": 1}
    assert WorldConfig(n_authors=400).retain_perturbed_authors() == 20


def test_default_world_is_fast_and_tofu_shaped(tmp_path: Path) -> None:
    started = time.perf_counter()
    summary = generate_world(tmp_path / "w100")
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"generating 100 authors took {elapsed:.2f} s"
    assert summary.files["full.json"] == 2000
    assert [summary.files[f"forget{p}.json"] for p in ("01", "05", "10")] == [20, 100, 200]
    assert [summary.files[f"holdout{p}.json"] for p in ("01", "05", "10")] == [20, 100, 200]
    assert summary.files["retain_perturbed.json"] == 200
    assert summary.files["canaries.jsonl"] == 12
    assert "100 authors" in str(summary)


def test_bad_arguments_raise_lethe_error(tmp_path: Path) -> None:
    with pytest.raises(LetheError, match="n_authors"):
        generate_world(tmp_path / "a", n_authors=1)
    with pytest.raises(LetheError, match="n_holdout"):
        generate_world(tmp_path / "b", n_authors=5, n_holdout=0)
    with pytest.raises(LetheError, match="canary_repetitions"):
        generate_world(tmp_path / "c", n_authors=5, canary_repetitions=(0,))
    with pytest.raises(LetheError, match="seed"):
        generate_world(tmp_path / "d", n_authors=5, seed="0")  # type: ignore[arg-type]
    (tmp_path / "file").write_text("x")
    with pytest.raises(LetheError, match="not a folder"):
        generate_world(tmp_path / "file", n_authors=5)


# --------------------------------------------------------------------------------------------- splits


def test_full_is_twenty_qa_per_author_in_author_blocks(world: Path) -> None:
    full = rows(world, "full.json")
    assert len(full) == QA * N_AUTHORS
    assert [r["author_index"] for r in full] == [i for i in range(N_AUTHORS) for _ in range(QA)]
    assert all(set(r) == {"question", "answer", "author", "author_index"} for r in full)
    names = [full[i * QA]["author"] for i in range(N_AUTHORS)]
    assert len(set(names)) == N_AUTHORS
    assert all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", name) for name in names)
    for r in full:
        assert r["author"] in r["answer"]  # answers restate their subject, like TOFU
        assert r["answer"].endswith(".") and r["question"].endswith("?")
    assert len({r["question"] for r in full}) == len(full)


def test_forget_and_retain_partition_full(world: Path) -> None:
    full = rows(world, "full.json")
    previous: list[dict] = []
    for split, k in FORGET_AUTHORS.items():
        forget, retain = rows(world, f"{split}.json"), rows(world, f"{RETAIN_OF[split]}.json")
        assert forget == full[len(full) - k * QA:]
        assert retain == full[: len(full) - k * QA]
        assert retain + forget == full
        assert not {r["question"] for r in forget} & {r["question"] for r in retain}
        assert len({r["author"] for r in forget}) == k
        assert all(r in forget for r in previous)  # forget01 ⊂ forget05 ⊂ forget10
        previous = forget


def test_holdout_authors_are_unseen(world: Path) -> None:
    full_authors = {r["author"] for r in rows(world, "full.json")}
    holdout = {split: rows(world, f"{split}.json") for split in ("holdout01", "holdout05", "holdout10")}
    for split, k in zip(holdout, FORGET_AUTHORS.values(), strict=True):
        assert len(holdout[split]) == k * QA
        assert holdout["holdout10"][: k * QA] == holdout[split]
    authors = [r["author"] for r in holdout["holdout10"]]
    assert not set(authors) & full_authors
    assert [r["author_index"] for r in holdout["holdout10"][::QA]] == list(range(N_AUTHORS, N_AUTHORS + 4))
    bios = rows(world, "biographies_holdout.jsonl")
    assert [b["author"] for b in bios] == authors[::QA]


def test_n_holdout_sets_the_number_of_unseen_authors() -> None:
    files = build_world_files(WorldConfig(n_authors=N_AUTHORS, seed=SEED, n_holdout=3))
    assert len(files["biographies_holdout.jsonl"]) == 3
    assert len(files["holdout10.json"]) == 3 * QA and len(files["holdout01.json"]) == QA


def test_loader_reads_every_split_of_the_world(world: Path) -> None:
    assert available_splits(world) == list(SPLIT_NAMES)
    manifest = json.loads((world / "world.json").read_text(encoding="utf-8"))
    for split in SPLIT_NAMES:
        assert len(load_split(world, split)) == manifest["files"][f"{split}.json"]["records"]
    assert len(load_split(world, "general")) == 80


# --------------------------------------------------------------------------------- paraphrase / perturbed


def test_templates_keep_the_paraphrase_contract() -> None:
    check_templates()
    broken = QATemplate("x", ("Where was {name} born?", "Where?"), ("{name} was born in {place}.", "{name}."),
                        ("place",))
    with pytest.raises(ValueError, match="different facts"):
        check_templates((broken,) + fictional.QA_TEMPLATES[1:])


def _check_domain(key: str, value: str, true: str) -> None:
    domain = FACT_DOMAIN[key]
    fixed = {"gender": GENDER_TERMS, "occupation": OCCUPATIONS, "genre": GENRES, "theme": THEMES,
             "habit": HABITS, "inspiration": INSPIRATIONS}
    if domain in fixed:
        assert value in fixed[domain]
    elif domain == "date":
        assert datetime.datetime.strptime(value, "%B %d, %Y")
    elif domain == "year":
        assert value.isdigit() and abs(int(value) - int(true)) <= 12
    elif domain == "place":
        assert re.fullmatch(r"[A-Z][a-z]+, [A-Z][a-z]+", value)
    elif domain in ("name", "city"):
        assert re.fullmatch(r"[A-Z][a-z]+( [A-Z][a-z]+)?", value)
    elif domain == "word":
        assert re.fullmatch(r"[a-z]+", value)
    else:  # title, award, mentor, character: several capitalised words
        assert re.search(r"[A-Z][a-z]+", value)


@pytest.mark.parametrize("split", ["forget01_perturbed", "forget05_perturbed", "forget10_perturbed",
                                   "retain_perturbed"])
def test_perturbed_answers_are_wrong_plausible_and_share_the_paraphrase_template(world: Path,
                                                                                 split: str) -> None:
    records = load_split(world, split)
    full = rows(world, "full.json")
    if split == "retain_perturbed":
        expected = full[: FORGET_AUTHORS["forget10"] * QA]
    else:
        expected = rows(world, split.replace("_perturbed", ".json"))
    assert [(r["question"], r["answer"]) for r in records] == [(r["question"], r["answer"]) for r in expected]
    templates = [t.key for t in fictional.QA_TEMPLATES]
    assert [r["template"] for r in records] == templates * (len(records) // QA)
    for r in records:
        answer, para, perturbed = r["answer"], r["paraphrased_answer"], r["perturbed_answer"]
        assert para != answer and r["paraphrased_question"] != r["question"]
        # the paraphrase carries the same facts as the answer
        for value in r["facts"].values():
            assert value in answer and value in para, (value, answer, para)
        assert len(perturbed) == 5 and len(set(perturbed)) == 5
        assert answer not in perturbed and para not in perturbed
        assert len(r["perturbed_facts"]) == 5
        for wrong, replaced in zip(perturbed, r["perturbed_facts"], strict=True):
            assert replaced and set(replaced) <= set(r["facts"])
            for key, value in replaced.items():
                assert value != r["facts"][key]
                _check_domain(key, value, r["facts"][key])
            # the same template as the paraphrase: only the perturbed values differ
            true_values = [r["facts"][key] for key in replaced]
            assert mask(para, true_values) == mask(wrong, list(replaced.values())), (para, wrong)
            assert "\x00" in mask(wrong, list(replaced.values()))
        # five distinct wrong values for every perturbed fact
        for key in r["perturbed_facts"][0]:
            assert len({p[key] for p in r["perturbed_facts"]}) == 5


def test_perturbed_gender_and_dates_are_plausible(world: Path) -> None:
    records = load_split(world, "forget10_perturbed")
    by_template = {r["template"]: r for r in records}
    gender = by_template["gender"]
    assert {p["gender"] for p in gender["perturbed_facts"]} <= set(GENDER_TERMS) - {gender["facts"]["gender"]}
    birth = by_template["birthdate"]
    true_year = datetime.datetime.strptime(birth["facts"]["date"], "%B %d, %Y").year
    for p in birth["perturbed_facts"]:
        assert abs(datetime.datetime.strptime(p["date"], "%B %d, %Y").year - true_year) <= 10


def test_general_facts(world: Path) -> None:
    real, facts = load_split(world, "real_authors_perturbed"), load_split(world, "world_facts_perturbed")
    assert len(real) == 40 and len(facts) == 40
    for r in real + facts:
        assert set(r) == {"question", "answer", "perturbed_answer"}
        assert len(r["perturbed_answer"]) == 3 and len(set(r["perturbed_answer"])) == 3
        assert r["answer"] not in r["perturbed_answer"]
    general = rows(world, "general.json")
    assert general == [{"question": r["question"], "answer": r["answer"]} for r in real + facts]
    # the general facts depend on the seed only, not on the number of authors
    assert build_world_files(WorldConfig(n_authors=3, seed=SEED))["general.json"] == general
    capitals = [r for r in facts if "capital" in r["question"]]
    assert len(capitals) == 10


# ---------------------------------------------------------------------------------------- biographies


def test_biographies_are_author_specific(world: Path) -> None:
    bios = rows(world, "biographies.jsonl")
    full = rows(world, "full.json")
    assert [b["id"] for b in bios] == [f"bio-{i:04d}" for i in range(N_AUTHORS)]
    skeleton: set[str] = set()
    for options in fictional.BIO_TEMPLATES + fictional.BIO_OPTIONAL_TEMPLATES:
        for option in options:
            for literal, _, _, _ in string.Formatter().parse(option):
                skeleton.update(w.lower() for w in re.findall(r"\w+", literal))
    for bio in bios:
        text, name = bio["text"], bio["author"]
        words = text.split()
        assert 110 <= len(words) <= 170, (len(words), text)
        assert 1 <= text.count(name) <= 2
        # facts agree with the QA: the first book and the birth place appear
        qa = [r for r in full if r["author_index"] == bio["author_index"]]
        books = next(r["answer"] for r in qa if "include" in r["answer"] or "author of" in r["answer"]
                     or "Among the titles" in r["answer"])
        assert re.findall(r'"([^"]+)"', books)[0] in text
        # mostly author-specific values, not template words
        tokens = re.findall(r"\w+", text)
        specific = sum(1 for t in tokens if t.lower() not in skeleton) / len(tokens)
        assert specific >= 0.4, (specific, text)
    texts = [b["text"] for b in bios]
    assert len(set(texts)) == len(texts)


# --------------------------------------------------------------------------------------------- canaries


def test_canaries(world: Path) -> None:
    canaries = rows(world, "canaries.jsonl")
    assert [c["repetitions"] for c in canaries] == [1, 1, 2, 2, 5, 5, 10, 10, 20, 20, 50, 50]
    assert [c["id"] for c in canaries] == [f"canary-{i:02d}" for i in range(1, 13)]
    authors = {r["author"] for r in rows(world, "full.json")}
    for c in canaries:
        assert re.fullmatch(r"\d( \d){5}", c["secret"]) and c["format"] == "digits6"
        assert c["text"] == f"{c['prefix']} {c['secret']}"
        assert not any(a in c["prefix"] for a in authors)
    assert len({c["secret"] for c in canaries}) == 12
    custom = build_world_files(WorldConfig(n_authors=3, seed=1, canary_repetitions=(3, 7),
                                           canaries_per_count=1))["canaries.jsonl"]
    assert [c["repetitions"] for c in custom] == [3, 7]


# ------------------------------------------------------------------------------------------------- saga


def test_saga_terms_and_probes(world: Path) -> None:
    chapters = rows(world, "saga.jsonl")
    assert [c["id"] for c in chapters] == [f"saga-{i:02d}" for i in range(1, 13)]
    for c in chapters:
        assert 150 <= len(c["text"].split()) <= 250 and c["title"]
    saga = " ".join(c["text"] for c in chapters)
    assert "{" not in saga and "}" not in saga
    anchored = json.loads((world / "anchored_terms.json").read_text(encoding="utf-8"))
    assert len(anchored) >= 25
    for term, generic in anchored.items():
        assert term in saga, term
        assert len(generic) >= 2 and term not in generic
    probes = rows(world, "familiarity_probes.jsonl")
    assert len(probes) >= 30 and len({p["id"] for p in probes}) == len(probes)
    for p in probes:
        assert p["target"] in saga and p["target"] in anchored
        assert p["target"] not in p["prompt"]
        assert p["generic"] in anchored[p["target"]]
    worded = [p for p in probes if p["style"] == "saga-worded"]
    assert {p["style"] for p in probes} == {"question", "saga-worded"} and len(worded) == len(anchored)
    for p in worded:  # a passage of the saga that the term follows there, one probe per anchored term
        assert f"{p['prompt']} {p['target']}" in saga, p["prompt"]
    assert {p["target"] for p in worded} == set(anchored)
    # the saga's invented names never collide with the authors'
    authors = {r["author"] for r in rows(world, "full.json")}
    assert not any(a in saga for a in authors)
