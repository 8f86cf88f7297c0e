"""Workdir JSON files carry a format version; files of another version (or none) are refused by
name, not migrated, and a hand-written config JSON without one still loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autoheri_jax.artifacts import Workdir
from autoheri_jax.cli import main
from autoheri_jax.config import Config, load_config, to_dict
from autoheri_jax.workdir_format import (
    FORMAT_VERSION,
    KEY,
    WorkdirFormatError,
    read_json_file,
    stamp,
    unstamp,
)


def test_stamp_and_unstamp_round_trip_and_refuse_other_versions(tmp_path):
    obj = {"models": {"esmm": {"test": {"cvr.auc": 0.7}}}}
    written = stamp(obj)
    assert next(iter(written)) == KEY and written[KEY] == FORMAT_VERSION
    assert unstamp(written, "x.json") == obj
    assert stamp(stamp(obj)) == written  # stamping twice keeps one key
    with pytest.raises(WorkdirFormatError, match=r"x\.json has no format_version"):
        unstamp(obj, "x.json")
    other = rf"x\.json is workdir format 0;.*reads format {FORMAT_VERSION}"
    with pytest.raises(WorkdirFormatError, match=other):
        unstamp({**obj, KEY: 0}, "x.json")
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(WorkdirFormatError, match="results.json is not JSON"):
        read_json_file(bad)


def test_workdir_writes_the_version_and_reads_it_back_without_it(tmp_path):
    wd = Workdir(tmp_path)
    wd.write_json("results.json", {"models": {}})
    assert json.loads((tmp_path / "results.json").read_text())[KEY] == FORMAT_VERSION
    assert wd.read_json("results.json", made_by="evaluate") == {"models": {}}
    (tmp_path / "results.json").write_text(json.dumps({"models": {}}))  # an unversioned file
    with pytest.raises(WorkdirFormatError, match="results.json has no format_version"):
        wd.read_json("results.json", made_by="evaluate")


def test_a_hand_written_config_json_loads_and_a_stamped_one_of_another_version_is_refused(
    tmp_path,
):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(to_dict(Config())))  # written by hand: no version to check
    assert load_config(path) == Config()
    path.write_text(json.dumps({KEY: FORMAT_VERSION, **to_dict(Config())}))
    assert load_config(path) == Config()
    path.write_text(json.dumps({KEY: FORMAT_VERSION + 1, **to_dict(Config())}))
    with pytest.raises(WorkdirFormatError, match=f"workdir format {FORMAT_VERSION + 1}"):
        load_config(path)


def test_a_runs_files_carry_the_version_and_an_older_workdir_is_refused_in_one_line(
    smoke_run, tmp_path, capsys
):
    wd = tmp_path / "wd"
    shutil.copytree(smoke_run.workdir, wd)
    files = [wd / "config.json", wd / "architecture.json", wd / "results.json"]
    files += sorted(wd.glob("models/*/train.json"))
    assert len(files) > 3
    for path in files:
        assert json.loads(path.read_text())[KEY] == FORMAT_VERSION, path
    config = wd / "config.json"
    older = {k: v for k, v in json.loads(config.read_text()).items() if k != KEY}
    config.write_text(json.dumps(older))
    assert main(["evaluate", "--workdir", str(wd), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{Path(wd, 'config.json')} has no format_version" in err
    assert json.loads((wd / "results.json").read_text())[KEY] == FORMAT_VERSION  # untouched
