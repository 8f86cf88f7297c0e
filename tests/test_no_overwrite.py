"""Nothing a user passed in is overwritten, and no store is read in a state its manifest does not
describe (issue 33): outputs that are (or resolve to, or hold) an input are refused; outputs
are written beside and renamed; one `prepare` writes a store at a time, and a reader sees no
store or a finished one. The race is forced by a hook that pauses the first writer inside its
build (no timing): the second one is refused at once, naming the first one's PID.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from autoheri_jax.cli import main
from autoheri_jax.data import store
from autoheri_jax.data.formats import convert_processed
from autoheri_jax.serving.runtime import ExportError
from tests.test_formats import AITM_HEADER, _aitm_row, _write
from tests.test_predict import export_for_store


def aitm_dir(root: Path, n: int = 40) -> Path:
    """train.csv and test.csv of a small PaddleRec AITM dataset (header lines included)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, off in (("train.csv", 0), ("test.csv", 1000)):
        rows = [_aitm_row(off + i, click=int(i % 3 == 0), buy=int(i % 6 == 0)) for i in range(n)]
        _write(root / name, [AITM_HEADER, *rows])
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(data dir, export dir) of an untrained model of the AITM store's schema."""
    root = tmp_path_factory.mktemp("aitm")
    data = aitm_dir(root / "data")
    convert_processed(data, root / "store", min_count=1, progress=False)
    export_for_store(root / "store", root / "export")
    return data, root / "export"


def predict(model: Path, data: Path, out: Path) -> int:
    return main(
        [
            "predict",
            "--model",
            str(model),
            "--data",
            str(data),
            "--out",
            str(out),
            "--format",
            "paddle_aitm",
            "--no-progress",
        ]
    )


def _link(kind: str, src: Path, dst: Path) -> Path:
    (os.symlink if kind == "symlink" else os.link)(src, dst)
    return dst


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "dotted"])
def test_predict_refuses_an_out_that_is_its_data(exported, tmp_path, capsys, how):
    data, model = exported
    src = tmp_path / "scores.csv"  # a .csv name: the --out extension would be accepted
    src.write_bytes((data / "test.csv").read_bytes())
    before = src.read_bytes()
    out = {"same": src, "dotted": tmp_path / "." / "x" / ".." / "scores.csv"}.get(how)
    out = out or _link(how, src, tmp_path / "link.csv")
    assert predict(model, src, out) == 2
    err = capsys.readouterr().err
    assert f"is --data {src}" in err and "never overwrites an input" in err
    assert src.read_bytes() == before and len(err.strip().splitlines()) == 1


def test_predict_refuses_an_out_inside_its_model_and_writes_beside_then_renames(
    exported, tmp_path, capsys
):
    data, model = exported
    assert predict(model, data / "test.csv", model / "scores.csv") == 2
    assert f"is inside --model {model}" in capsys.readouterr().err
    assert not (model / "scores.csv").exists()
    out = tmp_path / "s.csv"
    assert predict(model, data / "test.csv", out) == 0
    assert out.read_text().startswith('"pctr","pcvr","pctcvr"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]  # no temporary left
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_predict_refuses_a_dense_value_beyond_float32_not_nan_scores(tmp_path, capsys):
    """1e39 is finite as float64, inf as float32: refused at FILE:LINE (it scored nan, exit 0)."""
    from tests.test_formats import AX_HEADER, _ax_row

    rows = [_ax_row(i, click=int(i % 2 == 0)) for i in range(30)]
    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "train.csv", [AX_HEADER, *rows])
    _write(tmp_path / "d" / "test.csv", [AX_HEADER, *rows])
    convert_processed(tmp_path / "d", tmp_path / "store", min_count=1, progress=False)
    export_for_store(tmp_path / "store", tmp_path / "export")
    bad = _ax_row(99).split(",")
    bad[30] = "1e39"
    score = _write(tmp_path / "score.csv", [AX_HEADER, _ax_row(1), ",".join(bad)])
    args = [
        "predict",
        "--model",
        str(tmp_path / "export"),
        "--data",
        str(score),
        "--out",
        str(tmp_path / "p.csv"),
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{score}:3: dense value beyond float32: '1e39' in column numerical_14" in err
    assert not (tmp_path / "p.csv").exists()


def test_export_refuses_to_replace_a_store_or_its_workdir(tmp_path, capsys):
    """A store has a manifest.json too: only an export's (by kind) may be replaced."""
    data = aitm_dir(tmp_path / "data")
    convert_processed(data, tmp_path / "store", min_count=1, progress=False)
    columns = sorted(p.name for p in (tmp_path / "store" / "train").iterdir())
    with pytest.raises(ExportError, match="exists and is not an export"):
        export_for_store(tmp_path / "store", tmp_path / "store")
    assert sorted(p.name for p in (tmp_path / "store" / "train").iterdir()) == columns
    store.read_manifest(tmp_path / "store")  # still the store it was
    export_for_store(tmp_path / "store", tmp_path / "export")
    export_for_store(tmp_path / "store", tmp_path / "export")  # an export is replaced
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".export")) == []
    wd = tmp_path / "wd"
    wd.mkdir()
    assert main(["export", "--workdir", str(wd), "--out", str(wd / "..")]) == 2
    assert f"contains the workdir {wd}" in capsys.readouterr().err


@pytest.mark.parametrize("out", [".", "train.csv"])
def test_prepare_refuses_an_out_that_is_or_holds_its_data(tmp_path, capsys, out):
    data = aitm_dir(tmp_path / "data")
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    given = data / "train.csv" if out == "." else data
    args = ["prepare", "--data", str(given), "--out", str(data / out), "--no-progress"]
    if out == ".":
        args[-2] = str(data)  # --out is the directory holding the --data file
    assert main(args) == 2
    why = "contains" if out == "." else "is inside"
    assert f"{why} --data" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before


def test_a_second_prepare_is_refused_naming_the_first_and_no_store_is_mixed(
    tmp_path, capsys, monkeypatch
):
    """The first writer pauses inside its build (the hook); while it does, nothing is at --out
    and a second prepare (another seed) is refused at once naming its PID; the store is then
    the first one's alone, and a third prepare with the first's options reuses it."""
    data = aitm_dir(tmp_path / "data", n=60)
    out = tmp_path / "store"
    paused, resume = threading.Event(), threading.Event()
    write = store.write_manifest

    def pausing_write(root, manifest):
        paused.set()
        assert resume.wait(60)
        write(root, manifest)

    monkeypatch.setattr(store, "write_manifest", pausing_write)
    args = ["prepare", "--data", str(data), "--out", str(out), "--min-count", "1", "--no-progress"]
    codes = []
    first = threading.Thread(target=lambda: codes.append(main([*args, "--seed", "0"])))
    first.start()
    try:
        assert paused.wait(60)
        assert not out.exists()  # being written beside: no reader can see a part of it
        assert main([*args, "--seed", "1"]) == 2
        err = capsys.readouterr().err
        assert f"{out} is in use by process {os.getpid()} (autoheri prepare)" in err
    finally:
        resume.set()
        first.join(60)
    monkeypatch.setattr(store, "write_manifest", write)
    assert codes == [0]
    manifest = store.read_manifest(out)
    assert manifest["options"]["seed"] == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    train = np.load(out / "train" / "labels.npy")
    valid = np.load(out / "valid" / "labels.npy")
    assert len(train) + len(valid) == 60
    assert main([*args, "--seed", "0"]) == 0  # reused as is
    assert main([*args, "--seed", "1"]) == 2  # another carve: refused, not mixed
    assert "made from other files or options" in capsys.readouterr().err
