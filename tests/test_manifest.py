"""Training runs record what they trained on (manifest.jsonl / manifest.json), and the audits use it
(issue 10, req. 7): ``--data RUN``, ``--members RUN`` (non-members from the world), ``lethe audit all``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lethe.cli import main
from lethe.data.fictional import generate_world
from lethe.errors import LetheError
from lethe.train.manifest import manifest_rows, trained_canaries, world_nonmembers

TINY = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=4", "model.intermediate_size=64",
        "model.vocab_size=400", "train.batch_size=4", "train.max_steps=2", "train.threads=1", "data.max_length=128"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_rows_count_occurrences_and_repetitions():
    records = [{"id": "a", "text": "alpha"}, {"id": None, "text": "beta"}, {"id": "a2", "text": "alpha"},
               {"id": "q1", "question": "Who?", "answer": "Her."}]
    rows = manifest_rows(records, epochs=2.5)
    assert [r["id"] for r in rows] == ["a", f"sha256:{hashlib.sha256(b'beta').hexdigest()[:16]}", "q1"]
    assert [r["occurrences"] for r in rows] == [2, 1, 1]
    assert [r["repetitions"] for r in rows] == [5.0, 2.5, 2.5]
    assert rows[2]["text"] == "Who?\nHer."
    assert rows[2]["sha256"] == hashlib.sha256(rows[2]["text"].encode()).hexdigest()


def _train(tmp_path: Path, source: Path | str, name: str, *extra: str) -> Path:
    run = tmp_path / name
    assert main(["train", f"data.source={source}", *TINY, *extra, "--run-dir", str(run), "--quiet"]) == 0
    return run


def test_train_run_writes_manifest_and_mia_takes_it_as_members(world_dir, tmp_path, capsys):
    run = _train(tmp_path, world_dir, "train", "data.limit=4")
    rows = _jsonl(run / "manifest.jsonl")
    bios = _jsonl(world_dir / "biographies.jsonl")[:4]
    assert [(r["id"], r["text"]) for r in rows] == [(b["id"], b["text"]) for b in bios]
    assert all(r["sha256"] == hashlib.sha256(r["text"].encode()).hexdigest() for r in rows)
    meta = json.loads((run / "manifest.json").read_text())
    epochs = json.loads((run / "metrics.json").read_text())["epochs"]
    assert meta["records"] == meta["documents"] == 4 and meta["epochs"] == pytest.approx(epochs)
    assert meta["world"] == {"folder": str(world_dir.resolve())}
    assert all(r["occurrences"] == 1 and r["repetitions"] == pytest.approx(epochs) for r in rows)

    # non-members default to the world's never-trained biographies: the 16 left out by data.limit + holdout
    holdout = _jsonl(world_dir / "biographies_holdout.jsonl")
    nonmembers = world_nonmembers(run)
    assert len(nonmembers) == 20 - 4 + len(holdout)
    assert not {text for _, text in nonmembers} & {b["text"] for b in bios}
    mia = tmp_path / "mia"
    assert main(["audit", "mia", "--model", str(run / "model"), "--members", str(run), "--bootstrap", "0",
                 "--run-dir", str(mia), "--quiet"]) == 0
    result = json.loads((mia / "mia.json").read_text())
    assert result["n_members"] == 4 and result["n_nonmembers"] == len(nonmembers)

    extraction = tmp_path / "extraction"  # --data RUN: the documents it trained on
    assert main(["audit", "extraction", "--model", str(run / "model"), "--data", str(run), "--suffix-len", "5",
                 "--run-dir", str(extraction), "--quiet"]) == 0
    items = json.loads((extraction / "extraction.json").read_text())["items"]
    assert [i["id"] for i in items] == [b["id"] for b in bios]


def test_audit_all_runs_what_applies_with_real_repetition_counts(tmp_path, capsys):
    world = tmp_path / "world"
    generate_world(world, n_authors=4, seed=3)
    canary = _jsonl(world / "canaries.jsonl")[0]
    data = world / "train.jsonl"  # 4 biographies and one canary 3 times: a file inside the world folder
    copies = [{"id": f"copy-{i}", "text": canary["text"]} for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in [*_jsonl(world / "biographies.jsonl"), *copies]))
    run = _train(tmp_path, data, "train")
    (row,) = [r for r in _jsonl(run / "manifest.jsonl") if r["text"] == canary["text"]]
    assert row["occurrences"] == 3 and row["id"] == "copy-0"  # one row per distinct text, the first id
    assert [c["repetitions"] for c in trained_canaries(run, _jsonl(world / "canaries.jsonl"))] == [3]

    out = tmp_path / "all"
    assert main(["audit", "all", "--data", str(run), "--suffix-len", "5", "--bootstrap", "0", "--samples", "20",
                 "--run-dir", str(out), "--quiet"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["skipped"] == {} and summary["model"] == str(run / "model")
    assert summary["mia"]["n_members"] == 5 and summary["mia"]["n_nonmembers"] == 1  # the holdout author
    canaries = json.loads((out / "canaries" / "canaries.json").read_text())["canaries"]
    assert [(c["id"], c["repetitions"]) for c in canaries] == [(canary["id"], 3)]
    for name in ("extraction/extraction.json", "mia/mia.json", "canaries/canaries.json", "report.html",
                 "config.yaml"):
        assert (out / name).is_file(), name


def test_audit_all_skips_mia_and_canaries_without_a_world(tmp_path, capsys):
    data = tmp_path / "plain.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document {i} " * 30}) + "\n" for i in range(3)))
    run = _train(tmp_path, data, "train")
    assert json.loads((run / "manifest.json").read_text())["world"] is None
    out = tmp_path / "all"
    assert main(["audit", "all", "--data", str(run), "--suffix-len", "5", "--run-dir", str(out)]) == 0
    assert set(json.loads((out / "metrics.json").read_text())["skipped"]) == {"mia", "canaries"}
    assert "skipped mia: no non-members" in capsys.readouterr().out
    assert not (out / "mia").exists() and (out / "extraction" / "extraction.json").is_file()
    assert main(["audit", "mia", "--model", str(run / "model"), "--members", str(run), "--quiet"]) == 2
    assert "pass --nonmembers" in capsys.readouterr().err
    with pytest.raises(LetheError, match="pass --nonmembers"):
        world_nonmembers(run)


def test_audits_refuse_a_run_without_manifest_and_mia_needs_nonmembers(world_dir, tmp_path, capsys):
    legacy = tmp_path / "old-run"
    legacy.mkdir()
    (legacy / "run.json").write_text('{"command": "train"}')
    assert main(["audit", "extraction", "--model", "x", "--data", str(legacy), "--quiet"]) == 2
    assert "without manifest.json" in capsys.readouterr().err
    assert main(["audit", "mia", "--model", "x", "--members", str(world_dir), "--quiet"]) == 2
    assert "--nonmembers is required" in capsys.readouterr().err
    assert main(["audit", "all", "--data", str(world_dir), "--quiet"]) == 2
    assert "--data must be a training run directory" in capsys.readouterr().err
