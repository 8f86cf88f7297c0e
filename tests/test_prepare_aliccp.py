"""prepare_aliccp_raw: raw Ali-CCP files written here -> store, checked row by row."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from autoheri_jax.data import aliccp_raw
from autoheri_jax.data.aliccp_raw import (
    BAG_FIELDS,
    FIELDS,
    ITEM_BAGS,
    ITEM_SINGLE,
    USER_BAGS,
    USER_SINGLE,
    prepare_aliccp_raw,
)
from autoheri_jax.data.errors import DataFormatError
from autoheri_jax.data.store import StoreError, open_split
from tests import background
from tests.helpers import mutate_line

SKEL = {"train": "sample_skeleton_train.csv", "test": "sample_skeleton_test.csv"}
COMMON = {"train": "common_features_train.csv", "test": "common_features_test.csv"}


def _flist(feats) -> str:
    return "\x01".join(f"{f}\x02{i}\x03{v}" for f, i, v in feats)


def make_raw(n_train=300, n_test=100, n_users=20, seed=0) -> dict:
    """Raw Ali-CCP-like data: {"users": {split: {key: feats}}, "rows": {split: [...]},
    "lines": {file name: [line bytes]}}; feats are (field, id, value) in file order."""
    rng = np.random.default_rng(seed)
    data = {"users": {}, "rows": {}, "lines": {}}
    for split, n in (("train", n_train), ("test", n_test)):
        users = {}
        for u in range(n_users):
            feats = [(f, 100 * k + int(rng.integers(0, 4)), 1.0) for k, f in enumerate(USER_SINGLE)]
            feats = [x for x in feats if rng.random() > 0.15]  # some single fields absent
            for f in USER_BAGS:
                n_bag = int(rng.integers(0, 4)) if u % 5 else 0  # every 5th user: empty bags
                feats += [
                    (f, int(rng.integers(0, 30)), round(float(rng.random()), 3))
                    for _ in range(n_bag)
                ]
            feats.append(("150_14", 1000 + u, 0.5))  # weight = the user's train rows
            if u % 7 == 3:
                feats.append(("999", 1, 1.0))  # an unknown field: ignored, counted
            rng.shuffle(feats)
            users[f"{split}{u:06x}"] = feats
        rows, keys = [], sorted(users)
        for i in range(n):
            click = int(rng.random() < 0.4)
            conv = int(click and rng.random() < 0.4)
            offset = 5000 if split == "test" and i % 4 == 0 else 0  # test-only item ids
            feats = [(f, offset + int(rng.zipf(1.5)) % 40, 1.0) for f in ITEM_SINGLE]
            feats = [x for x in feats if x[0] != "702" or i % 3]  # 702 sometimes absent
            for f, top in zip(ITEM_BAGS, (3, 2), strict=True):
                feats += [
                    (f, int(rng.integers(0, 20)), round(float(rng.random()), 3))
                    for _ in range(int(rng.integers(0, top + 1)))
                ]
            rows.append((i, click, conv, keys[int(rng.integers(0, n_users))], feats))
        data["users"][split], data["rows"][split] = users, rows
        data["lines"][COMMON[split]] = [
            f"{k},{len(v)},{_flist(v)}".encode() for k, v in users.items()
        ]
        data["lines"][SKEL[split]] = [
            f"{i},{c},{v},{k},{len(fs)},{_flist(fs)}".encode() for i, c, v, k, fs in rows
        ]
    return data


def write_raw(root: Path, lines: dict, newline_at_end: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, ls in lines.items():
        (root / name).write_bytes(b"\n".join(ls) + (b"\n" if newline_at_end else b""))
    return root


@pytest.fixture(scope="module")
def raw():
    return make_raw()


def prepare(raw_dir, out, **kw):
    kw.setdefault("progress", False)
    return prepare_aliccp_raw(raw_dir, out, **kw)


def valid_mask(n: int, seed: int, fraction: float) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < fraction


def raw_single(feats, field):
    ids = [i for f, i, _ in feats if f == field]
    return ids[0] if ids else None


def raw_bag(feats, field):
    return [(i, v) for f, i, v in feats if f == field]


def test_round_trip(raw, tmp_path):
    src, out = write_raw(tmp_path / "raw", raw["lines"]), tmp_path / "store"
    m = prepare(src, out, min_count=1, valid_fraction=0.2, seed=3)
    assert m["format"] == "aliccp_raw" and m["fields"] == FIELDS and m["bag_fields"] == BAG_FIELDS
    assert len(FIELDS) + len(BAG_FIELDS) == 23 and m["dense_fields"] == []
    assert m["bad_rows"] == {} and m["ignored_fields"]["999"] > 0
    assert m["options"] == {
        "min_count": 1,
        "valid_fraction": 0.2,
        "seed": 3,
        "on_bad_row": "strict",
    }
    for name in raw["lines"]:
        digest = hashlib.sha256((src / name).read_bytes()).hexdigest()
        assert m["source"][name] == {"bytes": (src / name).stat().st_size, "sha256": digest}
    assert not (out / "_tmp").exists()
    vocab = {f: np.load(out / "vocab" / f"{f}.npy") for f in FIELDS + BAG_FIELDS}
    assert all(m["vocab_sizes"][f] == len(v) + 1 for f, v in vocab.items())
    is_valid = valid_mask(300, 3, 0.2)
    expected = {
        "train": [r for r, v in zip(raw["rows"]["train"], is_valid, strict=True) if not v],
        "valid": [r for r, v in zip(raw["rows"]["train"], is_valid, strict=True) if v],
        "test": raw["rows"]["test"],
    }
    assert m["splits"]["train"]["rows"] + m["splits"]["valid"]["rows"] == 300
    empty_bags = 0
    for split, rows in expected.items():
        ds = open_split(out, split)
        assert ds.num_rows == len(rows) == m["splits"][split]["rows"]
        assert ds.labels.tolist() == [[c, v] for _, c, v, _, _ in rows]
        bags = {b.name: b for b in ds.bags}
        for r, (_, _, _, key, item) in enumerate(rows):
            feats = raw["users"]["test" if split == "test" else "train"][key] + item
            for j, f in enumerate(FIELDS):
                want, got = raw_single(feats, f), int(ds.sparse[r, j])
                if got:
                    assert vocab[f][got - 1] == want
                else:  # absent, or (valid / test) never seen in the train split
                    assert want is None or (split != "train" and want not in vocab[f])
            for f in BAG_FIELDS:
                b = bags[f]
                assert (b.row_of is not None) == (f in USER_BAGS)  # user bags: shared
                ids, vals = b.row(r)
                want = raw_bag(feats, f)
                empty_bags += not want
                assert len(ids) == len(want)
                assert np.array_equal(vals, np.float32([v for _, v in want]))
                for got, (i, _) in zip(ids, want, strict=True):
                    assert (
                        (vocab[f][got - 1] == i)
                        if got
                        else (split != "train" and i not in vocab[f])
                    )
    assert empty_bags > 0


def test_min_count_and_test_only_ids(raw, tmp_path):
    src, out = write_raw(tmp_path / "raw", raw["lines"]), tmp_path / "store"
    prepare(src, out, min_count=12, valid_fraction=0.25, seed=1)
    rows = [r for r, v in zip(raw["rows"]["train"], valid_mask(300, 1, 0.25), strict=True) if not v]
    for f in ("205", "150_14", "101"):
        counts: dict[int, int] = {}
        for _, _, _, key, item in rows:
            for g, i, _ in raw["users"]["train"][key] + item:
                if g == f:
                    counts[i] = counts.get(i, 0) + 1
        want = sorted(i for i, c in counts.items() if c >= 12)
        assert np.load(out / "vocab" / f"{f}.npy").tolist() == want
        assert any(c < 12 for c in counts.values()) or f == "101"  # rare ids exist
    test = open_split(out, "test")
    col = test.sparse[:, FIELDS.index("205")]
    assert (col[::4] == 0).all()  # every 4th test row has test-only item ids
    assert (col[1::4] > 0).any()


def test_valid_split_deterministic_in_seed(raw, tmp_path):
    src = write_raw(tmp_path / "raw", raw["lines"])
    a = prepare(src, tmp_path / "a", seed=5)
    b = prepare(src, tmp_path / "b", seed=5, chunk_rows=7)  # chunking changes nothing
    c = prepare(src, tmp_path / "c", seed=6)
    names = ("labels.npy", "sparse.npy", "bag.210.values.npy")
    paths = [f"{split}/{name}" for split in ("train", "valid", "test") for name in names]
    paths += ["train/side.train.row.npy", "valid/side.train.row.npy", "test/side.test.row.npy"]
    paths += [f"side.{s}/bag.150_14.{c}.npy" for s in ("train", "test") for c in ("ids", "offsets")]
    for path in paths:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()
    assert (
        a["splits"] == b["splits"] and a["splits"]["valid"]["rows"] == valid_mask(300, 5, 0.1).sum()
    )
    assert not np.array_equal(
        open_split(tmp_path / "a", "valid").labels, open_split(tmp_path / "c", "valid").labels
    )
    assert c["splits"]["valid"]["rows"] == valid_mask(300, 6, 0.1).sum()


def test_idempotent_and_rebuilds_unfinished(raw, tmp_path, capsys):
    src, out = write_raw(tmp_path / "raw", raw["lines"]), tmp_path / "store"
    first = prepare(src, out)
    cols = sorted(out.glob("*/*.npy"))
    mtimes = [p.stat().st_mtime_ns for p in cols]
    capsys.readouterr()
    assert prepare(src, out) == first
    assert "nothing to do" in capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in cols] == mtimes
    (out / "manifest.json").unlink()  # a crash before the manifest: rebuilt from scratch
    (out / "train" / "junk.npy").write_bytes(b"x")
    again = prepare(src, out)
    assert not (out / "train" / "junk.npy").exists() and again["splits"] == first["splits"]
    with pytest.raises(StoreError, match="other files or options"):
        prepare(src, out, min_count=2)  # never replaces a finished store silently


def test_refuses_to_delete_a_foreign_directory(raw, tmp_path):
    src = write_raw(tmp_path / "raw", raw["lines"])
    with pytest.raises(StoreError, match="not a store"):
        prepare(src, src)
    assert (src / SKEL["train"]).is_file()


def _bad(lines, name, idx, fn):
    lines = {k: list(v) for k, v in lines.items()}
    lines[name][idx] = fn(lines[name][idx])
    return lines


def _replace_entry(line: bytes, k: int, fn) -> bytes:
    head, flist = line.rsplit(b",", 1)
    entries = flist.split(b"\x01")
    entries[k] = fn(entries[k])
    return head + b"," + b"\x01".join(entries)


def _set_col(k: int, value: bytes):
    return lambda line: b",".join([*(c := line.split(b",", 5))[:k], value, *c[k + 1 :]])


def _entry(k: int, fn):
    return lambda line: _replace_entry(line, k, fn)


def _repeat_205(line: bytes) -> bytes:
    c = line.split(b",", 5)
    return b",".join([*c[:4], b"%d" % (int(c[4]) + 1), c[5] + b"\x01205\x027\x031.0"])


def _huge_id(entry: bytes) -> bytes:
    name, rest = entry.split(b"\x02")
    return name + b"\x02" + b"9" * 20 + b"\x03" + rest.split(b"\x03")[1]


BAD = {  # reason -> (file, 0-based line, mutation)
    "wrong field count": (SKEL["train"], 4, lambda s: s.split(b",", 1)[1]),
    "non-integer id": (SKEL["train"], 17, _entry(1, lambda e: e.replace(b"\x02", b"\x02x"))),
    "id too large": (SKEL["train"], 21, _entry(1, _huge_id)),  # an integer, not int64
    "bad value": (SKEL["test"], 9, _entry(0, lambda e: e + b"z")),
    "label not 0/1": (SKEL["train"], 30, _set_col(1, b"2")),
    "conversion without click": (
        SKEL["train"],
        40,
        lambda s: _set_col(2, b"1")(_set_col(1, b"0")(s)),
    ),
    "unknown common_feature_index": (SKEL["test"], 2, _set_col(3, b"nobody")),
    "feature_count mismatch": (SKEL["train"], 60, _set_col(4, b"99")),
    "not UTF-8": (SKEL["train"], 70, lambda s: s[:-3] + b"\xff\xfe" + s[-3:]),
    "field 205 repeated": (SKEL["train"], 80, _repeat_205),
    "malformed feature entry": (
        SKEL["train"],
        90,
        _entry(2, lambda e: e.replace(b"\x03", b"\x02")),
    ),
    "duplicate common_feature_index": (COMMON["train"], 6, lambda s: b"train000000" + s[11:]),
}


SMALL_CHUNKS = ["wrong field count", "not UTF-8", "field 205 repeated", "bad value"]


@pytest.mark.parametrize(
    ("reason", "chunk_rows"),
    [(r, 100_000) for r in sorted(BAD)] + [(r, 16) for r in SMALL_CHUNKS],  # line numbers
)
def test_bad_rows(raw, tmp_path, reason, chunk_rows):
    name, idx, fn = BAD[reason]
    src = write_raw(tmp_path / "raw", _bad(raw["lines"], name, idx, fn))
    with pytest.raises(DataFormatError) as e:
        prepare(src, tmp_path / "strict", chunk_rows=chunk_rows)
    assert str(src / name) in str(e.value) and f"{name}:{idx + 1}: {reason}" in str(e.value)
    assert (e.value.file, e.value.line, e.value.reason) == (str(src / name), idx + 1, reason)
    m = prepare(src, tmp_path / "skip", on_bad_row="skip", chunk_rows=chunk_rows)
    assert m["bad_rows"][reason] == 1
    split = "test" if "test" in name else "train"
    rows = sum(s["rows"] for k, s in m["splits"].items() if (k == "test") == (split == "test"))
    if name.startswith("sample"):
        assert rows == len(raw["rows"][split]) - 1 and len(m["bad_rows"]) == 1


def test_bad_common_row_skips_its_users_rows(raw, tmp_path):
    bad = _bad(raw["lines"], COMMON["train"], 3, lambda s: s.replace(b"\x03", b"\x03q", 1))
    src = write_raw(tmp_path / "raw", bad)
    with pytest.raises(DataFormatError, match=rf"{COMMON['train']}:4: bad value"):
        prepare(src, tmp_path / "strict")
    m = prepare(src, tmp_path / "skip", on_bad_row="skip")
    n_refs = sum(r[3] == "train000003" for r in raw["rows"]["train"])
    assert m["bad_rows"] == {"bad value": 1, "unknown common_feature_index": n_refs} and n_refs


def test_truncated_last_line(raw, tmp_path):
    lines = {k: list(v) for k, v in raw["lines"].items()}
    lines[SKEL["test"]][-1] = lines[SKEL["test"]][-1][:25]
    src = write_raw(tmp_path / "raw", lines, newline_at_end=False)
    with pytest.raises(DataFormatError, match=rf"{SKEL['test']}:100: truncated last line"):
        prepare(src, tmp_path / "strict")
    m = prepare(src, tmp_path / "skip", on_bad_row="skip")
    assert m["bad_rows"] == {"truncated last line": 1} and m["splits"]["test"]["rows"] == 99
    whole = write_raw(tmp_path / "whole", raw["lines"], newline_at_end=False)  # parses: kept
    assert prepare(whole, tmp_path / "whole_store")["splits"]["test"]["rows"] == 100


@pytest.mark.parametrize("name", [SKEL["train"], COMMON["test"]])
@pytest.mark.parametrize("mode", ["strict", "skip"])
def test_empty_file_always_errors(raw, tmp_path, name, mode):
    src = write_raw(tmp_path / "raw", raw["lines"])
    (src / name).write_bytes(b"")
    with pytest.raises(DataFormatError, match=rf"{name}: empty file"):
        prepare(src, tmp_path / "store", on_bad_row=mode)


def test_missing_file_and_no_valid_rows(raw, tmp_path):
    src = write_raw(tmp_path / "raw", raw["lines"])
    (src / COMMON["test"]).unlink()
    with pytest.raises(DataFormatError, match=rf"{COMMON['test']}: no such file") as e:
        prepare(src, tmp_path / "store")
    assert e.value.file == str(src / COMMON["test"]) and e.value.line is None
    write_raw(src, {COMMON["test"]: [b"x,y"] * 3})
    with pytest.raises(DataFormatError, match=rf"{COMMON['test']}: no valid rows"):
        prepare(src, tmp_path / "store", on_bad_row="skip")


def test_progress_lines(raw, tmp_path, capsys):
    src = write_raw(tmp_path / "raw", raw["lines"])
    prepare(src, tmp_path / "store", progress=True)
    err = capsys.readouterr().err
    assert "prepare train: 300 rows," in err and "rows/s" in err and "MB/s" in err


def test_clean_data_never_takes_the_line_by_line_path(raw, tmp_path, monkeypatch):
    def refuse(*_):
        raise AssertionError("the per-line check ran on clean data (slow path)")

    monkeypatch.setattr(aliccp_raw._Parser, "_check", refuse)
    src = write_raw(tmp_path / "raw", raw["lines"])
    assert prepare(src, tmp_path / "store", chunk_rows=64)["splits"]["test"]["rows"] == 100


def test_fast_path_and_line_check_agree(raw):
    """A line passes the vectorized parse iff the per-line check finds nothing wrong with it."""
    rng = np.random.default_rng(0)
    alphabet = [b"\x01", b"\x02", b"\x03", b",", b"0", b"1", b"7", b".", b"-", b"e", b" ", b"\xff"]
    keys = {k.encode(): i for i, k in enumerate(raw["users"]["train"])}
    cases = 0
    for name in (SKEL["train"], COMMON["train"]):
        lines = raw["lines"][name]
        for _ in range(400):
            line = mutate_line(rng, lines, alphabet)
            skeleton = name.startswith("sample")
            index = dict(keys) if skeleton else {}
            p = aliccp_raw._Parser(Path(name), skeleton, True, index, Counter(), Counter())
            problem = p._problem(bytes(line), set())
            assert (p._fast([bytes(line)]) is None) == (problem is not None), (bytes(line), problem)
            cases += problem is not None
    assert cases > 300  # most mutations break a line; some (e.g. in a value) keep it valid


def test_failed_run_leaves_nothing_and_an_old_unfinished_store_is_rebuilt(raw, tmp_path):
    """A store is built beside --out and renamed in complete (issue 33): a failure after the
    train / valid columns were written leaves nothing at --out, nor beside it. What an older
    version's interrupted conversion left at --out (columns, no manifest) is rebuilt."""
    name, idx, fn = BAD["bad value"]  # in the test skeleton: train / valid are written by then
    bad = write_raw(tmp_path / "bad", _bad(raw["lines"], name, idx, fn))
    out = tmp_path / "store"
    with pytest.raises(DataFormatError):
        prepare(bad, out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    (out / "train").mkdir(parents=True)
    (out / "train" / "sparse.npy").write_bytes(b"half")
    with pytest.raises(StoreError, match="not a finished store"):
        open_split(out, "train")
    m = prepare(write_raw(tmp_path / "good", raw["lines"]), out)
    assert m["splits"]["test"]["rows"] == 100 and not (out / "_tmp").exists()


def test_skip_many_bad_rows_keeps_every_good_row(raw, tmp_path):
    lines = {k: list(v) for k, v in raw["lines"].items()}
    bad_at = {
        3: "wrong field count",
        64: "label not 0/1",
        65: "feature_count mismatch",
        200: "not UTF-8",
        299: "field 205 repeated",
    }
    for i, reason in bad_at.items():
        lines[SKEL["train"]][i] = BAD[reason][2](lines[SKEL["train"]][i])
    m = prepare(write_raw(tmp_path / "raw", lines), tmp_path / "store", on_bad_row="skip", seed=2)
    assert m["bad_rows"] == dict.fromkeys(bad_at.values(), 1)
    kept = [r for i, r in enumerate(raw["rows"]["train"]) if i not in bad_at]
    is_valid = valid_mask(len(kept), 2, 0.1)
    for split, want in (("train", ~is_valid), ("valid", is_valid)):
        labels = [[c, v] for (_, c, v, _, _), w in zip(kept, want, strict=True) if w]
        assert open_split(tmp_path / "store", split).labels.tolist() == labels


def test_user_bags_are_stored_once_per_user(raw, tmp_path):
    src, out = write_raw(tmp_path / "raw", raw["lines"]), tmp_path / "store"
    m = prepare(src, out, min_count=1, valid_fraction=0.2, seed=3)
    assert m["side_tables"] == {
        f"side.{s}": {"rows": 20, "bag_fields": USER_BAGS} for s in ("train", "test")
    }
    assert m["bag_tables"] == {
        "train": dict.fromkeys(USER_BAGS, "side.train"),
        "valid": dict.fromkeys(USER_BAGS, "side.train"),
        "test": dict.fromkeys(USER_BAGS, "side.test"),
    }
    for s in ("train", "test"):
        users = raw["users"][s]
        for f in USER_BAGS:
            ids = np.load(out / f"side.{s}" / f"bag.{f}.ids.npy")
            assert len(ids) == sum(len(raw_bag(feats, f)) for feats in users.values())
            assert not (out / s / f"bag.{f}.ids.npy").exists()  # nothing per impression
        assert sorted(p.name for p in (out / s).glob("side.*")) == [f"side.{s}.row.npy"]
        for f in ITEM_BAGS:  # item bags stay per row
            assert (out / s / f"bag.{f}.ids.npy").is_file()
    is_valid = valid_mask(300, 3, 0.2)
    rows = {
        "train": [r for r, v in zip(raw["rows"]["train"], is_valid, strict=True) if not v],
        "valid": [r for r, v in zip(raw["rows"]["train"], is_valid, strict=True) if v],
        "test": raw["rows"]["test"],
    }
    for split, want in rows.items():
        ds = open_split(out, split)
        keys = sorted(raw["users"]["test" if split == "test" else "train"])
        for b in ds.bags:
            if b.name in USER_BAGS:  # row_of is the user's common row (the file is in key order)
                assert b.row_of is ds.bags[-1].row_of  # one column for the four fields
                assert b.row_of.dtype == np.int32 and len(b.starts) == 20
                assert b.row_of.tolist() == [keys.index(r[3]) for r in want]
    first = [r[3] for r in rows["train"]]
    k = next(i for i in range(1, len(first)) if first[i] in first[:i])  # a user's second row
    j = first.index(first[k])
    train = open_split(out, "train")
    batch = train.batch(np.array([j, k]))
    np.testing.assert_array_equal(batch["bag_ids"][0, 2:], batch["bag_ids"][1, 2:])  # user bags
    # a raw-size store: the user bags would have been copied once per impression
    per_impression = sum(
        sum(int(b.ends[b.row_of[r]] - b.starts[b.row_of[r]]) for r in range(train.num_rows))
        for b in train.bags
        if b.row_of is not None
    )
    assert per_impression > 5 * sum(len(b.ids) for b in train.bags if b.row_of is not None)


@background.job
def store_run(tmp: Path) -> Path:
    """`autoheri run` (its own process) on a store prepared from make_raw()'s files."""
    src, out = write_raw(tmp / "raw", make_raw()["lines"]), tmp / "store"
    prepare(src, out, min_count=2)
    wd = tmp / "run"
    background.cli(
        "run",
        "--config",
        "experiments/configs/samples.py",
        "--workdir",
        wd,
        "--data",
        out,
        "--no-progress",
    )
    return wd


@pytest.mark.slow
@background.uses(store_run)  # the run is a background job (tests/background.py)
def test_prepared_store_trains():
    wd = store_run.result()
    res = json.loads((wd / "results.json").read_text())
    assert res["data"]["train"]["bag_fields"] == len(BAG_FIELDS)
    assert res["data"]["test"]["rows"] == 100
