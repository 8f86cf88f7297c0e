"""The ablation search: no supernet; the vmapped architecture batch itself is the search. No
edge, every edge, each edge alone and (drop_one) every edge but each are retrained with
`Config.retrain` from one initial state in one batch (train/arch_batch.py) and judged on a
validation AUC by the selection's margin rule (search/selection.py). Settings:
method_config.AblationSearch."""

from __future__ import annotations

import time

from autoheri_jax.config import Config
from autoheri_jax.progress import say
from autoheri_jax.search import architecture, selection
from autoheri_jax.search.methods.base import (
    Derived,
    LaneLogs,
    SearchMethod,
    batch_checkpoints,
    plain_supernet,
)
from autoheri_jax.train.arch_batch import ground_truth_masks


def _derive(cfg: Config, wd, spec, params, data) -> Derived:
    del params  # no supernet
    t0 = time.perf_counter()
    names, masks = ground_truth_masks(spec.edges, drop=cfg.edge_search.drop_one)
    with LaneLogs(wd, "ablation", names, spec) as logs:
        judged, kept, lanes = selection.retrain_and_judge(
            spec,
            cfg.retrain,
            data.train,
            data.valid,
            names,
            masks,
            cfg.edge_search.select,
            cfg.eval_batch_size,
            "search:ablation",
            batch_checkpoints(cfg, wd, spec, masks),
            batch="ablation",
            **logs,
        )
    say(f"[search] ablation batch: {judged.chosen} ({time.perf_counter() - t0:.1f}s)")
    stage_names, mode = data.train.stage_names, cfg.model.edge_mode
    return architecture.ablation_record(spec.edges, judged, kept, stage_names, mode), lanes


# its spec is the plain model's (the candidates' masks are its edges); nothing trains it
METHOD = SearchMethod(
    name="ablation", supernet=plain_supernet, derive=_derive, trains_supernet=False
)
