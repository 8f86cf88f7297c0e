"""Load an exported model once and score raw feature columns: numpy, jax and stdlib only.

    from autoheri_jax.serving.runtime import load
    model = load("exports/default")             # verifies hashes and the input schema
    scores = model.score({"101": [5, 17], "205": [3, 99999999], ...})
    scores["pctr"], scores["pcvr"], scores["pctcvr"]   # float32 [B] each

Nothing here imports autoheri_jax's training code (config, experiment, model, train, data):
the prediction function is StableHLO (jax.export) and the ids are mapped in numpy, so a
service pays for numpy and jax only. Input columns hold raw ids as they appear in the data:

  single field   integer array [B] of raw ids
  bag field      a list of B integer sequences (feature values 1.0), or a dict of CSR arrays
                 {"lengths": [B], "ids": [sum lengths], "values": optional float [same]};
                 entries past the field's max_len are dropped (training did the same)
  dense column   numeric array [B], cast to float32

A raw id outside the training vocabulary (rare or never seen) maps to row 0, the shared
out-of-vocabulary row the model trained on. Columns the model does not read are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import numpy as np
from jax import export as jax_export

from autoheri_jax.hashing import sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FUNCTION = "predict.jax"
PARAMS = "params.npz"
VOCAB = "vocab.npz"
SCHEMA = "schema.json"
ARCHITECTURE = "architecture.json"
KIND = "autoheri_jax.export"
OOV_INDEX = 0
MAX_BUCKET = 4096  # calls are padded to a power of two up to this: at most 13 compilations


class ExportError(ValueError):
    """An export directory or an input is unusable; the message names the file or column."""


class Vocabulary:
    """One field's raw id -> embedding row: "table" (sorted raw ids, id vocab[k] -> k + 1) or
    "identity" (ids already are rows, valid in [0, size)); anything else -> OOV_INDEX."""

    def __init__(self, kind: str, size: int, ids: np.ndarray | None = None):
        self.kind, self.size, self.ids = kind, int(size), ids

    def index(self, raw: np.ndarray) -> np.ndarray:
        """int32 embedding rows of the raw ids `raw` (any shape, kept)."""
        raw = np.asarray(raw, np.int64)
        if self.kind == "identity":
            return np.where((raw >= 0) & (raw < self.size), raw, OOV_INDEX).astype(np.int32)
        if not len(self.ids):
            return np.full(raw.shape, OOV_INDEX, np.int32)
        pos = np.minimum(np.searchsorted(self.ids, raw), len(self.ids) - 1)
        return np.where(self.ids[pos] == raw, pos + 1, OOV_INDEX).astype(np.int32)


def _read_json(root: Path, name: str) -> dict:
    path = root / name
    if not path.is_file():
        raise ExportError(f"{root} is not a complete export: {name} is missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict):  # valid JSON of another shape: named, not a traceback
        raise ExportError(f"{path}: not a JSON object (a {type(data).__name__})")
    return data


def _verify_files(root: Path, manifest: dict) -> None:
    """Every file the loader reads is listed in the manifest with its SHA-256, and matches it
    (vocab.npz included: a file read without a listed hash could be anything)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ExportError(f"{root / MANIFEST}: lists no files")
    for name in (FUNCTION, PARAMS, SCHEMA):
        if name not in files:
            raise ExportError(f"{root / MANIFEST}: does not list {name}")
    if (root / VOCAB).exists() and VOCAB not in files:
        raise ExportError(
            f"{root / VOCAB}: not listed in {root / MANIFEST} with a hash; "
            "refusing to read it (export the model again)"
        )
    for name, entry in files.items():
        path = root / name
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise ExportError(f"{root / MANIFEST}: file {name!r} is listed without a sha256")
        if Path(name).name != name or not path.is_file():
            raise ExportError(f"{root} is not a complete export: {name} is missing")
        if sha256_file(path) != entry.get("sha256"):
            raise ExportError(
                f"{path}: sha256 differs from the manifest (corrupted or modified after export)"
            )


def _aval_text(aval) -> str:
    return f"{np.dtype(aval.dtype).name}[{','.join(str(d) for d in aval.shape)}]"


class ExportedModel:
    """A verified export directory: call `score` (raw columns) or `run` (mapped index arrays).

    Built from the directory's path; ExportError, naming the file, when it is missing,
    unlisted or modified (hashes), malformed, of another schema_version or jax, lowered for
    another platform, or holds non-finite parameters."""

    def __init__(self, root: str | Path):
        self.root = root = Path(root).resolve()
        if not root.is_dir():
            raise ExportError(f"export directory not found: {root}")
        self.manifest = manifest = _read_json(root, MANIFEST)
        if manifest.get("kind") != KIND:
            raise ExportError(f"{root / MANIFEST}: not an autoheri_jax export")
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise ExportError(
                f"{root / MANIFEST}: schema_version {manifest.get('schema_version')!r}; this "
                f"runtime reads {SCHEMA_VERSION} (export the model again)"
            )
        _verify_files(root, manifest)
        self.schema = _read_json(root, SCHEMA)
        try:
            self._load(root)
        except (KeyError, TypeError, AttributeError, IndexError) as e:  # hashed, yet malformed
            raise ExportError(
                f"{root / SCHEMA} or {root / MANIFEST}: malformed ({type(e).__name__}: {e}); "
                "export the model again"
            ) from None

    def _load(self, root: Path) -> None:
        schema = self.schema
        try:
            self.exported = jax_export.deserialize(bytearray((root / FUNCTION).read_bytes()))
        except Exception as e:  # a file that hashes right but jax cannot read: a jax mismatch
            raise ExportError(
                f"{root / FUNCTION}: jax {jax.__version__} cannot read it ({e})"
            ) from None
        self._check_platform()
        with np.load(root / PARAMS) as npz:
            params = [npz.get(p["name"]) for p in schema["params"]]
        self._check_signature(params)
        for p, array in zip(schema["params"], params, strict=True):
            if array.dtype.kind in "fc" and not np.isfinite(array).all():  # nan scores, exit 0
                bad = int(np.size(array) - np.isfinite(array).sum())
                raise ExportError(
                    f"{root / PARAMS}: parameter {p['name']!r} has {bad} non-finite values "
                    "(nan / inf); a model with them scores nan: export a finite model"
                )
        self.vocabs = self._vocabularies()
        self.fields = [f["name"] for f in schema["fields"]]
        self.bag_fields = [b["name"] for b in schema["bag_fields"]]
        self.dense = list(schema["dense"])
        self.outputs = [o["name"] for o in schema["outputs"]]
        self._params = [jax.device_put(p) for p in params]  # once, not per call
        self._call = jax.jit(self.exported.call)

    def _check_platform(self) -> None:
        backend = jax.default_backend()
        platform = {"gpu": "cuda"}.get(backend, backend)
        if platform not in self.exported.platforms:
            raise ExportError(
                f"{self.root / FUNCTION} was lowered for {list(self.exported.platforms)}; this "
                f"process runs on {platform}"
            )

    def _check_signature(self, params: list) -> None:
        """The function's arguments must be the params then the inputs schema.json names."""
        s = self.schema
        expected = [(p["name"], p["dtype"], p["shape"]) for p in s["params"]]
        expected += [(i["name"], i["dtype"], i["shape"]) for i in s["inputs"]]
        avals = self.exported.in_avals
        if len(avals) != len(expected):
            raise ExportError(
                f"{self.root / FUNCTION} takes {len(avals)} arguments; {SCHEMA} describes "
                f"{len(expected)} (params and inputs): the files come from different exports"
            )
        for aval, (name, dtype, shape) in zip(avals, expected, strict=True):
            want = f"{dtype}[{','.join(str(d) for d in shape)}]"
            if _aval_text(aval) != want:
                raise ExportError(
                    f"{self.root / FUNCTION}: argument {name!r} is {_aval_text(aval)}, "
                    f"{SCHEMA} says {want}: the files come from different exports"
                )
        for p, array in zip(s["params"], params, strict=True):
            want = f"{p['dtype']}[{','.join(map(str, p['shape']))}]"
            if array is None or f"{array.dtype.name}[{','.join(map(str, array.shape))}]" != want:
                got = "missing" if array is None else f"{array.dtype.name}{list(array.shape)}"
                raise ExportError(
                    f"{self.root / PARAMS}: parameter {p['name']!r} is {got}, expected {want}"
                )
        widths = {"sparse": len(s["fields"]), "dense": len(s["dense"])}
        widths |= dict.fromkeys(("bag_ids", "bag_values", "bag_mask"), len(s["bag_fields"]))
        lengths = {b["max_len"] for b in s["bag_fields"]}
        for i in s["inputs"]:
            if i["name"].startswith("bag_") and lengths != {i["shape"][2]}:
                raise ExportError(
                    f"{self.root / SCHEMA}: input {i['name']!r} is {i['shape']} "
                    f"but the bag fields' max_len are {sorted(lengths)}"
                )
            if i["name"] in widths and i["shape"][1] != widths[i["name"]]:
                raise ExportError(
                    f"{self.root / SCHEMA}: input {i['name']!r} is {i['shape']} "
                    f"but {widths[i['name']]} columns are listed"
                )

    def _vocabularies(self) -> dict[str, Vocabulary]:
        tables = {}
        if VOCAB in self.manifest["files"]:  # read only when listed with a hash (_verify_files)
            with np.load(self.root / VOCAB) as npz:
                tables = {k: npz[k] for k in npz.files}
        out = {}
        for f in [*self.schema["fields"], *self.schema["bag_fields"]]:
            ids = None
            if f["vocab"] == "table":
                ids = tables.get(f["name"])
                if ids is None or len(ids) != f["size"] - 1 or np.any(np.diff(ids) <= 0):
                    raise ExportError(
                        f"{self.root / VOCAB}: vocabulary of field {f['name']!r} "
                        f"is missing, unsorted or not {f['size'] - 1} ids"
                    )
            out[f["name"]] = Vocabulary(f["vocab"], f["size"], ids)
        return out

    @property
    def stage_names(self) -> list[str]:
        return list(self.schema["stages"])

    def encode(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Raw columns (module doc) of B rows -> the index arrays the prediction function reads:
        "sparse" int32 [B, F], with bag fields "bag_ids" int32 / "bag_values" / "bag_mask"
        float32 [B, Fb, max_len], with dense columns "dense" float32 [B, Dd]. ExportError
        names a missing column, a column of the wrong kind or shape, or unequal row counts."""
        n = None

        def rows(name: str, got: int) -> None:
            nonlocal n
            if n is None:
                n = got
            elif got != n:
                raise ExportError(f"column {name!r} has {got} rows, earlier columns {n}")

        def flat(name: str, kinds: str, expected: str) -> np.ndarray:
            col = np.asarray(columns[name])
            if col.ndim != 1 or col.dtype.kind not in kinds:
                raise ExportError(
                    f"column {name!r}: {col.dtype}{list(col.shape)}, expected a {expected}"
                )
            rows(name, len(col))
            return col

        missing = [c for c in [*self.fields, *self.bag_fields, *self.dense] if c not in columns]
        if missing:
            raise ExportError(
                f"missing input columns {missing} (the model reads fields "
                f"{self.fields}, bag fields {self.bag_fields}, dense {self.dense})"
            )
        sparse = []
        for name in self.fields:
            raw = flat(name, "iu", "1-D integer array of raw ids")
            sparse.append(self.vocabs[name].index(raw))
        out = {}
        if self.bag_fields:
            parts = []
            for b in self.schema["bag_fields"]:
                lengths, ids, values = _csr(b["name"], columns[b["name"]])
                rows(b["name"], len(lengths))
                parts.append(
                    pad_bags(lengths, self.vocabs[b["name"]].index(ids), values, b["max_len"])
                )
            out["bag_ids"], out["bag_values"], out["bag_mask"] = (
                np.stack([p[k] for p in parts], axis=1) for k in range(3)
            )
        dense = []
        for name in self.dense:
            dense.append(flat(name, "iuf", "1-D numeric array").astype(np.float32))
        n = 0 if n is None else n
        out["sparse"] = np.stack(sparse, axis=1) if sparse else np.zeros((n, 0), np.int32)
        if self.dense:
            out["dense"] = np.stack(dense, axis=1)
        return out

    def run(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Index arrays -> ([B, T] conditional, [B, T] entire-space) float32 probabilities.

        Calls are padded to a power-of-two batch (at most MAX_BUCKET; longer inputs go in
        chunks), so a service sees a bounded number of compilations, not one per batch size.
        """
        names = [i["name"] for i in self.schema["inputs"]]
        n = len(inputs["sparse"])
        cond, entire = [], []
        for start in range(0, max(n, 1), MAX_BUCKET):
            part = [np.asarray(inputs[k][start : start + MAX_BUCKET]) for k in names]
            b = len(part[0])
            if b == 0:
                break
            bucket = 1 << (b - 1).bit_length()
            if bucket != b:  # pad with copies of row 0: rows are scored independently
                part = [np.concatenate([a, np.repeat(a[:1], bucket - b, axis=0)]) for a in part]
            c, e = jax.device_get(self._call(*self._params, *part))
            cond.append(c[:b])
            entire.append(e[:b])
        if not cond:
            t = len(self.stage_names)
            return np.zeros((0, t), np.float32), np.zeros((0, t), np.float32)
        return np.concatenate(cond), np.concatenate(entire)

    def named(self, cond: np.ndarray, entire: np.ndarray) -> dict[str, np.ndarray]:
        """{pctr, pcvr, pctcvr, ...}: each output of schema.json, float32 [B], from the stage
        probabilities cond and entire [B, T] (`run`)."""
        return {
            o["name"]: (cond if o["kind"] == "conditional" else entire)[:, o["stage"]]
            for o in self.schema["outputs"]
        }

    def score(self, columns: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Raw columns (see the module doc) -> {output name: float32 [B]}."""
        return self.named(*self.run(self.encode(columns)))


def load(path: str | Path) -> ExportedModel:
    """Loads and verifies an export directory (hashes, schema, platform); raises ExportError."""
    return ExportedModel(path)


def _csr(name: str, col: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bag column (list of sequences, or {"lengths", "ids", "values"}) -> CSR arrays."""
    if isinstance(col, Mapping):
        lengths, ids = np.asarray(col.get("lengths")), np.asarray(col.get("ids"))
        values = col.get("values")
        values = np.ones(len(ids), np.float32) if values is None else np.asarray(values)
    elif isinstance(col, Sequence | np.ndarray) and not isinstance(col, str | bytes):
        seqs = [np.asarray(r).reshape(-1) for r in col]
        seqs = [s if s.size else np.zeros(0, np.int64) for s in seqs]  # [] reads as float64
        lengths = np.asarray([len(s) for s in seqs], np.int64)
        ids = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        values = np.ones(len(ids), np.float32)
    else:
        raise ExportError(
            f"bag column {name!r}: expected a list of id sequences or a dict of "
            "lengths / ids / values"
        )
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or (len(lengths) and lengths.min() < 0):
        raise ExportError(f"bag column {name!r}: lengths must be non-negative integers")
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) != int(lengths.sum()):
        raise ExportError(
            f"bag column {name!r}: ids must be {int(lengths.sum())} integers "
            f"(the sum of the lengths), got {ids.dtype}{list(ids.shape)}"
        )
    if values.shape != ids.shape or values.dtype.kind not in "iuf":
        raise ExportError(f"bag column {name!r}: values must be numbers, one per id")
    return lengths.astype(np.int64), ids, values.astype(np.float32)


def pad_bags(lengths: np.ndarray, index: np.ndarray, values: np.ndarray, max_len: int):
    """CSR bags of B mapped rows (lengths [B], index and values [sum lengths]) -> padded
    int32 ids, float32 values and float32 mask [B, max_len]; longer bags keep their first
    max_len entries, as training's batches did."""
    lengths = np.asarray(lengths, np.int64)
    starts = np.cumsum(lengths) - lengths
    kept = np.minimum(lengths, max_len)
    mask = np.arange(max_len)[None, :] < kept[:, None]
    pos = np.where(mask, starts[:, None] + np.arange(max_len)[None, :], 0)
    if not len(index):
        z = np.zeros(mask.shape, np.int32)
        return z, z.astype(np.float32), mask.astype(np.float32)
    ids = np.where(mask, index[pos], OOV_INDEX).astype(np.int32)
    vals = np.where(mask, values[pos], 0.0).astype(np.float32)
    return ids, vals, mask.astype(np.float32)
