import json
import shutil
import subprocess
import sys

import pytest

from autoheri_jax.cli import main

SMOKE = "experiments/configs/smoke.py"


@pytest.fixture(autouse=True)
def _in_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)


@pytest.mark.slow
def test_smoke_run_writes_every_artefact(smoke_gradient_run):
    # the run (conftest.py): the smoke config with the search that logs edge gates
    wd, out = smoke_gradient_run.workdir, smoke_gradient_run.stdout
    assert "oracle (true probs)" in out and "esmm" in out
    for name in (
        "config.json",
        "metrics.jsonl",
        "edge_history.jsonl",
        "architecture.json",
        "architecture.txt",
        "results.json",
    ):
        assert (wd / name).is_file(), name
    res = json.loads((wd / "results.json").read_text())
    assert res["format_version"] == 1 and res["metric_keys"] == ["ctr", "cvr", "ctcvr"]
    assert set(res["models"]) == {"autoheri", "esmm", "hierarchical_all_on"}
    for model in [*res["models"].values(), res["oracle"]]:
        for key in res["metric_keys"]:
            m = model["test"][key]
            assert 0 <= m["auc"] <= 1 and m["nll"] > 0 and m["rows"] > 0
    arch = res["architecture"]
    assert len(arch["candidates"]) == 4  # hierarchical over two hidden layers
    assert arch["kept"] == [c["edge"] for c in arch["candidates"] if c["prob"] > 0.5]
    assert res["models"]["autoheri"]["edges"] == arch["kept"]
    history = [json.loads(line) for line in (wd / "edge_history.jsonl").read_text().splitlines()]
    assert history[-1]["probs"] == {c["edge"]: c["prob"] for c in arch["candidates"]}
    phases = {json.loads(line)["phase"] for line in (wd / "metrics.jsonl").read_text().splitlines()}
    assert phases == {"search", "retrain"}


@pytest.mark.slow
def test_masked_smoke_run_records_each_edges_evidence(smoke_run):
    wd = smoke_run.workdir  # `autoheri run` of the smoke config as written (conftest.py)
    arch = json.loads((wd / "architecture.json").read_text())
    assert arch["search_method"] == "masked" and len(arch["candidates"]) == 4
    sel = arch["evidence"]["selection"]  # the validated selection decides among candidates
    assert sel["criterion"] == "ctcvr_auc" and sel["chosen"] in {"none", "evidence", "all"}
    for c in arch["candidates"]:
        e = c["evidence"]
        assert e["ci_lo"] <= e["mean"] <= e["ci_hi"]
        on_evidence = e["z"] > arch["threshold"]  # undecided edges are dropped
        expected = {"none": False, "all": True, "evidence": on_evidence}[sel["chosen"]]
        assert c["kept"] == expected
    assert "z of the edge's on/off contrast" in (wd / "architecture.txt").read_text()
    assert not (wd / "edge_history.jsonl").exists()  # no gate was learned


@pytest.mark.slow
def test_steps_one_at_a_time_equal_the_whole_run(tmp_path, capsys, smoke_run):
    whole, steps = smoke_run.workdir, tmp_path / "steps"  # whole: `autoheri run` (conftest.py)
    assert main(["search", "--config", SMOKE, "--workdir", str(steps), "--no-progress"]) == 0
    assert not (steps / "results.json").exists()
    assert main(["retrain", "--workdir", str(steps), "--no-progress"]) == 0
    assert main(["evaluate", "--workdir", str(steps)]) == 0
    a = json.loads((whole / "results.json").read_text())
    b = json.loads((steps / "results.json").read_text())
    for name in a["models"]:
        assert a["models"][name]["test"] == b["models"][name]["test"]  # bitwise-equal scores
    assert a["architecture"] == b["architecture"]


def test_bad_config_key_fails_before_compute(tmp_path, capsys):
    code = main(
        ["run", "--config", SMOKE, "--workdir", str(tmp_path / "x"), "--set", "search.epoch=2"]
    )
    assert code == 2
    assert "search.epoch" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing was started


def test_retrain_without_search_names_the_missing_file(tmp_path, capsys):
    assert main(["retrain", "--workdir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "autoheri search" in err


@pytest.mark.slow  # reads a trained smoke workdir
def test_evaluate_refuses_a_different_config(tmp_path, capsys, smoke_run):
    wd = tmp_path / "w"
    shutil.copytree(smoke_run.workdir, wd)  # searched with the smoke config as written
    code = main(["evaluate", "--config", SMOKE, "--workdir", str(wd), "--set", "model.embed_dim=8"])
    assert code == 2 and "model.embed_dim" in capsys.readouterr().err


def test_module_entry_point_prints_help():
    out = subprocess.run(
        [sys.executable, "-m", "autoheri_jax", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "run" in out.stdout and "evaluate" in out.stdout


def test_quiet_drops_status_lines_not_errors(tmp_path, monkeypatch, capsys):
    import autoheri_jax.cli as cli
    from autoheri_jax.progress import say

    code = main(
        [
            "run",
            "--config",
            SMOKE,
            "--workdir",
            str(tmp_path / "x"),
            "--set",
            "search.epoch=1",
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2 and "search.epoch" in captured.err and captured.out == ""

    def fake_prepare(args):  # a cheap command that says something
        say(f"status line; progress {not args.no_progress}")
        return 0

    monkeypatch.setattr(cli, "_prepare", fake_prepare)
    assert main(["prepare", "--data", "d", "--out", "o", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["prepare", "--data", "d", "--out", "o"]) == 0  # the level is restored
    assert capsys.readouterr().out == "status line; progress True\n"


def test_package_logger_level_silences_say(capsys):
    import logging

    from autoheri_jax.progress import say

    log = logging.getLogger("autoheri_jax")
    level = log.level
    say("shown")
    log.setLevel(logging.WARNING)
    try:
        say("silenced")
    finally:
        log.setLevel(level)
    say("shown again")
    assert capsys.readouterr() == ("shown\nshown again\n", "")
