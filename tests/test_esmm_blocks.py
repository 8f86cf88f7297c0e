"""paddle_esmm's block fast path (engine "arrow") gives the exact parser's stores, errors and skip
counts, whatever the block size."""

from __future__ import annotations

import numpy as np
import pytest
from test_csv_blocks import both

from autoheri_jax.data import csv_blocks, esmm_blocks, rowcheck
from autoheri_jax.data.formats import convert_processed

SINGLE = ["101", "121", "205", "216"]
BAGS = ["150_14", "210"]


def esmm_lines(n: int, seed: int, test: bool = False) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        click = int(rng.random() < 0.4)
        toks = [f"{f}:{int(rng.integers(0, 30))}" for f in SINGLE if rng.random() > 0.2]
        toks += [f"{b}:{int(rng.integers(0, 50))}" for b in BAGS for _ in range(rng.integers(0, 4))]
        if i % 9 == 4:
            toks.append("999:1")  # a field seen in one row only
        rng.shuffle(toks)
        lab = ["0", "1", "0.0", "1.0"][click + 2 * int(i > 0 and rng.random() < 0.3)]
        conv = int(click and rng.random() < 0.4)
        out.append(",".join([str(i + 10 * test), lab, str(conv), *toks]))
    out[3] = out[3].split(",")[0] + ",0,0,150_14:1,150_14:2"  # train: 150_14 is a bag
    return out


BAD = {  # line index -> (mutation, reason)
    5: (lambda s: s + ",150_14", "malformed field:id token"),
    11: (lambda s: s + ",101:x", "non-integer id"),
    17: (lambda s: "17,0", "wrong field count"),
    23: (lambda s: "23,2,0,101:1", "label not 0/1"),
    29: (lambda s: "29,0,1,101:1", "conversion without click"),
    35: (lambda s: s + ",:4", "malformed field:id token"),
    41: (lambda s: s + ",205:1,205:2", "repeated single-valued field"),  # test file only
    47: (lambda s: s + ",101:1234567890123456789", "id too large"),
}


def write(d, train: list[str], test: list[str], end: str = "\n"):
    d.mkdir(exist_ok=True)
    (d / "train.txt").write_bytes(("\n".join(train) + end).encode("utf-8", "surrogateescape"))
    (d / "test.txt").write_bytes(("\n".join(test) + end).encode("utf-8", "surrogateescape"))
    return d


def with_bad(lines: list[str], test: bool) -> list[str]:
    lines = list(lines)
    for i, (fn, _) in BAD.items():
        if test or BAD[i][1] != "repeated single-valued field":
            lines[i] = fn(lines[i])
    return lines


@pytest.mark.parametrize("block", [None, 60, 1000])
def test_skip_mode_identical(tmp_path, monkeypatch, block):
    if block:
        monkeypatch.setattr(csv_blocks, "BLOCK_BYTES", block)
    d = write(tmp_path / "d", with_bad(esmm_lines(60, 0), False), with_bad(esmm_lines(60, 1), True))
    old, new = both(d, tmp_path, on_bad_row="skip", valid_fraction=0.2, fmt="paddle_esmm")
    assert old[0] != "error" and old == new
    reasons = {r for _, r in BAD.values()}
    assert set(old[1]) == reasons and sum(old[1].values()) == 2 * len(BAD) - 1


@pytest.mark.parametrize("idx", sorted(BAD))
@pytest.mark.parametrize("block", [None, 80])
def test_strict_errors_identical(tmp_path, monkeypatch, idx, block):
    if block:
        monkeypatch.setattr(csv_blocks, "BLOCK_BYTES", block)
    test = esmm_lines(60, 1, True)
    test[idx] = BAD[idx][0](test[idx])
    old, new = both(write(tmp_path / "d", esmm_lines(60, 0), test), tmp_path, fmt="paddle_esmm")
    assert old[0] == "error" and old == new and old[3:5] == (idx + 1, BAD[idx][1])


@pytest.mark.parametrize(
    "edit",
    ["bom", "crlf", "blank", "no_newline", "cut", "lone_cr", "non_utf8", "nul", "spaces", "empty"],
)
def test_odd_files_identical(tmp_path, monkeypatch, edit):
    monkeypatch.setattr(csv_blocks, "BLOCK_BYTES", 200)
    train, test, end = esmm_lines(40, 0), esmm_lines(40, 1, True), "\n"
    if edit == "bom":
        train[0] = "\ufeff" + train[0]
    elif edit == "crlf":
        train, end = [t + "\r" for t in train], "\r\n"
    elif edit == "blank":
        train[7:7] = ["", "  ", "\t"]
    elif edit == "no_newline":
        end = ""
    elif edit == "cut":
        test[-1], end = test[-1][:-1] + ",12", ""
    elif edit == "lone_cr":
        test[5] += "\r\r"
    elif edit == "non_utf8":
        test[9] += ",101:\udcff"
        test[12] = "\udcff" + test[12]  # in the sample id: only the UTF-8 check sees it
        test[14] += ",\u00e9t\u00e9:3"  # valid UTF-8, not ASCII: rowcheck's
    elif edit == "nul":
        test[9] = test[9] + ",1\x000:3"
    elif edit == "spaces":
        test[9] += ", 101:3,101 :4"
    elif edit == "empty":
        test = ["", " "]
    d = write(tmp_path / "d", train, test, end)
    for mode in ("strict", "skip"):
        old, new = both(d, tmp_path, on_bad_row=mode, valid_fraction=0.0, fmt="paddle_esmm")
        assert old == new


def test_clean_data_never_leaves_the_block_path(tmp_path, monkeypatch):
    def refuse(*_):
        raise AssertionError("a clean block went to the per-row parser")

    monkeypatch.setattr(csv_blocks, "BLOCK_BYTES", 300)
    monkeypatch.setattr(rowcheck, "_esmm_exact", refuse)
    d = write(tmp_path / "d", esmm_lines(60, 0), esmm_lines(60, 1, True))
    m = convert_processed(d, tmp_path / "s", valid_fraction=0, progress=False)
    assert m["splits"]["test"]["rows"] == 60 and m["bag_fields"] == BAGS


def test_block_path_accepts_only_clean_lines():
    """A mutated line: the block path refuses it, or rowcheck finds nothing wrong with it and
    reads the same labels, fields and ids."""
    rng = np.random.default_rng(2)
    alphabet = [",", ":", "\n", "0", "1", "-", ".", " ", "x", "\r", "+", "\x00"]
    lines, accepted = esmm_lines(50, 0), 0
    for _ in range(1500):
        line = list(lines[int(rng.integers(0, len(lines)))])
        for _ in range(int(rng.integers(1, 3))):
            at, op = int(rng.integers(0, len(line))), int(rng.integers(0, 3))
            line[at : at + (op > 0)] = [] if op == 2 else [alphabet[int(rng.integers(0, 12))]]
        text = "".join(line)
        fast = esmm_blocks.esmm_block((text + "\n").encode(), False, SINGLE)
        if fast is None:
            continue
        accepted += 1
        texts, _, utf8_bad, _ = rowcheck.split_lines((text + "\n").encode(), 1, False)
        y, fld, row_of, ids, checks = rowcheck._esmm_tokens(texts, utf8_bad)
        assert not any(c[1].any() for c in checks), text
        names, inv = np.unique(fld, return_inverse=True)
        assert fast[1] == [str(x) for x in names] and np.array_equal(fast[2], inv.reshape(-1))
        assert np.array_equal(fast[0], y) and np.array_equal(fast[3], row_of)
        assert np.array_equal(fast[4], ids)
    assert accepted > 100
