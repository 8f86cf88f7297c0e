"""The fast path of the paddle_esmm reader: a block of whole `sample_id,click,conversion,
field:id,...` lines tokenised at once (numpy on the bytes, pyarrow casts), no Python per row.

Like aliccp_blocks.parse_block, it only vouches for a block when every line is one the exact
parser (rowcheck._esmm_tokens) accepts, with the same values, and returns None otherwise: also
for what the two could read differently or that needs a message (non-ASCII, NUL bytes, a lone
\\r, blank lines, a 19-character id, a single-valued field repeated in a valid / test row). The
caller then hands the block to rowcheck, which names or counts the bad lines.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from autoheri_jax.data.aliccp_blocks import arrow, binary, ints, numpy

_NL, _COMMA, _COLON, _HEAD = 1, 2, 3, 4  # delimiter classes (_HEAD: a line's first two commas)
_CLASS = bytes({10: _NL, 44: _COMMA, 58: _COLON}.get(b, 0) for b in range(256))
_NEXT_OK = np.zeros(64, bool)  # [8 * delimiter + the next one]: the order a valid block has
for _a, _b in [
    (_NL, _HEAD),
    (_HEAD, _HEAD),
    (_HEAD, _COMMA),
    (_HEAD, _NL),
    (_COMMA, _COLON),
    (_COLON, _COMMA),
    (_COLON, _NL),
]:
    _NEXT_OK[8 * _a + _b] = True
_NEXT_BARE = np.zeros(64, bool)  # the same for label-free lines "sample_id,field:id,..."
for _a, _b in [(_NL, _HEAD), (_HEAD, _COLON), (_COMMA, _COLON), (_COLON, _COMMA), (_COLON, _NL)]:
    _NEXT_BARE[8 * _a + _b] = True
_LABELS = binary([b"0", b"1", b"0.0", b"1.0"])  # rowcheck.LABEL_TOKENS; odd index: a 1


def esmm_block(buf: bytes, at_start: bool, singles: list[str] | None, labelled: bool = True):
    """(labels int8 [n, 2], field names (sorted str), per token of the K field:id tokens: name
    index [K], row [K], raw id int64 [K]) of a block of n whole lines, or None unless every
    line is clean (module docstring). singles: the
    schema's single-valued fields (valid / test), where a repeat must be reported. labelled
    False: "sample_id,field:id,..." lines (scoring only), zero labels."""
    if at_start and buf.startswith(b"\xef\xbb\xbf"):
        buf = buf[3:]  # rowcheck.split_lines drops the BOM at the start of a file
    if b"\r" in buf:
        if buf.count(b"\r") != buf.count(b"\r\n"):
            return None
        buf = buf.replace(b"\r\n", b"\n")  # rowcheck drops the \r of \r\n: same lines
    if not buf.endswith(b"\n") or not buf.isascii() or b"\x00" in buf:
        return None
    kind = np.frombuffer(buf.translate(_CLASS), np.uint8)
    d = np.flatnonzero(kind.view(bool))  # token i ends at d[i]
    kd, nd = kind[d], len(d)
    nl = np.flatnonzero(kd == _NL)
    n = len(nl)
    st = np.empty(n, np.int64)
    st[0], st[1:] = 0, nl[:-1] + 1
    if labelled:  # in this order: st + 1 exists once every line has >= 2 delimiters
        short = (nl - st < 2).any() or (kd[st] != _COMMA).any() or (kd[st + 1] != _COMMA).any()
    else:
        short = (kd[st] != _COMMA).any()
    if short:
        return None  # fewer than 3 fields (2 label-free; blank lines too)
    kd = kd.copy()
    kd[st] = _HEAD
    if labelled:
        kd[st + 1] = _HEAD
    allowed = _NEXT_OK if labelled else _NEXT_BARE
    if kd[0] != _HEAD or not allowed[kd[:-1] * 8 + kd[1:]].all():
        return None
    lens = np.diff(d, prepend=-1) - 1
    off = np.empty(2 * nd + 1, np.int64)  # zero copy: element 2i is token i
    off[0], off[1::2], off[2::2] = 0, d, d + 1
    tok = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 2 * nd, [None, pa.py_buffer(off), pa.py_buffer(buf)]
    )

    def take(idx):
        return tok.take(arrow(2 * idx))

    if labelled:
        lab = pc.index_in(take(np.stack([st + 1, st + 2], 1).ravel()), value_set=_LABELS)
        if lab.null_count:
            return None
        y = (numpy(lab).reshape(n, 2) % 2).astype(np.int8)
    else:
        y = np.zeros((n, 2), np.int8)
    ni = np.flatnonzero(kd == _COLON)  # every feature's name token; its id follows
    ids = ints(take(ni + 1), lens[ni + 1], 18)
    if ids is None or (lens[ni] < 1).any() or (y[:, 1] > y[:, 0]).any():
        return None
    row_of = np.repeat(np.arange(n), np.diff(np.searchsorted(ni, nl), prepend=0))
    enc = pc.dictionary_encode(take(ni))
    local = [x.decode() for x in enc.dictionary.to_pylist()]
    order = sorted(range(len(local)), key=local.__getitem__)
    rank = np.empty(len(local), np.int64)
    rank[order] = np.arange(len(local))
    inv = rank[numpy(enc.indices)]
    names = [local[k] for k in order]
    if singles:
        pos = {f: k for k, f in enumerate(singles)}
        fidx = np.array([pos.get(f, -1) for f in names], np.int64)[inv]
        sel = fidx >= 0
        key = row_of[sel] * len(singles) + fidx[sel]
        if key.size and np.bincount(key).max() > 1:
            return None  # a repeated single-valued field: rowcheck names the row
    return y, names, inv, row_of, ids
