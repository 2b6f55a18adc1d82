"""The TOFU loader: the real benchmark data (skipped when ../shared/data/tofu is absent), both file formats,
and one-line LetheError messages for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lethe.data.tofu import SPLIT_NAMES, available_splits, load_refusals, load_split, split_fields
from lethe.errors import LetheError

TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"
# rows per split, from the README of the shared copy
TOFU_ROWS = {
    "full": 4000, "retain90": 3600, "retain95": 3800, "retain99": 3960,
    "forget01": 40, "forget05": 200, "forget10": 400,
    "forget01_perturbed": 40, "forget05_perturbed": 200, "forget10_perturbed": 400,
    "retain_perturbed": 400, "real_authors_perturbed": 100, "world_facts_perturbed": 117,
    "holdout01": 40, "holdout05": 200, "holdout10": 400,
}
QA = {"question": "Who wrote it?", "answer": "Someone did."}
PERTURBED = {**QA, "paraphrased_answer": "It was someone.", "perturbed_answer": ["Nobody did.", "A cat did."]}


@pytest.fixture(scope="module")
def tofu() -> Path:
    if not TOFU.is_dir():
        pytest.skip(f"TOFU data not present at {TOFU}")
    return TOFU


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def error_of(folder: Path, split: str) -> str:
    with pytest.raises(LetheError) as info:
        load_split(folder, split)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ real TOFU


def test_every_real_split_loads_with_the_readme_sizes(tofu: Path) -> None:
    assert available_splits(tofu) == list(SPLIT_NAMES)
    assert set(TOFU_ROWS) == set(SPLIT_NAMES)
    for split, n in TOFU_ROWS.items():
        records = load_split(tofu, split)
        assert len(records) == n, split
        if split.endswith("_perturbed"):
            k = 3 if split in ("real_authors_perturbed", "world_facts_perturbed") else 5
            assert all(len(r["perturbed_answer"]) == k for r in records), split


def test_real_forget_and_retain_partition_full(tofu: Path) -> None:
    full = load_split(tofu, "full")
    for forget, retain in (("forget01", "retain99"), ("forget05", "retain95"), ("forget10", "retain90")):
        f, r = load_split(tofu, forget), load_split(tofu, retain)
        assert r + f == full
    retain_perturbed = load_split(tofu, "retain_perturbed")
    assert [x["question"] for x in retain_perturbed] == [x["question"] for x in full[:400]]


def test_real_refusals(tofu: Path) -> None:
    path = tofu / "idontknow.jsonl"
    refusals = load_refusals(path)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert refusals == lines and len(refusals) >= 99
    assert "I don't have that information." in refusals


# ---------------------------------------------------------------------------------------- file formats


def test_json_array_and_jsonl_suffix_and_extra_fields(tmp_path: Path) -> None:
    records = [{**QA, "id": 7, "author": "A"}, {**QA, "question": "And?"}]
    (tmp_path / "full.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    assert load_split(tmp_path, "full") == records  # extra fields kept as they are
    write_lines(tmp_path / "forget10.jsonl", records)
    assert load_split(tmp_path, "forget10") == records
    assert load_split(tmp_path, "forget10.jsonl") == records
    assert load_split(str(tmp_path), "full.json") == records
    assert available_splits(tmp_path) == ["full", "forget10"]


def test_fields_by_split_kind(tmp_path: Path) -> None:
    assert split_fields("full") == (("question", "answer"), False)
    assert split_fields("forget05_perturbed") == (("question", "answer", "paraphrased_answer"), True)
    assert split_fields("retain_perturbed") == (("question", "answer", "paraphrased_answer"), True)
    assert split_fields("world_facts_perturbed") == (("question", "answer"), True)
    plain = {k: v for k, v in PERTURBED.items() if k != "paraphrased_answer"}
    write_lines(tmp_path / "world_facts_perturbed.json", [plain])
    assert load_split(tmp_path, "world_facts_perturbed") == [plain]
    write_lines(tmp_path / "forget01_perturbed.json", [plain])
    assert error_of(tmp_path, "forget01_perturbed").endswith("line 1: field 'paraphrased_answer' missing")
    write_lines(tmp_path / "holdout01.json", [QA])  # plain splits need no perturbed_answer
    assert load_split(tmp_path, "holdout01") == [QA]


# ---------------------------------------------------------------------------------------------- errors


def test_missing_folder_and_file(tmp_path: Path) -> None:
    assert error_of(tmp_path, "forget10") == f"TOFU split 'forget10' not found: {tmp_path / 'forget10.json'}"
    missing = tmp_path / "nope"
    assert error_of(missing, "full") == f"TOFU split 'full' not found: {missing / 'full.json'}"
    with pytest.raises(LetheError, match="TOFU folder not found"):
        available_splits(missing)


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "full.json"
    path.write_text(json.dumps(QA) + "\n\n" + '{"question": "x", "answer": \n', encoding="utf-8")
    message = error_of(tmp_path, "full")
    assert message.startswith(f"{path} line 3: invalid JSON (")
    (tmp_path / "full.json").write_text('[{"question": "a",\n "answer": }]', encoding="utf-8")
    assert error_of(tmp_path, "full").startswith(f"{path} line 2: invalid JSON (")


def test_missing_and_wrong_fields(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "forget05.json", [QA, {"question": "Q?"}])
    assert error_of(tmp_path, "forget05") == f"{path} line 2: field 'answer' missing"
    write_lines(path, [QA, QA, {"question": "Q?", "answer": 3}])
    assert error_of(tmp_path, "forget05") == f"{path} line 3: field 'answer' must be a string, got int"
    write_lines(path, [{"question": "  ", "answer": "A."}])
    assert error_of(tmp_path, "forget05") == f"{path} line 1: field 'question' is empty"
    write_lines(path, [QA, "not an object"])
    assert error_of(tmp_path, "forget05") == f"{path} line 2: expected a JSON object, got str"
    (tmp_path / "full.json").write_text(json.dumps([QA, {"answer": "A."}]), encoding="utf-8")
    assert error_of(tmp_path, "full") == f"{tmp_path / 'full.json'} record 2: field 'question' missing"


def test_bad_perturbed_answers(tmp_path: Path) -> None:
    path = tmp_path / "forget10_perturbed.json"
    for value, problem in (("one string", "must be a list of strings, got str"), ([], "is an empty list"),
                           (["ok", 5], "'perturbed_answer'[1] must be a string, got int")):
        write_lines(path, [{**PERTURBED, "perturbed_answer": value}])
        message = error_of(tmp_path, "forget10_perturbed")
        assert message.startswith(f"{path} line 1: field 'perturbed_answer") and message.endswith(problem)
    write_lines(path, [{k: v for k, v in PERTURBED.items() if k != "perturbed_answer"}])
    assert error_of(tmp_path, "forget10_perturbed").endswith("field 'perturbed_answer' missing")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "retain90.json"
    path.write_text("\n  \n", encoding="utf-8")
    assert error_of(tmp_path, "retain90") == f"{path}: no records"
    path.write_text("[]", encoding="utf-8")
    assert error_of(tmp_path, "retain90") == f"{path}: no records"


# -------------------------------------------------------------------------------------------- refusals


def test_refusal_formats(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("I don't know.\n\n\"Not sure,\" I said.\n", encoding="utf-8")
    assert load_refusals(plain) == ["I don't know.", "\"Not sure,\" I said."]
    strings = write_lines(tmp_path / "strings.jsonl", ["I don't know.", "No idea."])
    assert load_refusals(strings) == ["I don't know.", "No idea."]
    objects = write_lines(tmp_path / "objects.jsonl", [{"text": "I don't know."}, {"text": "No idea."}])
    assert load_refusals(objects) == ["I don't know.", "No idea."]
    array = tmp_path / "array.json"
    array.write_text(json.dumps(["A.", {"text": "B."}]), encoding="utf-8")
    assert load_refusals(array) == ["A.", "B."]


def test_refusal_errors(tmp_path: Path) -> None:
    with pytest.raises(LetheError, match="refusals file not found"):
        load_refusals(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(LetheError, match="no refusals"):
        load_refusals(empty)
    bad = write_lines(tmp_path / "bad.jsonl", [{"text": "ok"}, {"reply": "no text"}])
    with pytest.raises(LetheError) as info:
        load_refusals(bad)
    assert str(info.value) == f"{bad} line 2: field 'text' missing"
    mixed = write_lines(tmp_path / "mixed.jsonl", ["ok", 3])
    with pytest.raises(LetheError, match="line 2: expected a non-empty string"):
        load_refusals(mixed)
