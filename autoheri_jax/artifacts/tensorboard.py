"""TensorBoard scalars of one model's training, written with tensorboardX (no TensorFlow).

Each model gets a directory `<workdir>/tb/<phase>_<model>` (`tensorboard --logdir
<workdir>/tb`). Events go through tensorboardX's synchronous `EventsWriter` (its record
framing, CRC32C and protobufs), flushed at every log point, so TensorBoard follows a run live
and a crash loses nothing already logged. No file is created before the first scalar.

Restarts: a model trained afresh deletes the directory's older event files. A resumed one
writes a `SessionLog.START` event at the step it resumed from; TensorBoard then drops every
event of the earlier files at or after that step (its "purge" rule), so the steps a crash made
it train twice are shown once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary

FILE_MARKER = "tfevents"  # TensorBoard reads every file whose name contains this


def event_files(directory: str | Path) -> list[Path]:
    """The event files of `directory`, oldest first (their names start with the unix time)."""
    d = Path(directory)
    return sorted(d.glob(f"events.out.{FILE_MARKER}.*")) if d.is_dir() else []


class ScalarWriter:
    """Scalars of one training run into one event file, opened at the first write."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._events: EventsWriter | None = None

    @property
    def started(self) -> bool:
        return self._events is not None

    @property
    def path(self) -> Path:
        if self._events is None:
            raise ValueError(f"{self.directory}: no event file yet (nothing was written)")
        return Path(self._events._file_name)

    def start(self, resumed_at: int | None) -> None:
        """Open the file. `resumed_at`: the step training resumed from (None: afresh, older
        files are deleted); events of older files from that step on are purged."""
        if self._events is not None:
            raise ValueError(f"{self.directory}: already started")
        if resumed_at is None:
            for old in event_files(self.directory):
                old.unlink()
        self.directory.mkdir(parents=True, exist_ok=True)
        # the suffix keeps two writers opened in the same second (a quick resume) apart
        suffix = f".{time.time_ns()}"
        self._events = EventsWriter(str(self.directory / "events"), filename_suffix=suffix)
        if resumed_at is not None:
            purge = Event(wall_time=time.time(), step=resumed_at)
            purge.session_log.status = SessionLog.START
            self._write(purge)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """One event holding every tag of `values` at `step`, on disk when this returns."""
        if self._events is None:
            self.start(resumed_at=None)
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def _write(self, event: Event) -> None:
        self._events.write_event(event)
        self._events.flush()

    def close(self) -> None:
        if self._events is not None:
            self._events.close()


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
