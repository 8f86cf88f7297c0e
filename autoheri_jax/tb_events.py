"""TensorBoard scalar event files, written and read without TensorFlow or tensorboard.

An event file is a sequence of TFRecord records, each framed as

    uint64 length | uint32 masked_crc32c(length bytes) | payload | uint32 masked_crc32c(payload)

(all little-endian), whose payloads are `Event` protocol buffers. Only the few fields a scalar
log needs are encoded, by hand, in protobuf wire format:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

The first record of every file carries `file_version = "brain.Event:2"`. Files are named
`events.out.tfevents.<unix seconds>.<hostname>`; each write is on disk when the call returns, so
`tensorboard --logdir DIR` follows a run live.

    w = EventWriter("runs/x/tb/search_autoheri_search")
    w.scalar("loss", 0.71, step=10)
    w.scalars({"entropy": 0.6, "edge_prob/0.0->1.1": 0.55}, step=10)   # one event, many tags
    read_scalars(w.path)  # [("loss", 10, 0.71...), ("entropy", 10, 0.6...), ...]
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

FILE_VERSION = "brain.Event:2"
FILE_MARKER = "tfevents"  # TensorBoard reads every file whose name contains this

# ---------------------------------------------------------------------------------------------
# CRC32C (Castagnoli): reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF.


def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC32C of `data` (crc32c(b"123456789") == 0xE3069283)."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: the CRC rotated right by 15 bits plus a constant, mod 2^32."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# TFRecord framing


def frame_record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + payload
        + struct.pack("<I", masked_crc32c(payload))
    )


class EventFileError(ValueError):
    """A corrupt or truncated event file; the message names the file and the record offset."""


def iter_records(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(byte offset, payload) of every record, after checking both checksums."""
    path = Path(path)
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise EventFileError(f"{path}: record at byte offset {pos}: truncated header")
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (stored,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        if stored != masked_crc32c(header):
            raise EventFileError(
                f"{path}: record at byte offset {pos}: length checksum mismatch "
                f"(stored {stored:#010x}, computed {masked_crc32c(header):#010x})"
            )
        end = pos + 12 + length + 4
        if end > len(data):
            raise EventFileError(
                f"{path}: record at byte offset {pos}: truncated ({length}-byte payload "
                f"announced, {len(data) - pos - 12} bytes left)"
            )
        payload = data[pos + 12 : pos + 12 + length]
        (stored,) = struct.unpack("<I", data[end - 4 : end])
        if stored != masked_crc32c(payload):
            raise EventFileError(
                f"{path}: record at byte offset {pos}: payload checksum mismatch "
                f"(stored {stored:#010x}, computed {masked_crc32c(payload):#010x})"
            )
        yield pos, payload
        pos = end


# ---------------------------------------------------------------------------------------------
# Protobuf wire format (varint = 0, fixed64 = 1, length-delimited = 2, fixed32 = 5)


def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF  # int64 two's complement: negatives take 10 bytes, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def encode_event(
    wall_time: float,
    step: int = 0,
    scalars: Mapping[str, float] | None = None,
    file_version: str | None = None,
) -> bytes:
    out = _key(1, 1) + struct.pack("<d", wall_time)
    if step:
        out += _key(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        summary = b""
        for tag, value in scalars.items():
            value_msg = _length_delimited(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value)
            summary += _length_delimited(1, value_msg)
        out += _length_delimited(5, summary)
    return out


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end of the message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one message; fixed-width values come back as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} (field {field})")
        if pos > len(buf):
            raise ValueError(f"field {field} runs past the end of the message")
        yield field, wire, value


def decode_event(payload: bytes) -> dict:
    """{"wall_time", "step", "file_version" (or None), "scalars": [(tag, value), ...]}.

    Values without `simple_value` (tensors, images, ...) are skipped; unknown fields too.
    """
    event: dict = {"wall_time": 0.0, "step": 0, "file_version": None, "scalars": []}
    for field, wire, value in _fields(payload):
        if field == 1 and wire == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2 and wire == 0:
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif field == 3 and wire == 2:
            event["file_version"] = value.decode()
        elif field == 5 and wire == 2:
            for vfield, vwire, vmsg in _fields(value):
                if vfield != 1 or vwire != 2:
                    continue
                tag, simple = None, None
                for f, w, v in _fields(vmsg):
                    if f == 1 and w == 2:
                        tag = v.decode()
                    elif f == 2 and w == 5:
                        simple = struct.unpack("<f", v)[0]
                if tag is not None and simple is not None:
                    event["scalars"].append((tag, simple))
    return event


def read_events(path: str | Path) -> list[dict]:
    events = []
    for offset, payload in iter_records(path):
        try:
            events.append(decode_event(payload))
        except ValueError as e:
            raise EventFileError(f"{path}: record at byte offset {offset}: {e}") from None
    return events


def read_scalars(path: str | Path) -> list[tuple[str, int, float]]:
    """Every scalar in an event file, in file order: (tag, step, value)."""
    return [(tag, ev["step"], v) for ev in read_events(path) for tag, v in ev["scalars"]]


def event_files(logdir: str | Path) -> list[Path]:
    d = Path(logdir)
    return sorted(p for p in d.iterdir() if FILE_MARKER in p.name) if d.is_dir() else []


# ---------------------------------------------------------------------------------------------
# Writer


class EventWriter:
    """Appends scalar events to a new event file in `logdir`.

    The file is created (with its `file_version` record) at the first write, so constructing a
    writer costs nothing; every write opens, appends and closes, so each record is on disk when
    the call returns and no file handle outlives it. `flush()` is therefore a no-op, kept for the
    usual writer interface; after `close()` further writes raise.
    """

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.path: Path | None = None
        self._closed = False

    def _open(self) -> Path:
        self.logdir.mkdir(parents=True, exist_ok=True)
        base = f"events.out.{FILE_MARKER}.{int(time.time())}.{socket.gethostname()}"
        path, n = self.logdir / base, 0
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:  # another writer in the same second
                n += 1
                path = self.logdir / f"{base}.{n}"
        with os.fdopen(fd, "wb") as f:
            f.write(frame_record(encode_event(time.time(), file_version=FILE_VERSION)))
        return path

    @property
    def started(self) -> bool:
        """Whether this writer has written its file yet."""
        return self.path is not None

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """One event at `step` holding every (tag, value) of `values`."""
        if self._closed:
            raise ValueError(f"EventWriter({self.logdir}) is closed")
        if self.path is None:
            self.path = self._open()
        values = {str(k): float(v) for k, v in values.items()}
        record = frame_record(encode_event(time.time(), int(step), values))
        with self.path.open("ab") as f:
            f.write(record)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars({tag: value}, step)

    def flush(self) -> None:
        """Nothing is buffered: every write is closed (hence flushed) before it returns."""

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def discard_from(self, step: int) -> None:
        """Drops what earlier writers in `logdir` logged at `step` or later.

        A model trained afresh passes 0 (every older event file goes); one resumed from a
        checkpoint passes its first logged step, so TensorBoard does not show both tellings of
        the steps after the checkpoint. This writer's own file is left alone.
        """
        for path in event_files(self.logdir):
            if path == self.path:
                continue
            if step <= 0:
                path.unlink()
                continue
            kept, dropped = [], False
            records = iter_records(path)
            while True:
                try:
                    payload = next(records, None)
                    if payload is None:
                        break
                    ev = decode_event(payload[1])
                except (EventFileError, ValueError):  # a run killed mid-write: keep the prefix
                    dropped = True
                    break
                if ev["scalars"] and ev["step"] >= step:
                    dropped = True
                else:
                    kept.append((payload[1], bool(ev["scalars"])))
            if not any(has_scalars for _, has_scalars in kept):
                path.unlink()
            elif dropped:
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(b"".join(frame_record(p) for p, _ in kept))
                tmp.replace(path)


def flatten_scalars(record: Mapping, skip: tuple[str, ...] = ("step", "epoch")) -> dict:
    """A log record's numbers as tags: {"loss": x, "stage_bce": [a, b]} -> loss, stage_bce/0, ..."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in skip:
            continue
        if isinstance(value, int | float):
            out[key] = float(value)
        elif isinstance(value, list | tuple):
            out.update(
                {f"{key}/{i}": float(v) for i, v in enumerate(value) if isinstance(v, int | float)}
            )
    return out
