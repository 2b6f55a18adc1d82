"""CLI audits, evaluation, unlearning and reports end to end on a tiny model, plus their bad-input errors."""

import base64
import json
import re
from pathlib import Path

import pytest
import yaml

from lethe.cli import main
from lethe.models import save_model
from lethe.report import figures


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, world_dir) -> Path:
    """A tiny model that has seen a few QA pairs and biographies (a handful of steps: shapes, not quality)."""
    from lethe.data.text import load_documents
    from lethe.models import tiny_model, train_bpe_tokenizer

    texts = [d.text for d in load_documents(world_dir / "biographies.jsonl")]
    tokenizer = train_bpe_tokenizer(texts + [line for line in (world_dir / "full.json").read_text().splitlines()],
                                    vocab_size=500)
    model = tiny_model(tokenizer, seed=0, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    return save_model(model, tokenizer, tmp_path_factory.mktemp("model") / "m")


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    return err


def test_mia_cli_writes_scores_in_input_order(model_dir, world_dir, tmp_path, capsys):
    members, nonmembers = tmp_path / "m.jsonl", tmp_path / "n.jsonl"
    lines = (world_dir / "biographies.jsonl").read_text().splitlines()
    members.write_text("\n".join(lines[:6]) + "\n")
    nonmembers.write_text((world_dir / "biographies_holdout.jsonl").read_text())
    out = tmp_path / "mia"
    assert main(["audit", "mia", "--model", str(model_dir), "--members", str(members), "--nonmembers",
                 str(nonmembers), "--bootstrap", "50", "--run-dir", str(out), "--quiet"]) == 0, capsys.readouterr()
    result = json.loads((out / "mia.json").read_text())
    assert "higher" in result["sign_convention"]
    for attack in ("loss", "zlib", "min_k_0.2", "min_k_0.4", "min_k_pp_0.2", "min_k_pp_0.4"):
        assert 0.0 <= result["attacks"][attack]["auc"] <= 1.0
        assert len(result["attacks"][attack]["scores"]["members"]) == 6
    assert (out / "report.html").is_file() and (out / "figures" / "roc.png").is_file()
    config = yaml.safe_load((out / "config.yaml").read_text())  # the resolved settings, DESIGN §4
    assert config["members"] == str(members) and config["n_bootstrap"] == 50 and config["ks"] == [0.2, 0.4]
    assert not (out / "config.json").exists()
    page = tmp_path / "page"
    assert main(["report", str(out), "--out", str(page)]) == 0
    html = (page / "report.html").read_text()
    assert 'id="fig-m1_roc"' in html and (page / "figures" / "m1_roc.png").is_file()  # the curves run_mia stored
    table = re.search(r"<caption>mia: membership inference per attack.*?</table>", html).group(0)
    for attack in ("loss", "zlib", "min_k_0.2", "min_k_pp_0.2"):  # the attack table, AUCs with their intervals
        auc = result["attacks"][attack]["auc"]
        assert re.search(rf"<td>{re.escape(attack)}</td><td>{auc:.3f} \[", table), attack


def test_mia_cli_rejects_empty_member_set(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["audit", "mia", "--model", str(model_dir), "--members", str(empty), "--nonmembers",
                 str(empty), "--quiet"]) == 2
    assert "empty.jsonl" in _error(capsys)


def test_canaries_cli_and_report_comparison(model_dir, world_dir, tmp_path, capsys):
    canaries = tmp_path / "c.jsonl"
    canaries.write_text("\n".join((world_dir / "canaries.jsonl").read_text().splitlines()[:2]) + "\n")
    out = tmp_path / "canaries"
    assert main(["audit", "canaries", "--model", str(model_dir), "--canaries", str(canaries), "--samples", "50",
                 "--run-dir", str(out), "--quiet"]) == 0, capsys.readouterr()
    result = json.loads((out / "canaries.json").read_text())
    assert len(result["canaries"]) == 2
    assert all(0 <= c["exposure"] <= c["max_exposure"] for c in result["canaries"])
    extraction = tmp_path / "extraction"
    assert main(["audit", "extraction", "--model", str(model_dir), "--data", str(world_dir), "--limit", "3",
                 "--suffix-len", "10", "--num-beams", "2", "--run-dir", str(extraction), "--quiet"]) == 0
    assert json.loads((extraction / "extraction.json").read_text())["decoding"] == "beam2"
    page = tmp_path / "page"
    assert main(["report", str(out), str(extraction), "--out", str(page)]) == 0
    html = (page / "report.html").read_text()
    assert "canaries" in html and "extraction" in html
    # exposure vs repetitions, every canary of the canaries.json the audit wrote; both audits of one model,
    # so their figures sit in that model's section (m1_)
    points = sorted((c["repetitions"], c["exposure"]) for c in result["canaries"])
    ceiling = max(c["max_exposure"] for c in result["canaries"])
    expected = figures.exposure_vs_repetitions({"canaries": points}, ceiling)
    assert (page / "figures" / "m1_exposure.png").read_bytes() == expected
    assert f'src="data:image/png;base64,{base64.b64encode(expected).decode()}"' in html
    assert 'id="fig-m1_exposure"' in html and 'id="fig-m1_rouge_distribution"' in html


def test_extraction_cli_semantic_similarity_in_report(model_dir, world_dir, tmp_path, capsys):
    out = tmp_path / "extraction"
    assert main(["audit", "extraction", "--model", str(model_dir), "--data", str(world_dir), "--limit", "3",
                 "--suffix-len", "8", "--semantic", "--run-dir", str(out), "--quiet"]) == 0, capsys.readouterr()
    semantic = json.loads((out / "metrics.json").read_text())["extraction"]["semantic"]
    assert "all-MiniLM-L6-v2" in semantic["featurizer"] and semantic["n"] == 3
    assert -1.0 <= semantic["bertscore_f1"] <= 1.0 and -1.0 <= semantic["cosine"] <= 1.0
    items = json.loads((out / "extraction.json").read_text())["items"]
    assert all(set(item["semantic"]) >= {"bertscore_f1", "cosine"} for item in items)
    f1 = sum(item["semantic"]["bertscore_f1"] for item in items) / 3
    assert semantic["bertscore_f1"] == pytest.approx(f1)
    for name in ("report.md", "report.html"):  # the means and the featurizer label reach both reports
        text = (out / name).read_text()
        assert "all-MiniLM-L6-v2" in text and "bertscore_f1" in text, name
        assert f"{semantic['bertscore_f1']:.3f}" in text and f"{semantic['cosine']:.3f}" in text, name
    assert yaml.safe_load((out / "config.yaml").read_text())["semantic"] is True


def test_eval_tofu_cli_on_the_generated_world(model_dir, world_dir, tmp_path, capsys):
    out = tmp_path / "tofu"
    assert main(["eval", "tofu", "--model", str(model_dir), "--data", str(world_dir), "--split", "forget10",
                 "--limit", "2", "--max-new-tokens", "8", "--run-dir", str(out), "--quiet"]) == 0, capsys.readouterr()
    summary = json.loads((out / "tofu_eval.json").read_text())["summary"]
    assert 0 <= summary["model_utility"] < 1 and summary["forget_quality"] is None  # untrained: ROUGE may be 0
    assert summary["forget_Q_A_Prob"] > 0
    # the default protocol is open-unlearning's: named in the results and the report, its files written too
    assert json.loads((out / "metrics.json").read_text())["protocol"] == "open-unlearning"
    assert "Input protocol: open-unlearning" in (out / "report.md").read_text()
    ou_summary = json.loads((out / "TOFU_SUMMARY.json").read_text())
    assert ou_summary["forget_Q_A_Prob"] == pytest.approx(summary["forget_Q_A_Prob"])
    clean = tmp_path / "tofu-lethe"
    assert main(["eval", "tofu", "--model", str(model_dir), "--data", str(world_dir), "--limit", "2",
                 "--max-new-tokens", "2", "--protocol", "lethe", "--retain-eval", str(out / "TOFU_EVAL.json"),
                 "--run-dir", str(clean), "--quiet"]) == 2
    assert "computed under protocol 'open-unlearning'" in _error(capsys)
    assert main(["eval", "tofu", "--model", str(model_dir), "--data", str(world_dir), "--limit", "2",
                 "--max-new-tokens", "2", "--retain-eval", str(out / "TOFU_EVAL.json"),
                 "--run-dir", str(tmp_path / "again"), "--quiet"]) == 0
    again = json.loads((tmp_path / "again" / "tofu_eval.json").read_text())["summary"]
    assert again["forget_quality"] == 1.0  # the open-unlearning log of the same model, read back
    assert main(["eval", "tofu", "--model", str(model_dir), "--data", str(world_dir), "--retain-eval",
                 str(tmp_path / "missing.json"), "--quiet"]) == 2
    assert "retain-eval file not found" in _error(capsys)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=sgd"], "unknown"),
        (["guard.enabled=true", "guard.tau=0"], "guard.tau must be > 0"),
        (["data.forget_split=forget10", "data.retain_split=full"], "cannot be both forgotten and retained"),
        (["eval.retain_eval=/nowhere/tofu_eval.json"], "retain-eval file not found"),
    ],
)
def test_unlearn_bad_input(model_dir, world_dir, tmp_path, capsys, overrides, message):
    run = tmp_path / "run"
    assert main(["unlearn", f"model.name={model_dir}", f"data.source={world_dir}", *overrides,
                 "--run-dir", str(run), "--quiet"]) == 2
    assert message in _error(capsys).lower()
    assert not (run / "metrics.json").exists()


def test_unlearn_empty_forget_set(model_dir, world_dir, tmp_path, capsys):
    folder = tmp_path / "world"
    folder.mkdir()
    for name in ("retain90.json", "forget10.json"):
        (folder / name).write_text((world_dir / name).read_text())
    (folder / "forget10.json").write_text("")
    assert main(["unlearn", f"model.name={model_dir}", f"data.source={folder}", "--quiet"]) == 2
    assert "forget set 'forget10' is empty" in _error(capsys)
