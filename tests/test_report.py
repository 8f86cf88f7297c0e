"""TensorBoard event files (tensorboardX, read back independently) and `autoheri report`."""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.record_writer import masked_crc32c

from autoheri_jax.artifacts import tensorboard
from autoheri_jax.cli import main
from autoheri_jax.report.calibration import axis_range
from autoheri_jax.report.inputs import ReportError, normalize_study
from autoheri_jax.workdir_format import stamp

PNGS = ("edge_probabilities", "edge_heatmap", "architecture", "auc", "loss", "reliability")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- event files


def read_events(path: Path) -> list[Event]:
    """A reader independent of the writer: TFRecord framing checked here, protos decoded by
    tensorboardX's Event message."""
    data, out, at = path.read_bytes(), [], 0
    while at < len(data):
        (n,) = struct.unpack("<Q", data[at : at + 8])
        assert struct.unpack("<I", data[at + 8 : at + 12]) == (masked_crc32c(data[at : at + 8]),)
        payload = data[at + 12 : at + 12 + n]
        assert struct.unpack("<I", data[at + 12 + n : at + 16 + n]) == (masked_crc32c(payload),)
        out.append(Event.FromString(payload))
        at += 16 + n
    return out


def read_scalars(path: Path) -> list[tuple[str, int, float]]:
    return [(v.tag, ev.step, v.simple_value) for ev in read_events(path) for v in ev.summary.value]


def test_event_round_trip(tmp_path):
    w = tensorboard.ScalarWriter(tmp_path / "tb" / "run")
    assert not (tmp_path / "tb").exists()  # nothing is made before the first write
    w.scalars({"loss": 0.75}, step=1)
    w.scalars({"loss": 0.5, "edge_prob/0.0->1.1": 0.25, "stage_bce/0": -3.0}, step=2)
    w.scalars({"big": 1e30}, step=2**40)
    assert tensorboard.event_files(tmp_path / "tb" / "run") == [w.path]  # on disk already
    events = read_events(w.path)
    assert events[0].file_version == "brain.Event:2" and not events[0].summary.value
    assert all(ev.wall_time > 1e9 for ev in events)
    got = read_scalars(w.path)
    assert [(t, s) for t, s, _ in got] == [
        ("loss", 1),
        ("loss", 2),
        ("edge_prob/0.0->1.1", 2),
        ("stage_bce/0", 2),
        ("big", 2**40),
    ]
    want = np.float32([0.75, 0.5, 0.25, -3.0, 1e30])  # simple_value is a float32
    np.testing.assert_array_equal(np.float32([v for *_, v in got]), want)
    w.close()


def test_resume_purges_relogged_steps_and_afresh_drops_old_files(tmp_path):
    old = tensorboard.ScalarWriter(tmp_path)
    for step in (5, 10, 15):
        old.scalars({"loss": step / 10}, step)
    resumed = tensorboard.ScalarWriter(tmp_path)
    resumed.start(resumed_at=10)  # resumed from a checkpoint at step 9
    resumed.scalars({"loss": 9.0}, 10)
    assert len(tensorboard.event_files(tmp_path)) == 2
    start = [ev for ev in read_events(resumed.path) if ev.HasField("session_log")]
    assert [(ev.step, ev.session_log.status) for ev in start] == [(10, SessionLog.START)]
    assert read_scalars(old.path) == [("loss", s, pytest.approx(s / 10)) for s in (5, 10, 15)]
    fresh = tensorboard.ScalarWriter(tmp_path)
    fresh.scalars({"loss": 1.0}, 1)  # trained afresh: older files go
    assert tensorboard.event_files(tmp_path) == [fresh.path]


def test_flatten_scalars_names_list_entries():
    rec = {"step": 3, "epoch": 0, "loss": 0.5, "stage_bce": [0.1, 0.2], "note": "x"}
    assert tensorboard.flatten_scalars(rec) == {"loss": 0.5, "stage_bce/0": 0.1, "stage_bce/1": 0.2}


def test_tensorboard_reads_our_file(tmp_path):
    loader_mod = pytest.importorskip(
        "tensorboard.backend.event_processing.event_file_loader",
        reason="tensorboard is not installed (it is not a dependency)",
    )
    w = tensorboard.ScalarWriter(tmp_path)
    w.scalars({"loss": 0.5, "entropy": 0.25}, step=7)
    events = list(loader_mod.EventFileLoader(str(w.path)).Load())
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 7
    values = {v.tag: v for v in events[1].summary.value}
    assert set(values) == {"loss", "entropy"}
    loss = values["loss"]
    got = loss.simple_value if loss.HasField("simple_value") else loss.tensor.float_val[0]
    assert got == 0.5


# ----------------------------------------------------------------------------- a real run


@pytest.fixture
def run_dir(smoke_gradient_run):
    """The smoke run with the gradient search, a search with gate history to draw (made once
    per session, conftest.py; read only: tests that write copy it first)."""
    return smoke_gradient_run.workdir


@pytest.mark.slow  # trains a model end to end
def test_run_writes_tensorboard_scalars(run_dir):
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    arch = json.loads((run_dir / "architecture.json").read_text())
    edges = [c["edge"] for c in arch["candidates"]]
    dirs = sorted(p.name for p in (run_dir / "tb").iterdir())
    assert dirs == sorted(
        [
            "search_autoheri_search",
            "retrain_autoheri",
            "retrain_esmm",
            "retrain_hierarchical_all_on",
        ]
    )
    for d in dirs:
        phase, model = d.split("_", 1)
        files = tensorboard.event_files(run_dir / "tb" / d)
        assert len(files) == 1
        scalars = read_scalars(files[0])
        tags = {t for t, _, _ in scalars}
        # valid_nll: the validation curve, scored on the checkpoint rows at each log point
        base = {"loss", "stage_bce/0", "stage_bce/1", "entropy", "examples_per_s", "valid_nll"}
        assert tags == (base | {f"edge_prob/{e}" for e in edges} if phase == "search" else base)
        logged = [m for m in metrics if m["model"] == model and m["phase"] == phase]
        losses = [(s, v) for t, s, v in scalars if t == "loss"]
        assert [s for s, _ in losses] == [m["step"] for m in logged]
        np.testing.assert_allclose([v for _, v in losses], [m["loss"] for m in logged], rtol=1e-6)
    # the search's last edge probabilities are the derived architecture's
    search = read_scalars(tensorboard.event_files(run_dir / "tb" / dirs[-1])[0])
    last = {t.split("/", 1)[1]: v for t, _, v in search if t.startswith("edge_prob/")}
    for c in arch["candidates"]:
        assert last[c["edge"]] == pytest.approx(c["prob"], rel=1e-6)


def _check_pngs(out: Path, names) -> None:
    for name in names:
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 10_000, name  # a drawn figure, not an empty canvas


@pytest.mark.slow
def test_report_renders_every_figure_and_the_results(run_dir, tmp_path, capsys):
    shutil.copytree(run_dir, tmp_path / "run")
    run_dir = tmp_path / "run"
    assert main(["report", str(run_dir)]) == 0
    assert "report.md" in capsys.readouterr().out
    out = run_dir / "report"
    _check_pngs(out, PNGS)
    md = (out / "report.md").read_text()
    for name in PNGS:
        assert f"]({name}.png)" in md, name
    res = json.loads((run_dir / "results.json").read_text())
    for model in [*res["models"].values(), res["oracle"]]:
        for key in res["metric_keys"]:
            assert f"{model['test'][key]['auc']:.4f}" in md
            assert f"{model['test'][key]['nll']:.4f}" in md
            assert f"{model['test'][key]['ece']:.4f}" in md
        assert f"{model['test']['cvr']['selection_gap']['pred_all']:.4f}" in md
    for name in res["models"]:
        assert f"| {name} |" in md
    arch_txt = (run_dir / "architecture.txt").read_text()
    assert arch_txt.splitlines()[0] in md
    assert "skipped" not in md


@pytest.mark.slow  # trains a model end to end
def test_report_skips_what_is_not_there_yet(run_dir, tmp_path, capsys):
    wd = tmp_path / "searched"
    shutil.copytree(run_dir, wd)
    (wd / "results.json").unlink()  # evaluation not run yet
    assert main(["report", str(wd)]) == 0
    out = capsys.readouterr().out
    assert "auc.png skipped" in out and "results.json" in out
    md = (wd / "report" / "report.md").read_text()
    assert "`results.json` is missing: run `autoheri evaluate` first" in md
    assert not (wd / "report" / "auc.png").exists()
    assert not (wd / "report" / "reliability.png").exists()
    assert "*Reliability (calibration): skipped, `results.json` is missing" in md
    _check_pngs(wd / "report", [n for n in PNGS if n not in ("auc", "reliability")])


_CALIBRATION = (
    "ece",
    "reliability",
    "ece_true",
    "mae_true",
    "rmse_true",
    "mae_true_all",
    "selection_gap",
)


@pytest.mark.slow
def test_report_notes_an_old_results_json_without_calibration(run_dir, tmp_path, capsys):
    wd = tmp_path / "old"
    shutil.copytree(run_dir, wd)
    res = json.loads((wd / "results.json").read_text())
    for model in [*res["models"].values(), res["oracle"]]:
        for fields in model["test"].values():
            for name in _CALIBRATION:
                fields.pop(name, None)
    (wd / "results.json").write_text(json.dumps(stamp(res)))
    assert main(["report", str(wd)]) == 0
    out = capsys.readouterr().out
    assert "reliability.png skipped: results.json has no calibration fields" in out
    md = (wd / "report" / "report.md").read_text()
    assert "*Reliability (calibration): skipped, results.json has no calibration fields" in md
    assert "ECE" not in md and not (wd / "report" / "reliability.png").exists()
    _check_pngs(wd / "report", [n for n in PNGS if n != "reliability"])
    assert f"{res['models']['esmm']['test']['cvr']['auc']:.4f}" in md  # the rest as before


def test_reliability_axes_keep_a_three_percent_rate_readable():
    log, low, high = axis_range([0.001, 0.03, 0.05, 0.0])
    assert log and low < 0.001 and 0.05 < high < 0.2
    log, low, high = axis_range([0.05, 0.3, 0.6])
    assert not log and low == 0.0 and 0.6 < high <= 1.0


@pytest.mark.slow
def test_report_reads_study_json_for_error_bars(run_dir, tmp_path, capsys):
    wd = tmp_path / "study"
    shutil.copytree(run_dir, wd)
    keys = ["ctr", "cvr", "ctcvr"]
    per_model = lambda m: {k: {"mean": m + 0.01 * i, "std": 0.02} for i, k in enumerate(keys)}
    study = {
        "arms": {
            "cascade0": {"autoheri": per_model(0.6), "esmm": per_model(0.58)},
            "cascade1": {"autoheri": per_model(0.66), "esmm": per_model(0.6)},
        }
    }
    (wd / "study.json").write_text(json.dumps(stamp(study)))
    assert main(["report", str(wd)]) == 0
    _check_pngs(wd / "report", ["auc"])
    md = (wd / "report" / "report.md").read_text()
    assert "| cascade1 | autoheri | 0.6600 ± 0.0200 |" in md


def test_study_json_shapes():
    cell = {"ctr": {"mean": 0.6, "std": 0.01, "n": 3}}
    minimal = normalize_study({"arms": {"a": {"esmm": cell}}}, Path("s.json"))
    nested = normalize_study(
        {"keys": ["ctr"], "modes": {"train": {"arms": {"a": {"models": {"esmm": cell}}}}}},
        Path("s.json"),
    )
    assert minimal["arms"] == nested["arms"] == {"a": {"esmm": cell}}
    with pytest.raises(ReportError, match="s.json"):
        normalize_study({"arms": {"a": {"esmm": 0.6}}}, Path("s.json"))


def test_report_on_an_empty_dir_names_the_missing_file(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json is missing" in err and "autoheri run" in err
    assert "Traceback" not in err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_study_forest_plot_draws_paired_differences_on_their_own_scale(run_dir, tmp_path):
    from autoheri_jax.report.forest import plot_forest
    from autoheri_jax.report.inputs import load_inputs

    wd = tmp_path / "study"
    shutil.copytree(run_dir, wd)
    cell = {"mean": 0.7, "std": 0.01, "n": 10}
    diff = {"n": 10, "mean_diff": 0.004, "ci_lo": 0.001, "ci_hi": 0.007, "mde": 0.003}
    study = {
        "keys": ["cvr", "cvr.excess_nll_all"],
        "compare_to": "esmm",
        "modes": {
            "data": {
                "arms": {
                    "transfer": {
                        "models": {"autoheri": {"cvr": cell}, "esmm": {"cvr": cell}},
                        "paired": {"autoheri": {"cvr": diff, "cvr.excess_nll_all": diff}},
                    }
                }
            }
        },
    }
    (wd / "study.json").write_text(json.dumps(stamp(study)))
    inp = load_inputs(wd)
    assert inp.study["paired"] == {"transfer": study["modes"]["data"]["arms"]["transfer"]["paired"]}
    assert inp.study["compare_to"] == "esmm"
    assert main(["report", str(wd)]) == 0
    _check_pngs(wd / "report", ["forest"])
    assert "![Paired differences" in (wd / "report" / "report.md").read_text()
    # no paired block (a hand-written study.json): skipped with the reason, no stale figure
    del study["modes"]["data"]["arms"]["transfer"]["paired"]
    (wd / "study.json").write_text(json.dumps(stamp(study)))
    assert "no paired differences" in plot_forest(load_inputs(wd), tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()
