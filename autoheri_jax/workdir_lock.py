"""One writer per workdir (and per store): an OS file lock held by every command that writes one.

Two commands writing one workdir interleave their checkpoints and append duplicate records to
metrics.jsonl; the second one is therefore refused at once, naming the first one's PID and
command. The lock is `fcntl.flock` on `<workdir>/.autoheri.lock`: the kernel drops it when its
holder exits in any way (SIGKILL and power loss included), so a lock file left by a dead
process never blocks a rerun; the PID written into the file is only there to be named.

A store is built beside its place and renamed in whole (data/store.py), so its lock is a
sibling file (`beside`), `.<name>.autoheri.lock`, which the rename leaves in place.

Only process 0 of a multi-process run takes the lock (it is the one that writes; the others
only read the shared workdir). POSIX only: where fcntl is missing the lock is skipped.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks of this kind
    fcntl = None

LOCK_NAME = ".autoheri.lock"


class WorkdirBusy(RuntimeError):
    """Another live process holds the workdir's lock; the message names it."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    pid, _, command = text.partition(" ")
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" ({command})" if command else "")


@contextlib.contextmanager
def exclusive(root: str | Path, command: str = "") -> Iterator[Path]:
    """Holds the workdir's lock for the `with` body; WorkdirBusy if a live process has it."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with holding(root / LOCK_NAME, root, command) as path:
        yield path


def beside(target: str | Path) -> Path:
    """The lock file of a directory that is replaced whole (a store: built beside, renamed in):
    a sibling, so the lock outlives each rename; named apart from a workdir's own lock, which
    a run converting into `<workdir>/store` already holds."""
    target = Path(target).resolve()
    return target.parent / f".{target.name}{LOCK_NAME}"


@contextlib.contextmanager
def holding(path: Path, what: str | Path, command: str = "") -> Iterator[Path]:
    """Holds the lock file `path` (guarding `what`, named in the refusal) for the `with` body;
    WorkdirBusy if a live process has it.

    The holder's "PID command" is written into the lock file after the lock is taken (never
    before: a refused command must not overwrite the name of the one that holds it)."""
    if fcntl is None:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirBusy(
                f"{what} is in use by {_holder(path)}: one command writes it at a time; "
                "wait for it to finish (or stop it) and run this again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {command or Path(sys.argv[0]).name}\n".encode())
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released: nobody to name (the file itself stays)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
