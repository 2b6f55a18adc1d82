"""``lethe.unlearn`` / ``lethe.eval_tofu`` (the Python API) and the checks ``unlearn_and_evaluate`` makes
before training: a bad retain-eval or before-eval file, or missing TOFU split files, fail at once with a
one-line error, and nothing is written (no model/ without tofu_eval.json, nothing outside the run dir)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import lethe
from lethe.errors import LetheError
from lethe.models import save_model, tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one torch thread."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    model = tiny_model(tiny_tokenizer, seed=0, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    return save_model(model, tiny_tokenizer, tmp_path_factory.mktemp("api-model") / "m")


@pytest.fixture(scope="module")
def tofu_eval(model_dir, world_dir, tmp_path_factory) -> Path:
    """A valid tofu_eval.json of the model on forget10 (2 items per split), through ``lethe.eval_tofu``."""
    out = tmp_path_factory.mktemp("api-eval") / "eval"
    run_dir, summary = lethe.eval_tofu(model_dir, data=str(world_dir), split="forget10", run_dir=out, limit=2,
                                       max_new_tokens=4, batch_size=8)
    assert run_dir == out and summary["forget_quality"] is None  # no retain eval given
    assert 0 < summary["forget_Q_A_Prob"] < 1 and summary["model_utility"] is not None
    return out / "tofu_eval.json"


def overrides(model_dir: Path, world_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"model.name={model_dir}", f"data.source={world_dir}", f"run_dir={run_dir}", "method=gd",
            "data.max_length=128", "train.batch_size=4", "train.grad_accum=1", "train.max_steps=2",
            "train.lr=1e-3", "train.save_steps=100", "train.threads=1", "eval.limit=2",
            "eval.max_new_tokens=4", "eval.batch_size=8", *extra]


def _edited(source: Path, folder: Path, edit) -> Path:
    data = json.loads(source.read_text())
    edit(data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tofu_eval.json"
    path.write_text(json.dumps(data))
    return path


def test_lethe_unlearn_stays_callable_once_the_subpackage_is_imported():
    import lethe.unlearn.evaluation  # noqa: F401  (rebinds lethe.unlearn to the package)

    assert callable(lethe.unlearn) and lethe.unlearn.run_unlearning  # both the API and the package
    with pytest.raises(LetheError, match="unknown key 'guard.temperature'"):
        lethe.unlearn(None, ["guard.temperature=2"])


def test_lethe_train_can_be_called_twice(tmp_path):
    """The first call imports lethe.train.trainer, which rebinds lethe.train to the package."""
    settings = ["data.limit=4", "data.max_length=32", "train.max_steps=1", "train.batch_size=2",
                "model.hidden_size=16", "model.intermediate_size=32", "model.num_layers=1", "model.num_heads=2",
                "model.vocab_size=300", "data.world_authors=4"]
    for name in ("a", "b"):
        run_dir, metrics = lethe.train(None, [*settings, f"run_dir={tmp_path / name}"])
        assert run_dir == tmp_path / name and metrics["steps"] == 1
    assert callable(lethe.train) and lethe.train.goldfish.goldfish_mask  # both the API and the package


def test_unlearn_and_eval_tofu_through_the_python_api(model_dir, world_dir, tofu_eval, tmp_path):
    given = tmp_path / "given"
    given.mkdir()
    before = given / "before.json"
    shutil.copy(tofu_eval, before)
    run = tmp_path / "run"
    run_dir, metrics = lethe.unlearn(None, overrides(model_dir, world_dir, run, f"eval.retain_eval={tofu_eval}",
                                                     f"eval.before={before}"))
    assert run_dir == run and metrics["steps"] == 2 and metrics["method"] == "gd"
    after = json.loads((run / "tofu_eval.json").read_text())
    assert len(after["per_item"]["forget"]) == 2
    # the before-evaluation is the given file, copied into the run directory; nothing written beside it
    assert json.loads((run / "tofu_eval_before.json").read_text()) == json.loads(before.read_text())
    assert sorted(p.name for p in given.iterdir()) == ["before.json"]
    reference = json.loads(tofu_eval.read_text())["summary"]
    assert metrics["tofu_before"]["model_utility"] == pytest.approx(reference["model_utility"])
    assert 0 <= metrics["tofu"]["forget_quality"] <= 1  # the retain eval was used
    assert set(metrics["sacrifice_rate"]) == {"truth_ratio", "rougeL", "probability"}
    assert json.loads((run / "metrics.json").read_text())["tofu"] == metrics["tofu"]


def _fails_before_training(model_dir: Path, world_dir: Path, run: Path, *extra: str) -> str:
    with pytest.raises(LetheError) as info:
        lethe.unlearn(None, overrides(model_dir, world_dir, run, *extra))
    message = str(info.value)
    assert "\n" not in message
    assert not run.exists()  # nothing trained, nothing written
    return message


@pytest.mark.parametrize(("edit", "expected"), [
    (None, "not valid JSON"),
    (lambda d: d["per_item"].pop("forget"), "per_item.forget is missing"),
    (lambda d: d["config"].update(forget_split="forget05"), "computed on forget split 'forget05'"),
    (lambda d: d["per_item"]["forget"].pop(), "has 1 forget items, this evaluation has 2"),
    (lambda d: d["per_item"]["forget"][0].update(question="Who?"), "forget item 0 is 'Who?'"),
    (lambda d: d["per_item"]["forget"][1].update(truth_ratio=None), "without a finite truth_ratio"),
])
def test_bad_retain_eval_fails_before_training(model_dir, world_dir, tofu_eval, tmp_path, edit, expected):
    if edit is None:
        path = tmp_path / "bad" / "tofu_eval.json"
        path.parent.mkdir()
        path.write_text('{"summary": {')
    else:
        path = _edited(tofu_eval, tmp_path / "bad", edit)
    message = _fails_before_training(model_dir, world_dir, tmp_path / "run", f"eval.retain_eval={path}")
    assert str(path) in message and expected in message


@pytest.mark.parametrize(("edit", "expected"), [
    ("missing", "file not found"),
    (lambda d: d["summary"].update(retain_Q_A_ROUGE=None), "summary.retain_Q_A_ROUGE is missing"),
    (lambda d: d.pop("summary"), "no summary"),
    (lambda d: d["per_item"]["forget"].pop(), "has 1 forget items, this evaluation has 2"),
])
def test_bad_eval_before_fails_before_training(model_dir, world_dir, tofu_eval, tmp_path, edit, expected):
    if edit == "missing":
        path = tmp_path / "elsewhere" / "before.json"
    else:
        path = _edited(tofu_eval, tmp_path / "elsewhere", edit)
    message = _fails_before_training(model_dir, world_dir, tmp_path / "run", f"eval.before={path}")
    assert f"eval.before {path}" in message and expected in message
    if edit == "missing":
        assert not path.parent.exists()  # the before-eval is never written to the user's path


def test_missing_tofu_eval_split_fails_before_training(model_dir, world_dir, tmp_path):
    folder = tmp_path / "world"
    shutil.copytree(world_dir, folder)
    (folder / "world_facts_perturbed.json").unlink()
    message = _fails_before_training(model_dir, folder, tmp_path / "run")
    assert "world_facts_perturbed" in message


def test_an_earlier_before_eval_is_reused_only_for_the_same_model_and_settings(model_dir, world_dir, tmp_path,
                                                                                 monkeypatch):
    import lethe.unlearn.evaluation as evaluation

    evaluated: list[str] = []
    original = evaluation._evaluate

    def counting(model_name, config, retain_eval):
        evaluated.append(str(model_name))
        return original(model_name, config, retain_eval)

    monkeypatch.setattr(evaluation, "_evaluate", counting)
    run = tmp_path / "run"
    for tokens in (4, 4, 3):
        lethe.unlearn(None, overrides(model_dir, world_dir, run, f"eval.max_new_tokens={tokens}"))
    before_evals = [name for name in evaluated if name == str(model_dir)]
    assert len(before_evals) == 2  # computed, reused, recomputed for the other max_new_tokens
    stored = json.loads((run / "tofu_eval_before.json").read_text())["config"]
    assert stored["max_new_tokens"] == 3 and stored["model"] == str(model_dir)


def test_unknown_api_settings_are_one_line_errors(model_dir):
    with pytest.raises(LetheError, match="unknown setting.*max_tokens; known: .*max_new_tokens"):
        lethe.eval_tofu(model_dir, max_tokens=3)
    with pytest.raises(LetheError, match="unknown setting.*beams"):
        lethe.audit_extraction(model_dir, beams=2)
