"""One line (exit 2) for every failure a user can cause, tracebacks under --debug (issue 33):
config files that do not import, unwritable places, malformed or tampered exports.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from autoheri_jax import workdir_lock
from autoheri_jax.cli import main
from autoheri_jax.config import ConfigError
from autoheri_jax.data.formats import convert_processed
from autoheri_jax.hashing import sha256_file
from autoheri_jax.serving import runtime as rt
from tests.test_no_overwrite import aitm_dir
from tests.test_predict import export_for_store

CONFIGS = {  # file text -> (line, what the one line says)
    "def get_config(:\n    pass\n": (1, "SyntaxError: "),
    "import no_such_module_here\n": (1, "ModuleNotFoundError: No module named 'no_such_mod"),
    "import os\n\n\ndef get_config():\n    raise RuntimeError('boom')\n": (5, "RuntimeError: boom"),
}


@pytest.mark.parametrize("text", list(CONFIGS), ids=["syntax", "import", "raise"])
def test_a_config_file_that_fails_names_its_line_in_one_line(tmp_path, capsys, text):
    cfg = tmp_path / "broken.py"
    cfg.write_text(text)
    line, what = CONFIGS[text]
    args = ["search", "--config", str(cfg), "--workdir", str(tmp_path / "wd"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"autoheri search: error: {cfg}:{line}: {what}")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "wd").exists()


def test_debug_flag_and_environment_variable_restore_the_traceback(tmp_path, monkeypatch):
    cfg = tmp_path / "broken.py"
    cfg.write_text("import no_such_module_here\n")
    args = ["search", "--config", str(cfg), "--workdir", str(tmp_path / "wd"), "--no-progress"]
    with pytest.raises(ConfigError, match="no_such_module_here") as info:
        main([*args, "--debug"])
    assert isinstance(info.value.__cause__, ModuleNotFoundError)  # the original, chained
    monkeypatch.setenv("AUTOHERI_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(args)


def test_an_unwritable_place_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    """A read-only file system (faked at the lock file: tests run as root, whom chmod does
    not stop) and a --workdir under a file: the path and the reason, exit 2."""
    real = os.open

    def read_only(path, *args, **kw):
        if str(path).endswith(workdir_lock.LOCK_NAME):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, *args, **kw)

    monkeypatch.setattr(workdir_lock.os, "open", read_only)
    wd = tmp_path / "wd"
    args = ["search", "--config", "experiments/configs/smoke.py", "--no-progress"]
    assert main([*args, "--workdir", str(wd)]) == 2
    err = capsys.readouterr().err
    assert f"{wd / workdir_lock.LOCK_NAME}: Read-only file system; cannot write there" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setattr(workdir_lock.os, "open", real)
    (tmp_path / "file").write_text("x")
    assert (
        main(
            [
                "prepare",
                "--data",
                str(aitm_dir(tmp_path / "d")),
                "--out",
                str(tmp_path / "file" / "store"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{tmp_path / 'file'}: File exists; a file stands where a directory" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.fixture
def export(tmp_path) -> tuple[Path, Path]:
    """(an export directory, a file to score with it)."""
    data = aitm_dir(tmp_path / "data")
    convert_processed(data, tmp_path / "store", min_count=1, progress=False)
    export_for_store(tmp_path / "store", tmp_path / "export")
    return tmp_path / "export", data / "test.csv"


def _predict(export: Path, data: Path, out: Path) -> int:
    return main(
        [
            "predict",
            "--model",
            str(export),
            "--data",
            str(data),
            "--out",
            str(out),
            "--format",
            "paddle_aitm",
            "--no-progress",
        ]
    )


def _manifest(export: Path, change) -> None:
    path = export / rt.MANIFEST
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda m: [m], "not a JSON object (a list)"),
        (lambda m: "export", "not a JSON object (a str)"),
        (lambda m: m | {"files": ["predict.jax"]}, "lists no files"),
        (lambda m: m | {"files": m["files"] | {rt.PARAMS: "abc"}}, "listed without a sha256"),
        (lambda m: m | {"files": m["files"] | {rt.SCHEMA: {}}}, "listed without a sha256"),
        (
            lambda m: m | {"files": {k: v for k, v in m["files"].items() if k != rt.VOCAB}},
            "vocab.npz: not listed",
        ),
    ],
    ids=["list", "string", "files-list", "entry-string", "entry-no-hash", "vocab-unlisted"],
)
def test_a_malformed_or_partial_manifest_is_one_line(export, tmp_path, capsys, change, named):
    model, data = export
    _manifest(model, change)
    assert _predict(model, data, tmp_path / "s.csv") == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "s.csv").exists()


def test_non_finite_parameters_re_signed_are_refused_by_name(export, tmp_path, capsys):
    model, data = export
    with np.load(model / rt.PARAMS) as npz:
        params = {k: npz[k] for k in npz.files}
    name = sorted(params)[0]
    params[name] = params[name].copy()
    params[name].flat[0] = np.nan
    np.savez(model / rt.PARAMS, **params)
    entry = {"sha256": sha256_file(model / rt.PARAMS), "bytes": (model / rt.PARAMS).stat().st_size}
    _manifest(model, lambda m: m | {"files": m["files"] | {rt.PARAMS: entry}})  # re-signed
    assert _predict(model, data, tmp_path / "s.csv") == 2
    err = capsys.readouterr().err
    assert f"parameter {name!r} has 1 non-finite values" in err
    assert not (tmp_path / "s.csv").exists()


def test_a_failed_async_save_is_one_line_without_the_threads_tracebacks(
    tmp_path, capsys, caplog, monkeypatch
):
    """A full disk during an asynchronous save: orbax logs each failed thread with its
    traceback (330-640 lines) before the save's exception arrives; only its one line shows."""
    import logging
    import threading

    from autoheri_jax import experiment
    from autoheri_jax.train.checkpoint import CheckpointError

    def full_disk(*args, **kw):
        def thread():
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                logging.getLogger("absl").exception("_SignalingThread.run() raised an exception")

        t = threading.Thread(target=thread)
        t.start()
        t.join()
        raise CheckpointError("saving step 16 failed: No space left on device")

    monkeypatch.setattr(experiment, "load_data", full_disk)
    args = ["search", "--config", "experiments/configs/smoke.py", "--no-progress"]
    with caplog.at_level(logging.INFO):
        assert main([*args, "--workdir", str(tmp_path / "wd")]) == 2
    assert not [r for r in caplog.records if r.name == "absl"]
    err = capsys.readouterr().err
    assert err == "autoheri search: error: saving step 16 failed: No space left on device\n"
    with caplog.at_level(logging.INFO), pytest.raises(CheckpointError):
        main([*args, "--workdir", str(tmp_path / "wd2"), "--debug"])
    assert [r.exc_info for r in caplog.records if r.name == "absl"]  # --debug: all of it
