"""Readers of the processed peer formats: detection, exact sample counts, bad input, the store."""

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from autoheri_jax.data.errors import DataFormatError
from autoheri_jax.data.formats import (
    ENGINES,
    FORMATS,
    convert_processed,
    detect_format,
    find_split_files,
)
from autoheri_jax.data.store import StoreError, is_finished, open_split
from autoheri_jax.data.vocab import load_vocabularies

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"the shared real data samples are not at {DATA}"
)

# sample dir -> (format, on_bad_row, {split: (rows, clicks, conversions)}, bad_rows); the counts
# are the ones /work/shared/data/README.md states. PaddleRec's AITM demo rows with purchase=1 and
# click=0 (train 2 of 48, test 3 of 50) are skipped, leaving 3 - 2 and 3 - 3 purchases.
SAMPLES = {
    "ali-ccp/torch-rechub": (
        "rechub_aliccp",
        "strict",
        {"train": (100, 7, 1), "valid": (50, 3, 1), "test": (50, 2, 1)},
        {},
    ),
    "ali-ccp/paddlerec-aitm": (
        "paddle_aitm",
        "skip",
        {"train": (46, 3, 1), "test": (47, 3, 0)},
        {"conversion without click": 5},
    ),
    "ali-ccp/paddlerec-esmm": (
        "paddle_esmm",
        "strict",
        {"train": (10, 2, 1), "test": (10, 1, 0)},
        {},
    ),
    "aliexpress/torch-rechub": (
        "aliexpress",
        "strict",
        {"train": (100, 60, 2), "test": (20, 10, 2)},
        {},
    ),
    "aliexpress/fuxictr-tiny_mtl": (
        "aliexpress",
        "strict",
        {"train": (100, 3, 2), "test": (100, 6, 1)},
        {},
    ),
}

AITM_HEADER = (
    "click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,216,508,509,702,853,301"
)
AX_HEADER = ",".join(
    ["search_id"]
    + [f"categorical_{i}" for i in range(1, 17)]
    + [f"numerical_{i}" for i in range(1, 64)]
    + ["click", "conversion"]
)


def _aitm_row(i: int, click: int = 0, buy: int = 0) -> str:
    return ",".join([str(click), str(buy), *(str((i * 7 + k) % 5) for k in range(18))])


def _ax_row(i: int, click: int = 0, conv: int = 0) -> str:
    cats = [str((i + k) % 3) for k in range(16)]
    nums = [f"{((i * 13 + k) % 10) / 10:.3f}" for k in range(63)]
    return ",".join([str(1000 + i), *cats, *nums, str(click), str(conv)])


def _write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_bytes(("\n".join(lines) + end).encode())
    return path


def _counts(root: Path, split: str) -> tuple[int, int, int]:
    ds = open_split(root, split)
    lab = np.asarray(ds.labels)
    return ds.num_rows, int(lab[:, 0].sum()), int(lab[:, 1].sum())


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


# ---------------------------------------------------------------------------- real samples


@needs_data
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_detects_each_sample_file(sample):
    fmt = SAMPLES[sample][0]
    assert fmt in FORMATS
    assert detect_format(DATA / sample) == fmt
    files = find_split_files(DATA / sample)
    assert set(files) == set(SAMPLES[sample][2])
    for f in files.values():
        assert detect_format(f) == fmt, f


@needs_data
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_sample_counts_match_readme(sample, tmp_path):
    fmt, on_bad, expected, bad_rows = SAMPLES[sample]
    # valid_fraction stays at its default: a val file must win over carving (ali-ccp rechub)
    vf = 0.1 if "valid" in expected else 0.0
    m = convert_processed(DATA / sample, tmp_path / "s", valid_fraction=vf, on_bad_row=on_bad)
    assert m["format"] == fmt and m["stage_names"] == ["click", "conversion"]
    assert set(m["splits"]) == set(expected)
    assert m["valid_from"] == ("file" if "valid" in expected else None)
    assert m["bad_rows"] == bad_rows
    for split, (rows, clicks, convs) in expected.items():
        assert _counts(tmp_path / "s", split) == (rows, clicks, convs), split
        ds = open_split(tmp_path / "s", split)
        assert ds.sparse.dtype == np.int32 and ds.sparse.shape == (rows, len(m["fields"]))
        assert ds.dense.dtype == np.float32 and ds.dense.shape == (rows, len(m["dense_fields"]))
        assert ds.labels.dtype == np.int8 and ds.labels.shape == (rows, 2)
        assert np.all(ds.labels[:, 1] <= ds.labels[:, 0])  # cumulative funnel
        for f, size in zip(ds.field_names, ds.vocab_sizes, strict=True):
            assert ds.sparse[:, ds.field_names.index(f)].max() < size
    for name, info in m["source"].items():
        assert info["bytes"] == (DATA / sample / name).stat().st_size
        assert len(info["sha256"]) == 64


@needs_data
def test_aitm_strict_names_first_purchase_without_click(tmp_path):
    train = DATA / "ali-ccp/paddlerec-aitm/train.csv"
    lines = train.read_text().splitlines()
    first = next(i for i, t in enumerate(lines, 1) if t.startswith("0,1,"))
    with pytest.raises(DataFormatError, match="conversion without click") as info:
        convert_processed(train.parent, tmp_path / "s", valid_fraction=0)
    assert info.value.file == str(train) and info.value.line == first
    assert str(info.value).startswith(f"{train}:{first}: ")


@needs_data
@pytest.mark.parametrize("sample", ["ali-ccp/torch-rechub", "aliexpress/fuxictr-tiny_mtl"])
def test_dense_and_ids_round_trip(sample, tmp_path):
    m = convert_processed(DATA / sample, tmp_path / "s", valid_fraction=0)
    vocabs = load_vocabularies(tmp_path / "s", m["fields"])
    files = find_split_files(DATA / sample)
    for split, path in files.items():
        header, rows = _read_csv(path)
        ds = open_split(tmp_path / "s", split)
        dense_cols = [header.index(d) for d in m["dense_fields"]]
        want = np.array([[float(r[c]) for c in dense_cols] for r in rows], np.float32)
        np.testing.assert_array_equal(np.asarray(ds.dense), want)
        for j, f in enumerate(m["fields"]):
            raw = np.array([int(r[header.index(f)]) for r in rows])
            ids = np.asarray(ds.sparse[:, j])
            known = np.isin(raw, vocabs[f])
            assert np.all((ids > 0) == known), (split, f)
            np.testing.assert_array_equal(vocabs[f][ids[known] - 1], raw[known])
            if split == "train":
                assert known.all()  # min_count=1: every train id has its own row
                assert m["vocab_sizes"][f] == len(np.unique(raw)) + 1


@needs_data
def test_esmm_bags_keep_every_token(tmp_path):
    m = convert_processed(DATA / "ali-ccp/paddlerec-esmm", tmp_path / "s", valid_fraction=0)
    assert "150_14" in m["bag_fields"] and "150_14" not in m["fields"]
    assert len(m["fields"]) + len(m["bag_fields"]) == 22 and m["dense_fields"] == []
    vocabs = load_vocabularies(tmp_path / "s", m["fields"] + m["bag_fields"])
    for split, path in find_split_files(DATA / "ali-ccp/paddlerec-esmm").items():
        ds = open_split(tmp_path / "s", split)
        bags = {b.name: b for b in ds.bags}
        for r, line in enumerate(path.read_text().splitlines()):
            toks = [t.split(":") for t in line.split(",")[3:]]  # the first token too
            for b in m["bag_fields"]:
                raw = [int(v) for f, v in toks if f == b]
                bag = bags[b]
                ids = np.asarray(bag.ids[bag.starts[r] : bag.ends[r]])
                assert len(ids) == len(raw), (split, r, b)
                np.testing.assert_array_equal(vocabs[b][ids - 1], raw)
                assert np.all(bag.values[bag.starts[r] : bag.ends[r]] == 1.0)
            for j, f in enumerate(m["fields"]):
                raw = [int(v) for f2, v in toks if f2 == f]
                got = int(ds.sparse[r, j])
                assert got == 0 if not raw else vocabs[f][got - 1] == raw[0], (split, r, f)
    # (toks starts at the first field:id token, which PaddleRec's reader drops: it is kept here)


@needs_data
def test_carving_is_seeded_and_vocab_is_train_only(tmp_path):
    src = DATA / "aliexpress/torch-rechub"
    a = convert_processed(src, tmp_path / "a", valid_fraction=0.2, seed=3)
    convert_processed(src, tmp_path / "b", valid_fraction=0.2, seed=3)
    c = convert_processed(src, tmp_path / "c", valid_fraction=0.2, seed=4)
    assert a["valid_from"] == "train" and a["splits"]["valid"]["rows"] == 20
    assert a["splits"]["train"]["rows"] == 80 and a["splits"]["test"]["rows"] == 20
    va, vb, vc = (open_split(tmp_path / k, "valid") for k in "abc")
    np.testing.assert_array_equal(np.asarray(va.sparse), np.asarray(vb.sparse))
    np.testing.assert_array_equal(np.asarray(va.dense), np.asarray(vb.dense))
    assert not np.array_equal(np.asarray(va.dense), np.asarray(vc.dense))
    # train + valid rows are exactly the file's rows (dense rows are unique here)
    _, rows = _read_csv(src / "aliexpress_train_sample.csv")
    tr = open_split(tmp_path / "a", "train")
    both = np.concatenate([np.asarray(tr.dense), np.asarray(va.dense)])
    want = np.array([[float(x) for x in r[17:80]] for r in rows], np.float32)
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, want.tolist()))
    # every vocab entry occurs in the carved train split (ids seen only in valid map to 0)
    for j, f in enumerate(a["fields"]):
        assert set(np.unique(tr.sparse[:, j])) == set(range(1, a["vocab_sizes"][f]))
    assert c["splits"]["valid"]["rows"] == 20


@needs_data
def test_min_count_maps_rare_ids_to_zero(tmp_path):
    src = DATA / "aliexpress/torch-rechub"
    m = convert_processed(src, tmp_path / "s", valid_fraction=0, min_count=5)
    header, rows = _read_csv(src / "aliexpress_train_sample.csv")
    vocabs = load_vocabularies(tmp_path / "s", m["fields"])
    ds = open_split(tmp_path / "s", "train")
    for j, f in enumerate(m["fields"]):
        counts = Counter(int(r[header.index(f)]) for r in rows)
        assert sorted(k for k, n in counts.items() if n >= 5) == list(vocabs[f])
        rare = np.array([counts[int(r[header.index(f)])] < 5 for r in rows])
        assert np.all((np.asarray(ds.sparse[:, j]) == 0) == rare)


@needs_data
def test_idempotent_and_guards(tmp_path):
    src, out = DATA / "aliexpress/torch-rechub", tmp_path / "s"
    m1 = convert_processed(src, out, valid_fraction=0)
    stamp = (out / "train" / "labels.npy").stat().st_mtime_ns
    assert convert_processed(src, out, valid_fraction=0, fmt="aliexpress") == m1
    assert (out / "train" / "labels.npy").stat().st_mtime_ns == stamp
    with pytest.raises(StoreError, match="other files or options"):
        convert_processed(src, out, valid_fraction=0, min_count=2)
    # half-written (no manifest): removed and rebuilt
    (out / "manifest.json").unlink()
    (out / "train" / "junk.npy").write_bytes(b"x")
    assert convert_processed(src, out, valid_fraction=0)["splits"] == m1["splits"]
    assert is_finished(out) and not (out / "train" / "junk.npy").exists()
    # a directory that is not a store is never deleted
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(StoreError, match="not a store"):
        convert_processed(src, other)
    assert (other / "notes.txt").read_text() == "keep"


# ------------------------------------------------------------------------- synthetic files


def _aitm_file(tmp_path: Path, bad: str, end: str = "\n") -> Path:
    lines = [AITM_HEADER, _aitm_row(0), _aitm_row(1, 1, 1), bad, _aitm_row(3, 1)]
    return _write(tmp_path / "train.csv", lines, end)


BAD_AITM = {
    "wrong field count": _aitm_row(2) + ",7",
    "non-integer id": "0,0,1.5," + ",".join(["1"] * 17),
    "id too large": "0,0,9223372036854775807," + ",".join(["1"] * 17),  # 2**63 - 1
    "label not 0/1": "2" + _aitm_row(2)[1:],
    "conversion without click": "0,1" + _aitm_row(2)[3:],
}


@pytest.mark.parametrize("reason", sorted(BAD_AITM))
def test_bad_row_strict_and_skip(reason, tmp_path):
    path = _aitm_file(tmp_path, BAD_AITM[reason])
    with pytest.raises(DataFormatError, match=reason) as info:
        convert_processed(path, tmp_path / "s", valid_fraction=0)
    assert info.value.line == 4 and info.value.file == str(path)
    assert info.value.reason == reason  # the category; bad_rows counts are keyed by it
    m = convert_processed(path, tmp_path / "s", valid_fraction=0, on_bad_row="skip")
    assert m["bad_rows"] == {reason: 1}
    assert _counts(tmp_path / "s", "train") == (3, 2, 1)


def test_skip_prints_counts(tmp_path, capsys):
    path = _aitm_file(tmp_path, BAD_AITM["label not 0/1"])
    convert_processed(path, tmp_path / "s", valid_fraction=0, on_bad_row="skip")
    assert "skipped 1 bad rows" in capsys.readouterr().err


def test_non_numeric_dense_value(tmp_path):
    bad = _ax_row(2).split(",")
    bad[20] = "abc"
    path = _write(tmp_path / "train.csv", [AX_HEADER, _ax_row(0), _ax_row(1, 1), ",".join(bad)])
    with pytest.raises(
        DataFormatError, match="non-numeric dense value: 'abc' in column numerical_4"
    ):
        convert_processed(path, tmp_path / "s", valid_fraction=0)
    m = convert_processed(path, tmp_path / "s", valid_fraction=0, on_bad_row="skip")
    assert m["bad_rows"] == {"non-numeric dense value": 1} and m["splits"]["train"]["rows"] == 2


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("value", ["1e39", "-1e308", "3.5e38"])
def test_dense_value_beyond_float32_is_refused_not_stored_as_inf(value, engine, tmp_path):
    """Checked in the dtype it is stored in: finite as float64, inf as float32 -> refused."""
    bad = _ax_row(2).split(",")
    bad[20] = value
    rows = [AX_HEADER, _ax_row(0), _ax_row(1, 1), ",".join(bad), _ax_row(3)]
    path = _write(tmp_path / "train.csv", rows)
    with pytest.raises(DataFormatError) as info:
        convert_processed(path, tmp_path / "s", valid_fraction=0, engine=engine)
    assert (info.value.line, info.value.reason) == (4, "dense value beyond float32")
    assert f"{path}:4: dense value beyond float32: {value!r} in column numerical_4" in str(
        info.value
    )
    m = convert_processed(path, tmp_path / "s", valid_fraction=0, on_bad_row="skip", engine=engine)
    assert m["bad_rows"] == {"dense value beyond float32": 1}
    dense = np.load(tmp_path / "s" / "train" / "dense.npy")
    assert dense.shape[0] == 3 and np.isfinite(dense).all()


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(
        (AITM_HEADER + "\n" + _aitm_row(0) + "\n").encode()
        + b"0,0,\xff\xfe"
        + _aitm_row(2)[4:].encode()
        + b"\n"
        + (_aitm_row(3, 1) + "\n").encode()
    )
    with pytest.raises(DataFormatError, match="non-UTF-8") as info:
        convert_processed(path, tmp_path / "s", valid_fraction=0)
    assert info.value.line == 3
    m = convert_processed(path, tmp_path / "s", valid_fraction=0, on_bad_row="skip")
    assert m["bad_rows"] == {"non-UTF-8 bytes": 1} and m["splits"]["train"]["rows"] == 2


def test_truncated_last_line(tmp_path):
    lines = [AITM_HEADER, _aitm_row(0), _aitm_row(1, 1), _aitm_row(2)[:15]]
    path = _write(tmp_path / "train.csv", lines, end="")
    with pytest.raises(DataFormatError, match="truncated last line") as info:
        convert_processed(path, tmp_path / "s", valid_fraction=0)
    assert info.value.line == 4 and "wrong field count" in info.value.detail
    m = convert_processed(path, tmp_path / "s", valid_fraction=0, on_bad_row="skip")
    assert m["bad_rows"] == {"truncated last line": 1} and m["splits"]["train"]["rows"] == 2
    # a complete last line without a newline is fine (the torch-rechub Ali-CCP files end so)
    good = _write(tmp_path / "ok_train.csv", lines[:3], end="")
    assert (
        convert_processed(good, tmp_path / "s2", valid_fraction=0)["splits"]["train"]["rows"] == 2
    )


@pytest.mark.parametrize("content", [b"", b"\n \n"])
def test_empty_file_is_always_an_error(content, tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    for mode in ("strict", "skip"):
        with pytest.raises(DataFormatError, match="empty file"):
            convert_processed(path, tmp_path / "s", on_bad_row=mode, fmt="paddle_aitm")
    with pytest.raises(DataFormatError, match="empty file"):
        detect_format(path)


def test_missing_path_and_split_files(tmp_path):
    with pytest.raises(DataFormatError, match="no such file") as info:
        convert_processed(tmp_path / "nope", tmp_path / "s")
    assert info.value.file == str(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "data.csv", [AITM_HEADER, _aitm_row(0)])
    with pytest.raises(DataFormatError, match="no train file") as info:
        find_split_files(tmp_path / "d")
    assert info.value.file == str(tmp_path / "d")
    single = _write(tmp_path / "d" / "x_train.csv", [AITM_HEADER, _aitm_row(0)])
    assert find_split_files(single) == {"train": single}
    _write(tmp_path / "d" / "y_train.csv", [AITM_HEADER, _aitm_row(0)])
    with pytest.raises(DataFormatError, match="cannot tell the splits apart"):
        find_split_files(tmp_path / "d")


def test_detection_errors(tmp_path):
    unknown = _write(tmp_path / "a_train.csv", ["a,b,c", "1,2,3"])
    with pytest.raises(DataFormatError, match="unknown format.*'a,b,c'") as info:
        detect_format(unknown)
    assert info.value.file == str(unknown)
    headerless = _write(tmp_path / "b.csv", [_ax_row(0)])  # aliexpress needs its header
    with pytest.raises(DataFormatError, match="unknown format: first line has 82"):
        detect_format(headerless)
    with pytest.raises(DataFormatError, match="expected the aliexpress header") as info:
        convert_processed(headerless, tmp_path / "s", fmt="aliexpress")
    assert info.value.line == 1
    # the train and test files of one directory must agree
    (tmp_path / "mix").mkdir()
    _write(tmp_path / "mix" / "train.csv", [AITM_HEADER, _aitm_row(0), _aitm_row(1, 1)])
    _write(tmp_path / "mix" / "test.csv", [AX_HEADER, _ax_row(0)])
    with pytest.raises(DataFormatError, match="mixed formats: looks like aliexpress"):
        convert_processed(tmp_path / "mix", tmp_path / "s")


def test_aitm_optional_header_and_unseen_ids(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    _write(d / "train.csv", [AITM_HEADER, _aitm_row(0), _aitm_row(1, 1, 1)])
    _write(d / "test.csv", [_aitm_row(0), "0,0," + ",".join(["99"] * 18)])
    assert detect_format(d / "test.csv") == "paddle_aitm"
    m = convert_processed(d, tmp_path / "s", valid_fraction=0)
    assert m["splits"]["test"]["rows"] == 2
    test = open_split(tmp_path / "s", "test")
    assert np.all(test.sparse[1] == 0) and np.all(test.sparse[0] > 0)  # unseen in train -> 0


ESMM_TRAIN = ["1,1,1,101:5,150_14:7,150_14:8,205:9", "2,0,0,101:6,150_14:7,205:9,216:3"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("3,0,0,101:5,150_14", "malformed field:id token"),
        ("3,0,0,101:5,150_14:x", "non-integer id"),
        ("3,0", "wrong field count"),
        ("3,1,0,101:5,101:6", "repeated single-valued field"),
    ],
)
def test_esmm_bad_rows(line, reason, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    _write(d / "train.txt", ESMM_TRAIN)
    _write(d / "test.txt", ["4,0,0,101:5", line])
    with pytest.raises(DataFormatError, match=reason) as info:
        convert_processed(d, tmp_path / "s", valid_fraction=0, fmt="paddle_esmm")
    assert info.value.file == str(d / "test.txt") and info.value.line == 2
    assert info.value.reason == reason
    m = convert_processed(d, tmp_path / "s", valid_fraction=0, on_bad_row="skip")
    assert m["bad_rows"] == {reason: 1} and m["splits"]["test"]["rows"] == 1


def test_esmm_schema_from_train(tmp_path):
    path = _write(tmp_path / "train.txt", ESMM_TRAIN)
    assert detect_format(path) == "paddle_esmm"
    m = convert_processed(path, tmp_path / "s", valid_fraction=0)
    assert m["bag_fields"] == ["150_14"] and m["fields"] == ["101", "205", "216"]
    ds = open_split(tmp_path / "s", "train")
    assert ds.sparse[0, 2] == 0 and ds.sparse[1, 2] == 1  # row 0 lacks 216
    bag = ds.bags[0]
    assert list(bag.ends - bag.starts) == [2, 1]


def test_esmm_carving_keeps_bags_aligned(tmp_path):
    lines = [
        f"{i},0,0,101:{i}," + ",".join(f"150_14:{i * 10 + k}" for k in range(i))
        for i in range(1, 7)
    ]
    m = convert_processed(_write(tmp_path / "train.txt", lines), tmp_path / "s", valid_fraction=0.5)
    assert m["splits"]["train"]["rows"] == 3 and m["splits"]["valid"]["rows"] == 3
    vocabs = load_vocabularies(tmp_path / "s", ["101", "150_14"])
    nnz = sum(len(open_split(tmp_path / "s", s).bags[0].ids) for s in ("train", "valid"))
    assert nnz == sum(range(1, 7))
    for split in ("train", "valid"):
        ds = open_split(tmp_path / "s", split)
        bag = ds.bags[0]
        for r in range(ds.num_rows):
            ids = np.asarray(bag.ids[bag.starts[r] : bag.ends[r]])
            if split == "train":  # the valid split's ids are unseen in train: all 0
                i = int(vocabs["101"][ds.sparse[r, 0] - 1])
                np.testing.assert_array_equal(vocabs["150_14"][ids - 1], i * 10 + np.arange(i))
            else:
                assert ds.sparse[r, 0] == 0 and np.all(ids == 0) and len(ids) >= 1


def test_the_config_lists_every_format_the_data_package_reads():
    """data/config.DATA_FORMATS (jax-free, free of the format code) and the data package's
    formats are one list: a layout added to rowcheck.LAYOUTS without its config name (or the
    reverse) fails here."""
    from autoheri_jax.config import DATA_FORMATS
    from autoheri_jax.data.formats import FORMATS
    from autoheri_jax.data.rowcheck import LAYOUTS

    assert set(LAYOUTS) <= set(FORMATS)
    assert sorted(DATA_FORMATS) == sorted(("auto", "store", "aliccp_raw", *FORMATS))
