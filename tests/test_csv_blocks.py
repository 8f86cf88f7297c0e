"""The pyarrow block parser of the processed formats gives the exact per-row parser's stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autoheri_jax.data import csv_blocks, formats
from autoheri_jax.data.errors import DataFormatError
from autoheri_jax.data.formats import _LAYOUTS, convert_processed

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"no shared samples at {DATA}")
SAMPLES = [  # (sample dir, on_bad_row, valid_fraction)
    ("ali-ccp/torch-rechub", "strict", 0.1),
    ("ali-ccp/paddlerec-aitm", "skip", 0.2),
    ("ali-ccp/paddlerec-esmm", "strict", 0.0),
    ("aliexpress/torch-rechub", "strict", 0.2),
    ("aliexpress/fuxictr-tiny_mtl", "strict", 0.0),
]
RECHUB = _LAYOUTS["rechub_aliccp"]


def store_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def both(src: Path, tmp: Path, **kw):
    """(python engine's store or error, arrow engine's store or error), as comparable values."""
    out = []
    for engine in ("python", "arrow"):
        dest = tmp / f"{engine}_{len(list(tmp.iterdir()))}"
        try:
            m = convert_processed(src, dest, engine=engine, progress=False, **kw)
            out.append((store_bytes(dest), m["bad_rows"]))
        except DataFormatError as e:
            out.append(("error", str(e), e.file, e.line, e.reason, e.detail))
    return out


def rechub_lines(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        click = int(rng.random() < 0.3)
        buy = int(click and rng.random() < 0.3)
        ids = [str(int(rng.integers(0, 50))) for _ in RECHUB.sparse]
        dense = [f"{rng.random():.4f}" for _ in RECHUB.dense]
        rows.append(",".join([str(click), str(buy), *ids, *dense]))
    return [",".join(RECHUB.header), *rows]


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of ~100 bytes: most rows cross a block edge (read_blocks carries them over)."""
    monkeypatch.setattr(csv_blocks, "BLOCK_BYTES", 100)


@needs_data
@pytest.mark.parametrize(("sample", "mode", "vf"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_shared_samples_give_identical_stores(sample, mode, vf, tmp_path):
    old, new = both(DATA / sample, tmp_path, on_bad_row=mode, valid_fraction=vf, min_count=2)
    assert old[0] != "error" and old == new


def test_tiny_blocks_split_rows_and_still_agree(tmp_path, tiny_blocks):
    path = tmp_path / "train.csv"
    path.write_text("\n".join(rechub_lines(300)) + "\n")
    lines = list(csv_blocks.read_blocks(path, 0, 1))
    assert len(lines) > 100 and all(b.endswith(b"\n") for _, b, _ in lines)
    assert [n for n, _, _ in lines][:3] == [1, 2, 3]  # each block: one line here, numbered
    old, new = both(path, tmp_path, valid_fraction=0.1)
    assert old[0] != "error" and old == new


def mutate(line: str, rng) -> str:
    alphabet = [
        ",",
        "-",
        ".",
        "e",
        "+",
        " ",
        "x",
        "\r",
        "1",
        "0",
        "00000000000000000001",
        "é",
        "\udcff",
        "nan",
        "inf",
        "1.0",
        "",
        "\ufeff",
        "9" * 19,
        "-" + "9" * 18,
    ]
    for _ in range(int(rng.integers(1, 3))):
        at = int(rng.integers(0, len(line) + 1))
        tok = alphabet[int(rng.integers(0, len(alphabet)))]
        line = line[:at] + tok + line[at + int(rng.integers(0, 2)) :]
    return line


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # rowcheck, as before
@pytest.mark.parametrize("block", [100, 1 << 20])
def test_random_bad_rows_same_errors_and_counts(tmp_path, monkeypatch, block):
    """Lines mutated at random (bad in every way the checks know, or still fine): both engines
    give the same first error in strict mode and the same store and counts in skip mode."""
    monkeypatch.setattr(csv_blocks, "BLOCK_BYTES", block)
    rng, kinds = np.random.default_rng(block), set()
    for case in range(12):
        lines = rechub_lines(40, seed=case)
        for _ in range(3):
            k = int(rng.integers(1, len(lines)))
            lines[k] = mutate(lines[k], rng)
        end = "" if case % 4 == 0 else "\n"
        path = tmp_path / f"c{case}" / "train.csv"
        path.parent.mkdir()
        path.write_bytes(("\n".join(lines) + end).encode("utf-8", "surrogateescape"))
        for mode in ("strict", "skip"):
            old, new = both(path, tmp_path / f"c{case}", on_bad_row=mode, valid_fraction=0)
            assert old == new, (mode, lines)
            kinds |= set(old[1]) if mode == "skip" and old[0] != "error" else set()
    assert len(kinds) >= 4  # several reasons met (wrong field count, non-integer id, ...)


@pytest.mark.parametrize(
    "text",
    [
        "\ufeff{h}\n{r0}\n{r1}\n",  # BOM
        "{h}\r\n{r0}\r\n\r\n{r1}\r\n",  # CRLF and a blank line
        "\n  \n{h}\n{r0}\n\n{r1}",  # blank lines first; last line unterminated but whole
        "{h}\n{r0}\n{r1}\n{cut}",  # truncated last line
        "{h}\n{r0}\r{r1}\n",  # a lone \r: one line with too many fields (pyarrow would split)
        "{h}\n{r0}\n{h}\n{r1}\n",  # a header again in the data
        "{h}\n",  # no data rows
        "{r0}\n{r1}\n",  # no header
    ],
)
def test_line_edge_cases_agree(text, tmp_path):
    h, r0, r1 = rechub_lines(2)
    path = tmp_path / "train.csv"
    path.write_text(text.format(h=h, r0=r0, r1=r1, cut=r1[:20]), newline="")
    for mode in ("strict", "skip"):
        old, new = both(path, tmp_path, on_bad_row=mode, valid_fraction=0)
        assert old == new, mode


def test_clean_blocks_never_take_the_per_row_path(tmp_path, monkeypatch, tiny_blocks):
    def refuse(*_):
        raise AssertionError("a clean block was parsed row by row")

    path = tmp_path / "train.csv"
    path.write_text("\n".join(rechub_lines(200)) + "\n")
    monkeypatch.setattr(formats, "fixed_rows", refuse)
    m = convert_processed(path, tmp_path / "s", valid_fraction=0, progress=False)
    assert m["splits"]["train"]["rows"] == 200


def test_progress_line_in_mb_per_s(tmp_path, capsys):
    meter = csv_blocks.ByteProgress("train.csv", 10_000_000, after_s=0.0)
    meter.update(5_000_000, 1000)
    meter.close(2000)
    err = capsys.readouterr().err
    assert "prepare train.csv [" in err and "MB/s" in err and "2,000 rows" in err
    quiet = csv_blocks.ByteProgress("x", 10, after_s=60.0)  # short conversions: nothing
    quiet.update(5, 1)
    quiet.close(1)
    assert capsys.readouterr().err == ""
