"""One process of a 2-process CPU run whose processes stop at different iterator positions
(test_checkpoint.py starts two of them on localhost).

usage: python tests/iterator_checkpoint_worker.py PROCESS_ID NUM_PROCESSES PORT DIRECTORY
Each process reads its own slice of the global batches, takes 3 + 2 * PROCESS_ID of them, saves
one checkpoint into the shared DIRECTORY, then restores it through a fresh Checkpointer and
checks that a fresh iterator set to the restored state yields the batch the original iterator
yields next: each process must get back its own position, not the primary's.
Prints "ok PROCESS_ID POSITION".
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from autoheri_jax.config import ParallelConfig
from autoheri_jax.train.parallel import init_distributed


def main() -> None:
    pid, nproc, port, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    pcfg = ParallelConfig(
        launcher="mesh",
        num_processes=nproc,
        process_id=pid,
        coordinator=f"127.0.0.1:{port}",
        cpu_collectives="gloo",
    )
    init_distributed(pcfg)
    assert jax.process_count() == nproc and jax.process_index() == pid
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from helpers import toy_dataset

    from autoheri_jax.data.pipeline import StepBatchSource, train_iterator
    from autoheri_jax.train.checkpoint import Checkpointer

    def iterator():
        data = toy_dataset(400, with_bags=False)
        return train_iterator(
            StepBatchSource(data, 32, seed=3, num_epochs=2, process_index=pid, process_count=nproc)
        )

    it = iterator()
    for _ in range(3 + 2 * pid):  # process 0 stops after 3 batches, process 1 after 5
        next(it)
    data_state = it.get_state()
    want = next(it)

    # A tiny state, fully replicated over every process's device: orbax writes each replicated
    # array once (from the process holding replica 0) and every process can restore it.
    replicated = NamedSharding(Mesh(np.array(jax.devices()), ("d",)), P())
    w = np.arange(6, dtype=np.float32)
    state = {"w": jax.make_array_from_callback(w.shape, replicated, lambda idx: w[idx])}
    abstract = {"w": jax.ShapeDtypeStruct(w.shape, w.dtype, sharding=replicated)}

    with Checkpointer(directory, async_save=False) as ck:
        assert ck.save(1, state, extra={"processes": nproc}, data_state=data_state)
    multihost_utils.sync_global_devices("checkpoint saved")

    ck = Checkpointer(directory)
    assert not ck.quarantined, ck.quarantined  # the step passes the completeness check
    restored, extra, got_state = ck.restore(None, abstract)
    ck.close()
    assert extra["processes"] == nproc, extra
    np.testing.assert_array_equal(np.asarray(restored["w"].addressable_data(0)), w)
    assert got_state == data_state, (got_state, data_state)
    resumed = iterator()
    resumed.set_state(got_state)
    got = next(resumed)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    multihost_utils.sync_global_devices("checkpoint restored")
    print("ok", pid, got_state["next_index"], flush=True)


if __name__ == "__main__":
    main()
