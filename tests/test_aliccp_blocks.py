"""The raw Ali-CCP block fast path (engine "arrow") gives the exact per-line parser's stores,
errors and counts, whatever the block size: rows and user groups cross block edges."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_prepare_aliccp import BAD, COMMON, SKEL, _bad, make_raw, write_raw

from autoheri_jax.data import aliccp_blocks, aliccp_raw, aliccp_rows
from autoheri_jax.data.aliccp_raw import prepare_aliccp_raw
from autoheri_jax.data.errors import DataFormatError
from tests.helpers import mutate_line


@pytest.fixture(scope="module")
def raw():
    return make_raw(n_train=200, n_test=80, n_users=12, seed=1)


def store_bytes(root: Path) -> dict[str, bytes]:
    """Every file of a store; the manifest without its timings (wall times differ)."""
    out = {}
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        data = p.read_bytes()
        if p.name == "manifest.json":
            m = json.loads(data)
            m.pop("timing_s")
            data = json.dumps(m).encode()  # key order kept: dict order must match too
        out[str(p.relative_to(root))] = data
    return out


def prepare(src, out, engine, block=None, monkeypatch=None, **kw):
    if block:
        monkeypatch.setattr(aliccp_raw, "_BLOCK", block)
    return prepare_aliccp_raw(src, out, engine=engine, progress=False, **kw)


def all_bad(lines: dict) -> dict:
    for name, idx, fn in BAD.values():  # each on its own line
        lines = _bad(lines, name, idx, fn)
    return lines


@pytest.mark.parametrize(("block", "chunk_rows"), [(None, 100_000), (257, 100_000), (4096, 3)])
def test_skip_mode_stores_identical(raw, tmp_path, monkeypatch, block, chunk_rows):
    src = write_raw(tmp_path / "raw", all_bad(raw["lines"]))
    kw = {"on_bad_row": "skip", "chunk_rows": chunk_rows, "min_count": 2, "valid_fraction": 0.2}
    ref = prepare(src, tmp_path / "py", "python", **kw)
    new = prepare(src, tmp_path / "arrow", "arrow", block, monkeypatch, **kw)
    assert new["bad_rows"] == ref["bad_rows"] and sum(ref["bad_rows"].values()) > len(BAD)
    assert set(ref["bad_rows"]) == set(BAD)
    assert store_bytes(tmp_path / "arrow") == store_bytes(tmp_path / "py")


@pytest.mark.parametrize("block", [None, 97, 2048])
def test_clean_stores_identical(raw, tmp_path, monkeypatch, block):
    src = write_raw(tmp_path / "raw", raw["lines"], newline_at_end=False)
    ref = prepare(src, tmp_path / "py", "python", min_count=1)
    new = prepare(src, tmp_path / "arrow", "arrow", block, monkeypatch, min_count=1)
    assert new["ignored_fields"] == ref["ignored_fields"] and ref["ignored_fields"]
    assert store_bytes(tmp_path / "arrow") == store_bytes(tmp_path / "py")


@pytest.mark.parametrize("reason", [*sorted(BAD), "truncated last line"])
def test_strict_errors_identical(raw, tmp_path, monkeypatch, reason):
    if reason == "truncated last line":
        lines = {k: list(v) for k, v in raw["lines"].items()}
        lines[SKEL["test"]][-1] = lines[SKEL["test"]][-1][:25]
        src = write_raw(tmp_path / "raw", lines, newline_at_end=False)
    else:
        name, idx, fn = BAD[reason]
        src = write_raw(tmp_path / "raw", _bad(raw["lines"], name, idx, fn))
    errors = []
    for engine, block in (("python", None), ("arrow", None), ("arrow", 300)):
        with pytest.raises(DataFormatError) as e:
            prepare(src, tmp_path / f"{engine}{block}", engine, block, monkeypatch)
        errors.append(str(e.value))
        assert e.value.reason == reason
    assert errors[0] == errors[1] == errors[2]


def test_clean_data_never_leaves_the_block_path(raw, tmp_path, monkeypatch):
    def refuse(*_):
        raise AssertionError("a clean block went to the per-line parser")

    monkeypatch.setattr(aliccp_rows._Parser, "parse", refuse)
    src = write_raw(tmp_path / "raw", raw["lines"])
    assert prepare(src, tmp_path / "s", "arrow", 500, monkeypatch)["splits"]["test"]["rows"] == 80


def test_block_path_accepts_only_what_the_line_check_accepts(raw):
    """A mutated line: the block path refuses it, or the exact parser accepts it with the same
    columns (the block path may refuse more: those lines take the exact path)."""
    rng = np.random.default_rng(3)
    alphabet = [
        b"\x01",
        b"\x02",
        b"\x03",
        b",",
        b"\n",
        b"0",
        b"1",
        b"7",
        b".",
        b"-",
        b"+",
        b"e",
        b" ",
        b"x",
        b"\xff",
        b"_",
    ]
    keys = {k.encode(): i for i, k in enumerate(raw["users"]["train"])}
    accepted = refused_valid = 0
    for name in (SKEL["train"], COMMON["train"]):
        lines = raw["lines"][name]
        for _ in range(600):
            line = mutate_line(rng, lines, alphabet)
            skeleton = name.startswith("sample")
            parsers = [
                aliccp_rows._Parser(
                    Path(name), skeleton, True, dict(keys) if skeleton else {}, Counter(), Counter()
                )
                for _ in range(2)
            ]
            pieces = bytes(line).split(b"\n")
            fast = aliccp_blocks.parse_block(parsers[0], bytes(line) + b"\n")
            exact = parsers[1]._fast(pieces)
            if fast is None:
                refused_valid += exact is not None
                continue
            accepted += 1
            assert exact is not None, bytes(line)
            assert_same(fast, exact)
            assert parsers[0].ignored == parsers[1].ignored and parsers[0].index == parsers[1].index
    assert accepted > 50 and refused_valid < 60  # stricter only on rare forms ('+1', ' 1')


def assert_same(a, b):
    assert type(a) is type(b) and len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, dict):
            assert list(x) == list(y)
            for k in x:
                assert_same(x[k], y[k])
        else:
            assert x.dtype == y.dtype and np.array_equal(x, y)


def test_numbers_pyarrow_reads_are_read_alike_by_python():
    """Within the bytes the block path lets through, pyarrow's casts accept only what int() /
    float() accept, with the same value (the float32 store values then agree)."""
    rng = np.random.default_rng(0)
    for chars, typ, conv in (
        (b"-0123456789", pa.int64(), int),
        (b"-+.eE0123456789", pa.float64(), float),
    ):
        pool = np.frombuffer(chars, np.uint8)
        for _ in range(3000):
            s = bytes(rng.choice(pool, int(rng.integers(1, 12))))
            try:
                got = pc.cast(aliccp_blocks.binary([s]), typ)[0].as_py()
            except pa.ArrowInvalid:
                continue
            assert got == conv(s), s
    digits = [
        f"{x:.{k}g}".encode()
        for x, k in zip(
            rng.random(5000) * 10.0 ** rng.integers(-40, 39, 5000),
            rng.integers(1, 18, 5000),
            strict=True,
        )
    ]
    got = pc.cast(aliccp_blocks.binary(digits), pa.float64())
    assert aliccp_blocks.numpy(got).tolist() == [float(x) for x in digits]


@pytest.mark.parametrize(("size", "max_lines"), [(1, 100), (7, 2), (64, 100), (1 << 20, 1)])
def test_read_blocks_whole_lines(tmp_path, size, max_lines):
    data = b"a,1\nbb,22\n\nccc,333\nd" + b"x" * 50 + b"\nend"
    (path := tmp_path / "f").write_bytes(data)
    h = hashlib.sha256()
    blocks = list(aliccp_blocks.read_blocks(path, size, max_lines, h))
    assert (
        b"".join(b for _, b, _, _ in blocks) == data and h.digest() == hashlib.sha256(data).digest()
    )
    pos = 0
    for first, block, unterminated, _ in blocks:
        assert data.count(b"\n", 0, pos) + 1 == first and block
        pos += len(block)
        assert block.count(b"\n") <= max_lines and unterminated == (not block.endswith(b"\n"))
    assert sum(u for *_, u, _ in blocks) == 1


TRICKY = [  # feature_lists of a common line `k,<count>,<list>` (count filled in)
    b"",
    b"\x02" + b"1\x031.0",
    b"101\x02\x031.0",
    b"101\x021\x03",
    b"101\x02+5\x031.0",
    b"101\x020x5\x031.0",
    b"101\x02 5\x031.0",
    b"101\x021_0\x031.0",
    b"101\x025\x03inf",
    b"101\x025\x03nan",
    b"101\x025\x031e999",
    b"101\x025\x03-1e38",
    b"101\x025\x031e39",
    b"101\x02-9223372036854775808\x031",
    b"101\x029223372036854775808\x031",
    b"101\x02-9223372036854775807\x031",
    b"101\x021\x031.0\r",
    b"101\x021\x031,0",
    b"101\x021\x031.0\x01",
    b"10\xc3\xa91\x021\x031.0",
    b"101",
    b"101\x021\x031\x01101\x022\x031",
    b"999\x021\x031\x01\t\x021\x03.5",
    b"101\x021\x03+.5e-3",
    b"101\x02007\x031.",
    b"101\x021\x03-",
    b"101\x021\x02\x031",
    b"101\x021\x03\x031",
    b"150_14\x021\x031\x01150_14\x021\x032",
    b"2,101\x021\x031",
    b"101\x021\x031,5",
]


@pytest.mark.parametrize("flist", TRICKY)
@pytest.mark.parametrize("key", [b"k", b""])
def test_tricky_lines_agree(flist, key):
    n = len(flist.split(b"\x01")) if flist else 0
    for count in {0, n, n + 1}:
        line = key + b",%d," % count + flist
        parsers = [
            aliccp_rows._Parser(Path("c"), False, True, {}, Counter(), Counter()) for _ in range(2)
        ]
        problem = parsers[1]._problem(line, set())  # before _fast adds the key to the index
        fast = aliccp_blocks.parse_block(parsers[0], line + b"\n")
        exact = parsers[1]._fast([line])
        assert (problem is None) == (exact is not None), (line, problem)
        if fast is not None:
            assert exact is not None, line
            assert_same(fast, exact)
            assert parsers[0].ignored == parsers[1].ignored
