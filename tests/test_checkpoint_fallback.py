"""Corrupted checkpoints and params do not stop a rerun: an unreadable newest checkpoint step
is set aside (one warning line) and the step before it resumed, bitwise to the uninterrupted
result; unreadable final params are one error line, and a rerun trains the model again."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from autoheri_jax import artifacts, experiment
from autoheri_jax.config import CheckpointConfig, Config, ModelConfig
from autoheri_jax.data.simulator import simulate_funnel
from autoheri_jax.data.sources import Splits
from autoheri_jax.model.build import build_spec
from autoheri_jax.train.checkpoint import Checkpointer, CheckpointError
from autoheri_jax.train.fit import train_model
from autoheri_jax.train.loop import Resumable, fingerprint
from autoheri_jax.train.step import abstract_state
from tests.helpers import assert_trees_equal, gated

ROWS, BATCH, EVERY = 512, 64, 3  # 8 steps: checkpoints at 3, 6 and 8 (the final save)


def _tiny():
    data = simulate_funnel(
        num_rows=ROWS + 2 * BATCH,
        seed=0,
        num_users=100,
        num_items=200,
        click_rate=0.2,
        stage_rates=(0.3,),
        num_dense=1,
    )
    train_rows, valid, test = data.split([ROWS, BATCH, BATCH])
    spec = build_spec(ModelConfig(embed_dim=4, hidden=(8,)), data.vocab_sizes, 1, 2, searched=True)
    cfg = gated(epochs=1, batch_size=BATCH, arch_warmup_steps=0, lr=1e-2, log_every=4)
    return Splits(train_rows, valid, test), spec, cfg


def _ckpt_cfg(**kw) -> CheckpointConfig:
    return CheckpointConfig(every_steps=EVERY, keep=50, keep_best=False, async_save=False, **kw)


def _train(directory: Path, data, spec, cfg, resumed: list | None = None):
    r = Resumable(directory, _ckpt_cfg(), {"phase": "search"}, fingerprint(spec, cfg))
    on_resume = None if resumed is None else resumed.append
    return train_model(
        spec, cfg, data.train, desc="t", progress=False, resumable=r, on_resume=on_resume
    )


def _assert_bitwise(a, b) -> None:
    assert_trees_equal(jax.device_get(a), jax.device_get(b))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _largest_array_file(root: Path) -> Path:
    """The biggest OCDBT data file under an orbax pytree directory (the embedding table)."""
    return max((p for p in root.rglob("d/*") if p.is_file()), key=lambda p: p.stat().st_size)


def _unreadable_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "unreadable checkpoint" in line]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(data, spec, cfg, final state, its checkpoint directory) of one uninterrupted run."""
    data, spec, cfg = _tiny()
    directory = tmp_path_factory.mktemp("ref") / "ck"
    state, stats = _train(directory, data, spec, cfg)
    assert stats["resumed_at"] == 0
    with Checkpointer(directory) as ck:
        assert ck.all_steps() == [3, 6, 8]
    return data, spec, cfg, state, directory


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_unreadable_newest_step_falls_back_to_the_previous_one(uninterrupted, tmp_path, capsys):
    data, spec, cfg, want, ref_dir = uninterrupted
    ck = _copy(ref_dir, tmp_path / "ck")
    _truncate(_largest_array_file(ck / "8" / "state"))  # a cut-short write of the newest step
    capsys.readouterr()
    resumed: list[int] = []
    got, stats = _train(ck, data, spec, cfg, resumed)
    lines = _unreadable_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert f"ignoring unreadable checkpoint {ck / '8'} (" in lines[0]
    assert f"moved to {ck / '8.invalid-0'}; resuming from step 6 instead" in lines[0]
    assert (ck / "8.invalid-0" / "state").is_dir()
    assert resumed == [6] and stats["resumed_at"] == 6
    _assert_bitwise(got, want)
    with Checkpointer(ck) as reopened:  # the run saved its final step again
        assert reopened.all_steps() == [3, 6, 8] and not reopened.quarantined


def test_every_step_unreadable_starts_from_scratch(uninterrupted, tmp_path, capsys):
    data, spec, cfg, want, ref_dir = uninterrupted
    ck = _copy(ref_dir, tmp_path / "ck")
    _truncate(ck / "8" / "data" / "process_0-of-1.json")  # iterator state
    _truncate(ck / "6" / "extra" / "metadata")  # the JSON extra (fingerprint)
    _truncate(ck / "3" / "state" / "_METADATA")  # the state's tree metadata
    capsys.readouterr()
    resumed: list[int] = []
    got, stats = _train(ck, data, spec, cfg, resumed)
    lines = _unreadable_lines(capsys.readouterr().err)
    assert [line.split(" (")[0] for line in lines] == [
        f"ignoring unreadable checkpoint {ck / s}" for s in ("8", "6", "3")
    ]
    assert lines[0].endswith("resuming from step 6 instead")
    assert lines[1].endswith("resuming from step 3 instead")
    assert lines[2].endswith("no earlier step is left: training starts from scratch")
    assert sorted(p.name for p in ck.iterdir() if "invalid" in p.name) == [
        "3.invalid-0",
        "6.invalid-0",
        "8.invalid-0",
    ]
    assert resumed == [] and stats["resumed_at"] == 0
    _assert_bitwise(got, want)


def test_a_mismatching_checkpoint_is_still_refused_and_left_in_place(tmp_path):
    state = {"w": np.arange(4, dtype=np.float32)}
    abstract = {"w": jax.ShapeDtypeStruct((4,), np.float32)}
    with Checkpointer(tmp_path, fingerprint={"lr": 1}, async_save=False) as ck:
        ck.save(1, state, extra={})
        ck.save(2, state, extra={})
    ck = Checkpointer(tmp_path, fingerprint={"lr": 2})
    with pytest.raises(CheckpointError, match="step 2 was written with lr=1"):
        ck.restore_latest(abstract)
    ck.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


# orbax's failed read of the truncated file leaves tensorstore callbacks for an event loop it
# has closed; they report "Event loop is closed" as unraisable, which is harmless here
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("keep_after_finish", [False, True])
def test_unreadable_final_params_are_trained_again(tmp_path, capsys, keep_after_finish):
    data, spec, tcfg = _tiny()
    cfg = Config(checkpoint=_ckpt_cfg(keep_after_finish=keep_after_finish))
    wd = artifacts.Workdir(tmp_path / "wd")
    wd.root.mkdir()
    name, phase = "esmm", "retrain"

    def run():
        return experiment.train_and_save(cfg, wd, name, phase, spec, tcfg, data, False)

    want = run()
    params = wd.path("models", name, "params")
    _truncate(_largest_array_file(params))
    abstract = abstract_state(spec, tcfg).params
    with pytest.raises(artifacts.MissingArtifactError) as err:  # the CLI: one error line
        wd.load_params(name, abstract, made_by=phase)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{params} is unreadable (")
    assert msg.endswith("run `autoheri retrain` on this workdir again")

    capsys.readouterr()
    got = run()
    out = capsys.readouterr()
    aside = wd.path("models", f"{name}.invalid-0")
    warned = [line for line in out.err.splitlines() if "is unreadable" in line]
    assert len(warned) == 1 and warned[0].startswith(f"[{phase}] {name}: {params} is unreadable (")
    assert warned[0].endswith(f"; moved {params.parent} to {aside}, training the model again")
    assert "reusing it" not in out.out
    resumed = "resuming from the checkpoint at step 8" in out.out
    assert resumed == keep_after_finish  # kept checkpoints resume; else from scratch
    assert (aside / "params").is_dir() and (aside / "train.json").is_file()
    _assert_bitwise(got, want)
    _assert_bitwise(wd.load_params(name, abstract, made_by=phase), want)
