"""How the command line reports a failure: one line and exit status 2 for anything a user can
cause, 128 + N for a signal, a traceback only for a bug (or under --debug).

A user can cause: a bad config or config file, a bad data file or store, a missing or modified
artefact (a record file of another layout or format version), an export directory that is not
one, an output that would overwrite an input, a workdir or store in use, a non-finite loss, and
every OSError (a read-only or unwritable place, a full disk, a path that is a file): the
message names the file, key or process. Anything else is a bug in this package, and its
traceback is the useful report.

Signals: SIGINT raises KeyboardInterrupt (Python's default); `terminating` makes SIGTERM do
the same as a TrainingInterrupted, so a run stopped by either outside the training loops and
saves (which catch both and save first, train/signals.py) -- loading the data, the edge
evidence, the validated selection, the evaluation -- still exits 128 + N with the resume hint
instead of dying silently under SIGTERM's default action.

Libraries: orbax logs every failed thread of an asynchronous save with its traceback before
the save's exception reaches the command; `one_line_errors` drops those records (the command's
one line reports the failure), unless --debug.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import threading
from collections.abc import Iterator

DEBUG_ENV = "AUTOHERI_DEBUG"
RESUME_HINT = "run the same command again to resume"

_UNWRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EDQUOT}


def _user_errors() -> tuple[type[BaseException], ...]:
    # imported here: each lives in its own layer, and only a failing command needs them
    from autoheri_jax.artifacts import MissingArtifactError
    from autoheri_jax.config import ConfigError
    from autoheri_jax.data.errors import DataFormatError, StoreError
    from autoheri_jax.report.inputs import ReportError
    from autoheri_jax.safe_output import OutputError
    from autoheri_jax.search.records import RecordError
    from autoheri_jax.serving.runtime import ExportError
    from autoheri_jax.train.checkpoint import CheckpointError
    from autoheri_jax.train.loop import NonFiniteLossError
    from autoheri_jax.workdir_format import WorkdirFormatError
    from autoheri_jax.workdir_lock import WorkdirBusy

    return (
        ConfigError,
        MissingArtifactError,
        NonFiniteLossError,
        DataFormatError,
        StoreError,
        CheckpointError,
        ExportError,
        OutputError,
        WorkdirBusy,
        WorkdirFormatError,
        ReportError,
        RecordError,
    )


def exit_code(e: BaseException) -> int | None:
    """The exit status of a failure a user can cause; None for a bug (let it raise)."""
    from autoheri_jax.train.signals import TrainingInterrupted

    if isinstance(e, TrainingInterrupted):
        return 128 + e.signum
    if isinstance(e, (OSError, *_user_errors())):
        return 2
    return None


def one_line(e: BaseException) -> str:
    """The message after "autoheri STEP: " for a failure exit_code accepted."""
    from autoheri_jax.train.signals import TrainingInterrupted

    if isinstance(e, TrainingInterrupted):
        return str(e)
    if isinstance(e, OSError) and not isinstance(e, _user_errors()):
        return "error: " + _os_error(e)
    return f"error: {e}".replace("\n", " ")


def _os_error(e: OSError) -> str:
    """The path, what the system said and what to do: `[Errno 30] ...` with 20 lines of
    traceback tells a user none of it."""
    path = e.filename if e.filename is not None else "a file"
    where = f"{path} -> {e.filename2}" if e.filename2 is not None else f"{path}"
    what = e.strerror or type(e).__name__
    if e.errno in _UNWRITABLE:
        hint = (
            "cannot write there: choose a writable --workdir / --out, or fix the "
            "permissions; nothing was lost"
        )
    elif e.errno in _FULL:
        hint = f"the disk is full: free space and {RESUME_HINT}"
    elif e.errno in (errno.EEXIST, errno.ENOTDIR):
        hint = "a file stands where a directory is needed: choose another path"
    else:
        hint = "check the path"
    return f"{where}: {what}; {hint}"


@contextlib.contextmanager
def terminating(step: str) -> Iterator[None]:
    """SIGTERM raises TrainingInterrupted in the main thread for the `with` body (as SIGINT
    raises KeyboardInterrupt); the previous handler comes back after. The training loops and
    `deferred` saves install their own handlers inside and restore this one."""
    from autoheri_jax.train.signals import TrainingInterrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise TrainingInterrupted(f"{signal.Signals(signum).name}; {RESUME_HINT}", signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _NoLibraryErrors(logging.Filter):
    """Drops ERROR records (and their tracebacks) of a library's logger: orbax logs each
    failed thread of an asynchronous save with its traceback (330-640 lines on a full disk)
    before the save's own exception reaches the command, which reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


LIBRARY_LOGGERS = ("absl",)  # orbax's (through absl.logging)


@contextlib.contextmanager
def one_line_errors(debug: bool) -> Iterator[None]:
    """For the `with` body: library ERROR records are dropped (their failure surfaces as an
    exception the command reports); under --debug nothing is dropped. Warnings stay."""
    if debug:
        yield
        return
    quiet = _NoLibraryErrors()
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    for log in loggers:
        log.addFilter(quiet)
    try:
        yield
    finally:
        for log in loggers:
            log.removeFilter(quiet)
