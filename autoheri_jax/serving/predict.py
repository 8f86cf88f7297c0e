"""`autoheri predict`: an exported model over a data file, in batches, to CSV or Parquet.

Each field of the export is matched by name to a column of the data (scoring_data.py gives
the data's stored indices and the raw id behind each). The two are joined by one lookup table
per field, stored index -> export row, built with the export's own Vocabulary (the runtime's
raw-id mapping, so unseen ids reach the out-of-vocabulary row exactly as in `score`); a batch
is then one gather per column. A field that is a bag in the export but single in the data is a
bag of that one id (none where the row lacks the field); a bag in the data read by a single
field of the export uses the bag's first id.

Output: one row per scored data row, in file order (rows skipped by `--on-bad-row skip` are
absent), one float32 column per output of the export: pctr, pcvr, pctcvr (3 stages: pctr,
patr, pctatr, pcvr, pctcvr). `.csv` or `.parquet` by the --out extension.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from autoheri_jax.progress import Progress
from autoheri_jax.safe_output import refuse_overlap, replacing_file
from autoheri_jax.serving.runtime import ExportedModel, ExportError
from autoheri_jax.serving.scoring_data import ScoringData, open_rows

OUT_FORMATS = (".csv", ".parquet")


def _lookup(model: ExportedModel, field: str, raw_ids: np.ndarray) -> np.ndarray:
    """Stored index -> export row for one field: index 0 (field absent) -> the OOV row."""
    return np.concatenate([[0], model.vocabs[field].index(raw_ids)]).astype(np.int32)


def _few(names, k: int = 8) -> str:
    names = list(names)
    if len(names) <= k:
        return str(names)
    return f"[{', '.join(map(repr, names[:k]))}, ... ({len(names)} in all)]"


class _Plan:
    """Where each input of the export comes from in the data, and its lookup table."""

    def __init__(self, model: ExportedModel, data: ScoringData):
        rows = data.rows
        single = {f: j for j, f in enumerate(rows.field_names)}
        bags = {b.name: b for b in rows.bags}
        missing = [f for f in [*model.fields, *model.bag_fields] if f not in single | bags]
        missing += [d for d in model.dense if d not in rows.dense_names]
        if missing:
            raise ExportError(
                f"{data.source} ({data.format}) lacks {len(missing)} column(s) the model reads: "
                f"{_few(missing)}; it has fields {_few(rows.field_names)}, bag fields "
                f"{_few(list(bags))} and dense columns {_few(rows.dense_names)}"
            )
        self.model, self.rows, self.single, self.bags = model, rows, single, bags
        self.luts = {
            f: _lookup(model, f, data.vocabs[f]) for f in [*model.fields, *model.bag_fields]
        }
        self.dense = [rows.dense_names.index(d) for d in model.dense]

    def _bag(self, field: str, idx: np.ndarray, sparse: np.ndarray, max_len: int):
        """[B, max_len] export rows, values, mask of `field` for data rows idx."""
        lut = self.luts[field]
        if field in self.bags:
            ids, values, mask = self.bags[field].gather(idx, max_len)
            return lut[ids], values, mask
        stored = sparse[:, self.single[field]]
        shape = (len(idx), max_len)
        ids, values, mask = (
            np.zeros(shape, np.int32),
            np.zeros(shape, np.float32),
            np.zeros(shape, np.float32),
        )
        present = stored > 0
        ids[:, 0], values[:, 0], mask[:, 0] = lut[stored], present, present
        return ids, values, mask

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        sparse = np.asarray(self.rows.sparse[idx])  # one gather of the rows, then columns
        cols = []
        for f in self.model.fields:
            if f in self.single:
                cols.append(self.luts[f][sparse[:, self.single[f]]])
            else:
                ids, _, mask = self._bag(f, idx, sparse, 1)
                cols.append(np.where(mask[:, 0] > 0, ids[:, 0], 0).astype(np.int32))
        out = {"sparse": np.stack(cols, axis=1)}
        if self.model.bag_fields:
            parts = [
                self._bag(b["name"], idx, sparse, b["max_len"])
                for b in self.model.schema["bag_fields"]
            ]
            for k, name in enumerate(("bag_ids", "bag_values", "bag_mask")):
                out[name] = np.stack([p[k] for p in parts], axis=1)
        if self.dense:
            out["dense"] = np.asarray(self.rows.dense[idx][:, self.dense], np.float32)
        return out


def write_table(columns: dict[str, np.ndarray], out: Path) -> None:
    """Writes `columns` (name -> [N]) to `out`, Parquet for a .parquet suffix, else CSV."""
    import pyarrow as pa

    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    with replacing_file(out) as tmp:  # a crash never leaves half a file under `out`
        if out.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp)


def predict_file(
    model: ExportedModel,
    data: str | Path,
    out: str | Path,
    *,
    fmt: str = "auto",
    on_bad_row: str = "strict",
    split: str = "test",
    batch_size: int = 4096,
    progress: bool = True,
) -> dict:
    """Scores every row of `data` with `model` into `out`; returns a summary {rows, format,
    bad_rows, out, seconds}. fmt, on_bad_row and split are `open_rows`'s. `out` must not be
    (or resolve to, or lie inside) `data` or the export: OutputError, before any work.
    ExportError for an `out` suffix other than .csv / .parquet, a batch_size < 1, or data
    that lacks a column the model reads."""
    out = refuse_overlap(out, {"--data": data, "--model": model.root}, "--out")
    if out.suffix.lower() not in OUT_FORMATS:
        raise ExportError(f"--out {out.name}: the extension picks the format, one of {OUT_FORMATS}")
    if batch_size < 1:
        raise ExportError(f"batch size must be >= 1, got {batch_size}")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".autoheri-predict-") as tmp:
        scoring = open_rows(
            data, tmp, fmt=fmt, on_bad_row=on_bad_row, split=split, progress=progress
        )
        plan = _Plan(model, scoring)
        n = scoring.rows.num_rows
        starts = range(0, n, batch_size)
        meter = Progress(len(starts), "predict", enabled=progress)
        cond, entire = [], []
        for k, start in enumerate(starts):
            c, e = model.run(plan.batch(np.arange(start, min(start + batch_size, n))))
            cond.append(c)
            entire.append(e)
            meter.update(k + 1)
    t = len(model.stage_names)
    cond_all = np.concatenate(cond) if cond else np.zeros((0, t), np.float32)
    entire_all = np.concatenate(entire) if entire else np.zeros((0, t), np.float32)
    write_table(model.named(cond_all, entire_all), out)
    return {
        "rows": n,
        "format": scoring.format,
        "bad_rows": scoring.bad_rows,
        "out": str(out),
        "seconds": time.perf_counter() - t0,
    }
