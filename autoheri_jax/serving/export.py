"""`autoheri export`: a trained model out of its workdir, into a directory a service can load.

  manifest.json      kind, schema_version, model, platforms, config, test metrics, the sha256 of
                     every other file (written last: a directory without it is no export)
  predict.jax        the prediction function, jax.export (StableHLO) with a symbolic batch
                     dimension "b": (params..., inputs...) -> ([b, T] conditional, [b, T] entire)
  params.npz         the trained parameters, one array per leaf, named by path
  vocab.npz          per field the sorted raw ids of its training vocabulary ("table" fields)
  schema.json        fields, bag fields (max_len), dense columns, stages, outputs, the
                     function's arguments (names, dtypes, shapes)
  architecture.json  the model's edges (and the search's record for the derived model)

Parameters are arguments of the function, not constants baked into it: the embedding table
(hundreds of MB with the full Ali-CCP vocabularies) would otherwise sit inside the StableHLO,
so every load would re-parse it and the compiler would fold it as a constant; as an .npz the
params load with one read, go to the device once, and are hashed and checked against the
function's signature like any other input.

Vocabularies. A model trained on files reads the store's train-only vocabularies: raw id
vocab[k] is row k + 1, anything else row 0. The simulator writes ids that already are rows
(no vocabulary files): its fields are exported as "identity" vocabularies of the simulator's
sizes, where an id in [0, size) is its own row and any other id is row 0, the row that
training reserves for unknown ids (data/dataset.py's shape contract).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

import autoheri_jax
from autoheri_jax.safe_output import new_dir_beside, replace_dir
from autoheri_jax.serving import runtime as rt

DEFAULT_PLATFORMS = ("cpu", "cuda")


def input_arguments(spec, max_bag_len: int) -> list[dict]:
    """The function's inputs after the params: name, dtype and shape ("b" = batch)."""
    f, fb, d = len(spec.vocab_sizes), len(spec.bag_vocab_sizes), spec.num_dense
    args = [{"name": "sparse", "dtype": "int32", "shape": ["b", f]}]
    if fb:
        bag = ["b", fb, max_bag_len]
        args += [
            {"name": "bag_ids", "dtype": "int32", "shape": bag},
            {"name": "bag_values", "dtype": "float32", "shape": bag},
            {"name": "bag_mask", "dtype": "float32", "shape": bag},
        ]
    if d:
        args.append({"name": "dense", "dtype": "float32", "shape": ["b", d]})
    return args


def named_leaves(params) -> tuple[list[str], list[np.ndarray], object]:
    """(names "embedding/table", ..., numpy leaves, treedef) in jax's flattening order."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in paths]
    return names, [np.asarray(x) for _, x in paths], treedef


def lower(spec, leaves: list[np.ndarray], treedef, inputs: list[dict], platforms=DEFAULT_PLATFORMS):
    """-> (Exported, platforms it was lowered for). Falls back to CPU alone when a platform
    cannot be lowered on this installation (recorded in the manifest)."""
    from autoheri_jax.model.losses import stage_probabilities
    from autoheri_jax.model.network import forward_outputs

    input_names = [i["name"] for i in inputs]

    def predict(*args):
        tree = jax.tree_util.tree_unflatten(treedef, args[: len(leaves)])
        batch = dict(zip(input_names, args[len(leaves) :], strict=True))
        logits, extras = forward_outputs(tree, spec, batch)
        return stage_probabilities(logits, spec, extras)

    (b,) = jax_export.symbolic_shape("b")
    avals = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
    avals += [
        jax.ShapeDtypeStruct(tuple(b if d == "b" else d for d in i["shape"]), jnp.dtype(i["dtype"]))
        for i in inputs
    ]
    try:
        return jax_export.export(jax.jit(predict), platforms=platforms)(*avals), None
    except Exception as e:  # e.g. a jaxlib without that platform's lowering rules
        if tuple(platforms) == ("cpu",):
            raise
        why = f"lowering for {list(platforms)} failed ({type(e).__name__}: {e}); CPU only"
        return jax_export.export(jax.jit(predict), platforms=("cpu",))(*avals), why


def schema_for(spec, data, vocabs: dict | None, max_bag_len: int, names, leaves) -> dict:
    """schema.json from the model spec, its named param leaves and a dataset of its data."""
    from autoheri_jax.metrics import metric_keys

    def field(name: str, size: int) -> dict:
        kind = "identity" if vocabs is None else "table"
        return {"name": name, "size": int(size), "vocab": kind}

    return {
        "fields": [field(n, v) for n, v in zip(data.field_names, spec.vocab_sizes, strict=True)],
        "bag_fields": [
            field(b.name, v) | {"max_len": max_bag_len}
            for b, v in zip(data.bags, spec.bag_vocab_sizes, strict=True)
        ],
        "bag_pooling": spec.model.bag_pooling,
        "bag_value_weighted": spec.model.bag_value_weighted,
        "dense": list(data.dense_names) or [f"D{j}" for j in range(data.num_dense)],
        "stages": list(data.stage_names),
        "outputs": [
            {"name": f"p{key}", "stage": k, "kind": kind}
            for key, k, kind in metric_keys(data.stage_names)
        ],
        "oov_index": rt.OOV_INDEX,
        "params": [
            {"name": n, "dtype": x.dtype.name, "shape": list(x.shape)}
            for n, x in zip(names, leaves, strict=True)
        ],
        "inputs": input_arguments(spec, max_bag_len),
    }


def write_export(
    out: str | Path,
    spec,
    params,
    data,
    *,
    vocabs: dict[str, np.ndarray] | None,
    max_bag_len: int,
    info: dict,
    architecture: dict,
    platforms=DEFAULT_PLATFORMS,
) -> Path:
    """Writes an export directory (see the module doc); returns its path.

    data: a CTRDataset of the model's data (names, vocab sizes, bags, stages); vocabs: field ->
    sorted raw ids (None: identity, the simulator); info: model, config, metrics, ... for the
    manifest. An existing export at `out` is replaced; any other non-empty directory is refused
    (ExportError), and so are params with a nan or inf.
    """
    out = Path(out).resolve()
    if out.exists() and not _replaceable(out):
        raise rt.ExportError(f"{out} exists and is not an export; refusing to overwrite it")
    names, leaves, treedef = named_leaves(params)  # to host once
    for name, leaf in zip(names, leaves, strict=True):  # a nan model would score nan, exit 0
        if leaf.dtype.kind in "fc" and not np.isfinite(leaf).all():
            raise rt.ExportError(
                f"parameter {name!r} has non-finite values (nan / inf); "
                "refusing to export a model that scores nan"
            )
    schema = schema_for(spec, data, vocabs, max_bag_len, names, leaves)
    exported, fallback = lower(spec, leaves, treedef, schema["inputs"], platforms)
    tmp = new_dir_beside(out)  # its own name: two exports to one place never share it
    try:
        _write_files(tmp, exported, fallback, names, leaves, vocabs, schema, architecture, info)
        replace_dir(tmp, out)  # the old export or the new one at `out`, never a mix
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _replaceable(out: Path) -> bool:
    """An empty directory, or an export (by its manifest's kind: a store or a workdir also
    has a manifest.json, and replacing one would lose a user's data)."""
    if not out.is_dir():
        return False
    if not any(out.iterdir()):
        return True
    try:
        return json.loads((out / rt.MANIFEST).read_text()).get("kind") == rt.KIND
    except (OSError, ValueError, AttributeError):
        return False


def _write_files(
    tmp: Path, exported, fallback, names, leaves, vocabs, schema, architecture, info
) -> None:
    """Every file of an export into the directory `tmp`, the manifest (with their hashes) last."""
    (tmp / rt.FUNCTION).write_bytes(exported.serialize())
    np.savez(tmp / rt.PARAMS, **dict(zip(names, leaves, strict=True)))
    if vocabs is not None:
        np.savez(tmp / rt.VOCAB, **{k: np.asarray(v, np.int64) for k, v in vocabs.items()})
    (tmp / rt.SCHEMA).write_text(json.dumps(schema, indent=2) + "\n")
    (tmp / rt.ARCHITECTURE).write_text(json.dumps(architecture, indent=2) + "\n")
    files = {
        p.name: {"sha256": rt.sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(tmp.iterdir())
    }
    manifest = {
        "kind": rt.KIND,
        "schema_version": rt.SCHEMA_VERSION,
        **info,
        "platforms": list(exported.platforms),
        "platform_note": fallback,
        "stages": schema["stages"],
        "outputs": [o["name"] for o in schema["outputs"]],
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"autoheri_jax": autoheri_jax.__version__, "jax": jax.__version__},
        "files": files,
    }
    (tmp / rt.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def architecture_of(spec, name: str, record: dict | None) -> dict:
    """architecture.json of model `name`: its family, hidden sizes, edges with their
    operators and whether they are gated, plus the search's `record` (as JSON) when given."""
    edges = [e.name for e in spec.edges]
    ops = [spec.edge_op(k) for k in range(spec.num_edges)]
    out = {
        "model": name,
        "family": spec.model.family,
        "hidden": list(spec.model.hidden),
        "edges": edges,
        "edge_ops": ops,
        "searched": spec.searched,
    }
    if record is not None:
        out["search"] = record
    return out


def info_dict(name: str, cfg_dict: dict, model_cfg, metrics, data_note: dict) -> dict:
    """The manifest's description of model `name`: its ModelConfig, the run's config (as a
    dict), its test `metrics` (None when not evaluated) and `data_note` (its data's source)."""
    return {
        "model": name,
        "model_config": json.loads(json.dumps(dataclasses.asdict(model_cfg))),
        "config": cfg_dict,
        "metrics": metrics,
        "data": data_note,
    }
