"""Plain documents: load_documents on JSON Lines / JSON arrays / .txt, its errors, and write_jsonl."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from lethe.data.text import Document, load_documents, write_json, write_jsonl
from lethe.errors import LetheError


def lines(path: Path, *texts: str) -> Path:
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def error(path: Path, **kwargs: str) -> str:
    with pytest.raises(LetheError) as info:
        load_documents(path, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_jsonl_ids_meta_and_default_ids(tmp_path: Path) -> None:
    path = lines(tmp_path / "docs.jsonl",
                 json.dumps({"id": "a", "text": "First.", "author": "X", "n": 1}),
                 "",
                 json.dumps({"text": "Second."}),
                 json.dumps({"id": 5, "text": "Third."}))
    docs = load_documents(path)
    assert docs == [Document("a", "First.", {"author": "X", "n": 1}), Document("doc-0001", "Second.", {}),
                    Document("5", "Third.", {})]


def test_custom_fields_and_json_array(tmp_path: Path) -> None:
    path = tmp_path / "docs.json"
    path.write_text(json.dumps([{"key": "k1", "body": "One.", "text": "meta"}, "Two."]), encoding="utf-8")
    docs = load_documents(path, text_field="body", id_field="key")
    assert docs == [Document("k1", "One.", {"text": "meta"}), Document("doc-0001", "Two.", {})]


def test_txt_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("\n\nFirst paragraph\nstill first.\n\n   \n\nSecond one.\n\n\nThird.", encoding="utf-8")
    docs = load_documents(path)
    assert [(d.id, d.text) for d in docs] == [("doc-0000", "First paragraph\nstill first."),
                                              ("doc-0001", "Second one."), ("doc-0002", "Third.")]


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert error(tmp_path / "none.jsonl") == f"documents file not found: {tmp_path / 'none.jsonl'}"
    assert "is a folder" in error(tmp_path)


def test_malformed_line(tmp_path: Path) -> None:
    path = lines(tmp_path / "d.jsonl", json.dumps({"text": "ok"}), "{broken")
    assert error(path).startswith(f"{path} line 2: invalid JSON (")


def test_field_errors(tmp_path: Path) -> None:
    path = lines(tmp_path / "d.jsonl", json.dumps({"text": "ok"}), json.dumps({"body": "no text"}))
    assert error(path) == f"{path} line 2: field 'text' missing"
    lines(path, json.dumps({"text": 3}))
    assert error(path) == f"{path} line 1: field 'text' must be a string, got int"
    lines(path, json.dumps({"text": " \n "}))
    assert error(path) == f"{path} line 1: field 'text' is empty"
    lines(path, json.dumps({"id": ["x"], "text": "ok"}))
    assert error(path) == f"{path} line 1: field 'id' must be a string or an integer, got list"
    lines(path, "7")
    assert error(path) == f"{path} line 1: expected a JSON object, got int"


def test_duplicate_ids(tmp_path: Path) -> None:
    path = lines(tmp_path / "d.jsonl", json.dumps({"id": "x", "text": "a"}),
                 json.dumps({"id": "y", "text": "b"}), json.dumps({"id": "x", "text": "c"}))
    assert error(path) == f"{path} line 3: duplicate id 'x' (first at line 1)"
    # an explicit id may also clash with a generated one
    lines(path, json.dumps({"text": "a"}), json.dumps({"id": "doc-0000", "text": "b"}))
    assert "duplicate id 'doc-0000'" in error(path)


def test_no_documents(tmp_path: Path) -> None:
    for name, content in (("e.jsonl", "\n \n"), ("e.txt", "  \n\n"), ("e.json", "[]")):
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        assert error(path) == f"{path}: no documents"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("café".encode("latin-1"))
    assert error(path).startswith(f"{path}: not UTF-8 text")


def test_write_jsonl_is_byte_stable_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "rows.jsonl"
    rows = [{"z": 1, "a": "é \u2014 ✓"}, {"b": [1, 2], "a": None}]
    write_jsonl(path, rows)
    expected = '{"z": 1, "a": "é — ✓"}\n{"b": [1, 2], "a": null}\n'
    assert path.read_bytes() == expected.encode("utf-8")
    write_jsonl(path, iter(rows))  # overwrite in place, same bytes, no temporary file left behind
    assert path.read_bytes() == expected.encode("utf-8")
    assert sorted(p.name for p in path.parent.iterdir()) == ["rows.jsonl"]
    write_jsonl(path, [])
    assert path.read_bytes() == b""


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": "b-1", "text": "Ünïcode text.", "lang": "x"}])
    assert load_documents(path) == [Document("b-1", "Ünïcode text.", {"lang": "x"})]
    write_json(tmp_path / "m.json", {"k": [1, "é"]})
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == '{\n  "k": [\n    1,\n    "é"\n  ]\n}\n'


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_get_normal_permissions(tmp_path: Path, umask: int) -> None:
    from lethe.runs import atomic_write_json

    old = os.umask(umask)
    try:
        written = [write_jsonl(tmp_path / "rows.jsonl", [{"a": 1}]), atomic_write_json(tmp_path / "m.json", {"a": 1})]
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what open() gives under this umask
    finally:
        os.umask(old)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask


def test_generated_ids_are_flagged(tmp_path: Path) -> None:
    path = lines(tmp_path / "d.jsonl", json.dumps({"text": "No id."}), json.dumps({"id": "x", "text": "Id."}),
                 json.dumps({"id": None, "text": "Null id."}))
    assert [(d.id, d.generated_id) for d in load_documents(path)] == [
        ("doc-0000", True), ("x", False), ("doc-0002", True)]
    txt = tmp_path / "c.txt"
    txt.write_text("One.\n\nTwo.")
    assert all(d.generated_id for d in load_documents(txt))


def test_publish_dir_stages_then_renames(tmp_path: Path) -> None:
    from lethe.runs import publish_dir

    final = tmp_path / "model"

    def build(text: str):
        def write(staging: Path) -> None:
            staging.mkdir()
            (staging / "weights").write_text(text)
        return write

    publish_dir(final, build("v1"))
    assert (final / "weights").read_text() == "v1"
    publish_dir(final, build("v2"), keep_existing=lambda p: (p / "weights").is_file())  # kept: complete already
    assert (final / "weights").read_text() == "v1"
    publish_dir(final, build("v3"))  # replaced
    assert (final / "weights").read_text() == "v3"

    def failing(staging: Path) -> None:
        build("half")(staging)
        raise KeyboardInterrupt  # killed mid-build

    with pytest.raises(KeyboardInterrupt):
        publish_dir(final, failing)
    assert (final / "weights").read_text() == "v3"  # the published folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left
