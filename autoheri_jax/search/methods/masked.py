"""The masked search (the default): a supernet trained under Bernoulli(keep_prob) edge masks,
each edge judged by its paired on/off contrast on validation batches (search/evidence.py),
then the validated selection (search/selection.py): no edge, the evidence's edges and every
edge retrained in one vmapped batch and judged on validation with a paired margin. Settings:
method_config.MaskedSearch."""

from __future__ import annotations

import dataclasses
import time

from autoheri_jax.config import Config, supernet_config
from autoheri_jax.progress import say
from autoheri_jax.search import architecture, evidence, selection
from autoheri_jax.search.methods.base import Derived, LaneLogs, SearchMethod, batch_checkpoints


def _supernet(cfg: Config):
    return cfg.model, supernet_config(cfg.search, edge_keep_prob=cfg.edge_search.keep_prob)


def _derive(cfg: Config, wd, spec, params, data) -> Derived:
    es, stage_names, mode = cfg.edge_search, data.train.stage_names, cfg.model.edge_mode
    t0 = time.perf_counter()
    ev, per_edge, kept = evidence.edge_evidence(spec, params, data.valid, es)
    say(f"[search] edge evidence: {time.perf_counter() - t0:.1f}s")
    lanes = None
    if es.select != "off" and ev.batches > 0:  # judged: worth comparing
        t0 = time.perf_counter()
        names, masks = selection.candidate_masks(kept)
        with LaneLogs(wd, "select", names, spec) as logs:
            sel, kept, lanes = selection.select_architecture(
                spec,
                cfg.retrain,
                data.train,
                data.valid,
                kept,
                es.select,
                cfg.eval_batch_size,
                batch_checkpoints(cfg, wd, spec, masks),
                **logs,
            )
        ev = dataclasses.replace(ev, selection=sel)
        say(f"[search] validated selection: {sel.chosen} ({time.perf_counter() - t0:.1f}s)")
    record = architecture.evidence_record(spec.edges, ev, per_edge, kept, stage_names, mode)
    return record, lanes


METHOD = SearchMethod(name="masked", supernet=_supernet, derive=_derive)
