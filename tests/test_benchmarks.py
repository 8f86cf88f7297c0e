"""The benchmark suite keeps running: `suite.py --smoke` end to end, every figure present.

Figures, not tests: nothing here asserts a speed, only that each section of the JSON is there
and holds positive numbers.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests import background
from tests.helpers import load_script

SECTIONS = {"meta", "machine", "train", "vocab", "vocab_step_ratio", "eval", "compile"}
SECTIONS |= {"peak_rss_mb", "roofline", "errors"}


REPO = Path(__file__).resolve().parents[1]


def _bench_json(tmp_path: Path, script: str, *args: str) -> dict:
    """Runs benchmarks/<script> with `args` and --json; -> the figures it wrote."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, f"benchmarks/{script}", *args, "--json", str(out)]
    p = background.run(cmd, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(out.read_text())


# Each script runs as a background job (tests/background.py): its processes use the core the
# in-process tests leave idle; the test checks the figures it wrote.


@background.job
def suite_smoke(tmp: Path) -> dict:
    return _bench_json(tmp, "suite.py", "--smoke")


@background.job
def profile_step(tmp: Path) -> dict:
    args = ["--config", "experiments/configs/smoke.py", "--batch-size", "64", "--steps", "2"]
    return _bench_json(tmp, "profile_step.py", *args)


@background.job
def seeds_smoke(tmp: Path) -> dict:
    return _bench_json(tmp, "seeds_throughput.py", "--smoke")


@background.job
def device_check_smoke(tmp: Path) -> dict:
    return _bench_json(tmp, "device_check.py", "--smoke")


@background.job
def eval_speed_smoke(tmp: Path) -> dict:
    args = (
        "--rows",
        "20000",
        "--workdir",
        str(tmp / "e"),
        "--smoke",
        "--old",
        "--auc-rows",
        "100000",
    )
    return _bench_json(tmp, "eval_speed.py", *args)


SCALE_ROWS, SCALE_STEPS = 300_000, 12


@background.job
def scale_smoke(tmp: Path) -> tuple[dict, Path]:
    """-> (the figures, DIR) of one benchmarks/scale.py run."""
    args = (
        "--rows",
        str(SCALE_ROWS),
        "--workdir",
        str(tmp / "s"),
        "--smoke",
        "--search-steps",
        str(SCALE_STEPS),
        "--retrain-steps",
        str(SCALE_STEPS),
    )
    return _bench_json(tmp, "scale.py", *args), tmp / "s"


@pytest.mark.slow
@background.uses(suite_smoke)
def test_suite_smoke():
    res = suite_smoke.result()
    assert set(res) >= SECTIONS and res["errors"] == {}

    m = res["machine"]
    assert m["peak_flops_per_s"] > 0 and m["peak_bandwidth_bytes_per_s"] > 0
    assert m["gather"]["rows_per_s"] > 0
    assert set(res["train"]) == {"esmm", "search", "retrain"}
    for by_batch in res["train"].values():
        for r in by_batch.values():
            assert r["device"]["examples_per_s"] > 0 and r["pipeline"]["examples_per_s"] > 0
            assert r["pipeline_only_examples_per_s"] > 0 and r["breakdown_ms"]["grad"] > 0
    assert set(res["vocab"]) == {"sparse", "dense"}
    for kind, by_rows in res["vocab"].items():
        assert len(by_rows) == 2
        for r in by_rows.values():
            assert r["device"]["step_ms"] > 0 and r["init_s"] > 0
            assert (r["breakdown_ms"].get("unique", 0) > 0) == (kind == "sparse")
        q = res["vocab_step_ratio"][kind]
        assert q["ratio"] > 0 and q["best_ratio"] > 0
    for r in res["eval"].values():
        assert r["device"]["examples_per_s"] > 0 and r["predict_dataset"]["examples_per_s"] > 0

    configs = {f"train:{m}:{b}" for m, v in res["train"].items() for b in v}
    configs |= {f"vocab:{k}:{v}" for k, by_rows in res["vocab"].items() for v in by_rows}
    configs |= {f"eval:{m}" for m in res["eval"]}
    assert set(res["compile"]) == configs and set(res["roofline"]) == configs
    assert set(res["peak_rss_mb"]) == configs | {"machine"}
    assert all(v > 0 for v in res["peak_rss_mb"].values())
    for c in res["compile"].values():
        assert c["first_call_s"] > 0 and c["compile_s"] >= 0  # a cached compile may be ~0
    for b in res["roofline"].values():
        for k in ("flops_per_example", "bytes_per_example", "xla_flops_per_example"):
            assert b[k] > 0, k
        assert b["attainable_examples_per_s"] > 0 and b["fraction_of_attainable"] > 0
    for name, b in res["roofline"].items():  # train and vocab configs: their matmul floor
        if not name.startswith("eval"):
            assert b["matmul_floor_examples_per_s"] > 0 and b["fraction_of_matmul_floor"] > 0


@pytest.mark.slow
@background.uses(profile_step)
def test_profile_step_sees_every_matmul_and_no_table_copy():
    res = profile_step.result()
    assert res["wall_ms"] > 0 and res["kinds_ms"]["matmul"] > 0
    # the smoke search model: 2 towers x (3 layers + head) forward, dX and dW, each a dot
    forms = {d["form"] for d in res["matmuls"]}
    assert len(res["matmuls"]) >= 8 and forms >= {"NN"}
    assert res["table_copies"] == []


@pytest.mark.slow
@background.uses(seeds_smoke)
def test_seeds_benchmark_smoke():
    """benchmarks/seeds_throughput.py runs both steps it compares and reports positive figures."""
    res = seeds_smoke.result()
    (model,) = res["models"]
    assert model["model"] == "search" and model["one_run_s_per_step"] > 0
    assert [r["k"] for r in model["vmapped"]] == [2]
    assert all(r["s_per_step"] > 0 and r["x_one_run"] > 0 for r in model["vmapped"])


DISPATCH_SMOKE = {(1, "host"), (4, "host"), (1, "device"), (4, "device")}


@background.job
def dispatch_smoke(tmp: Path) -> dict:
    return _bench_json(tmp, "dispatch_throughput.py", "--smoke", "--ks", "1,4", "--steps", "4")


@pytest.mark.slow
@background.uses(dispatch_smoke)
def test_dispatch_throughput_smoke():
    """benchmarks/dispatch_throughput.py: every K x store through loop.train, positive rates."""
    res = dispatch_smoke.result()
    assert {(r["k"], r["store"]) for r in res["results"]} == DISPATCH_SMOKE
    assert all(r["steps_per_s"] > 0 and r["examples_per_s"] > 0 for r in res["results"])


@pytest.mark.slow
@background.uses(device_check_smoke)
def test_device_check_smoke():
    """benchmarks/device_check.py --smoke runs every part on CPU and reports positive figures."""
    res = device_check_smoke.result()
    assert res["backend"] == "cpu" and res["device"]
    assert {r["model"] for r in res["steps"]} == {"esmm", "search", "retrain"}
    assert all(r["examples_per_s"] > 0 for r in res["steps"])
    assert [r["k"] for r in res["seeds"]["vmapped"]] == [1, 2]
    assert res["arch"]["architectures"] >= 4 and res["arch"]["examples_per_s"] > 0
    assert {(r["k"], r["store"]) for r in res["dispatch"]["results"]} == DISPATCH_SMOKE
    assert "cuda" in res["export"]["platform"]  # lowered for the accelerator, scored here
    assert all(b["rows_per_s"] > 0 for b in res["export"]["batches"].values())
    assert res["study"]["seeds"] == 2 and res["study"]["seconds"] > 0
    for t in res["study"]["phases"].values():  # each arm's time by phase, train included
        assert set(t) >= {"data", "compile", "train", "evaluate"} and t["train"] > 0


@pytest.mark.slow
@background.uses(scale_smoke)
def test_scale_smoke_runs_every_phase_on_generated_aliccp(repo, tmp_path, monkeypatch):
    """benchmarks/scale.py: generate, prepare, search, retrain and evaluate, each with its own
    peak RSS; the test split is scored whole; a rerun reuses the data and keeps its figures."""
    res, scale_dir = scale_smoke.result()
    assert list(res["phases"]) == ["generate", "prepare", "search", "retrain", "evaluate", "step"]
    assert all(p["seconds"] > 0 and p["peak_rss_mb"] > 0 for p in res["phases"].values())
    assert res["phases"]["search"]["training"]["autoheri_search"]["steps"] == SCALE_STEPS
    assert res["phases"]["retrain"]["training"]["esmm"]["steps"] == SCALE_STEPS
    # ESMM is the validated selection's lane "none", trained there once, not retrained
    assert res["phases"]["retrain"]["training"]["esmm"]["lane"] == "none"
    assert set(res["test_auc"]) == {"autoheri", "esmm"}
    assert set(res["phases"]["step"]["models"]) == {"esmm", "search", "retrain"}
    step = res["phases"]["step"]["models"]
    for name, t in res["phases"]["retrain"]["training"].items():  # against the step alone
        if t["lane"] is not None:
            assert "x_step" not in t  # the batch's rate: every lane's examples
            continue
        ref = step[{"autoheri": "retrain", "esmm": "esmm"}[name]]["examples_per_s"]
        assert t["x_step"] == pytest.approx(t["examples_per_s"] / ref)
    world = json.loads((scale_dir / "raw" / "world.json").read_text())
    assert world["splits"]["train"]["rows"] + world["splits"]["test"]["rows"] == 300_000
    # The rerun, in this process: scale.run() on the same DIR with each phase's child process
    # stood in for (the search's puts the first run's workdir back, as rerunning it would).
    # Generating or preparing again fails the test; their figures are the first run's.
    scale = load_script(repo / "benchmarks" / "scale.py")
    run, first = scale_dir / "run", tmp_path / "first_run"  # the job's DIR: this test's alone
    shutil.copytree(run, first)
    started = []

    def child(cmd: list[str]) -> dict:
        phase = cmd[3] if cmd[1:3] == ["-m", "autoheri_jax"] else Path(cmd[1]).name
        assert phase in ("search", "retrain", "evaluate"), f"the rerun ran {phase} again"
        started.append(phase)
        if phase == "search":
            assert not run.exists()  # the run is redone from scratch
            shutil.copytree(first, run)
        return {"seconds": 1.0, "peak_rss_mb": 1.0, "peak_anon_mb": 1.0, "peak_file_mb": 1.0}

    monkeypatch.setattr(scale, "_child", child)
    again = scale.run(SCALE_ROWS, scale_dir, SCALE_STEPS, SCALE_STEPS, smoke=True)
    assert started == ["search", "retrain", "evaluate"]
    for phase in ("generate", "prepare"):
        assert again["phases"][phase] == res["phases"][phase]  # reused, not redone
    assert again["test_auc"] == res["test_auc"]


@pytest.mark.slow
@background.uses(eval_speed_smoke)
def test_eval_speed_smoke_reports_every_figure():
    """benchmarks/eval_speed.py: the step before and after, evaluate, the old path, AUC."""
    res = eval_speed_smoke.result()
    assert res["step_before"] > 0 and res["step_after"] > 0 and res["ratio"] > 0
    assert res["evaluate"]["rows_per_s_per_model"] > 0 and res["old"]["rows_per_s"] > 0
    assert res["models"] == ["esmm", "retrain"] and res["test_rows"] > 0
    assert res["auc"]["auc_s"] > 0 and res["auc"]["old_auc_s"] > 0
