"""One process of a 2-process CPU run (test_parallel.py starts two of them on localhost).

usage: python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz
Each process feeds its own half of every global batch through the grain pipeline; process 0
saves the final parameters for comparison with a single-process run.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from autoheri_jax.config import ParallelConfig
from autoheri_jax.train.parallel import init_distributed


def main() -> None:
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    pcfg = ParallelConfig(
        launcher="mesh",
        num_processes=nproc,
        process_id=pid,
        coordinator=f"127.0.0.1:{port}",
        cpu_collectives="gloo",
    )
    init_distributed(pcfg)
    assert jax.process_count() == nproc and len(jax.devices()) == nproc
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from helpers import parallel_setup

    from autoheri_jax.train.fit import train_model

    data, spec, cfg = parallel_setup(True)
    state, stats = train_model(spec, cfg, data, desc=f"p{pid}", progress=False, parallel=pcfg)
    params = jax.tree.map(
        lambda x: np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True)),
        state.params,
    )
    if pid == 0:
        flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}
        np.savez(out, **flat)
    print("ok", pid, stats["devices"])


if __name__ == "__main__":
    main()
