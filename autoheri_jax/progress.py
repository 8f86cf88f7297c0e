"""Status lines through `logging`, and a dependency-free progress line for training loops.

Status lines (`say`, the CLI's results and errors, data preparation's lines) go to the
"autoheri_jax" logger hierarchy: `say` and the CLI log under "autoheri_jax", data preparation
under "autoheri_jax.data" (per-module loggers below it). By default, once this module is imported,
one handler on "autoheri_jax" prints the bare message (no level or time prefix) as `print` did:
status lines to stdout, flushed at once (logs of long runs stay in order with the progress), and
data-preparation lines, warnings and errors to stderr. The handler looks sys.stdout / sys.stderr
up at each line, so redirect_stdout and pytest's capsys see them. "autoheri_jax" is set to INFO
(unless already set) and does not propagate, so a root config (logging.basicConfig) does not
print every line twice; pytest's caplog therefore needs `propagate = True` to see them.

  logging.getLogger("autoheri_jax").setLevel(logging.WARNING)   # silence (errors still shown)
  log = logging.getLogger("autoheri_jax")                       # redirect: replace the handler
  log.handlers[:] = [logging.FileHandler("autoheri.log")]
  logging.getLogger("autoheri_jax").propagate = True            # or hand them to root's config

The CLI's `--quiet` sets WARNING (and turns the progress lines off) for one command.

`Progress` is a progress bar, not a log line: it writes to stderr directly. On a terminal it
redraws one line (`\\r`); elsewhere (CI logs, pipes) it prints a line at most every
`min_interval_s`, so logs stay short but never silent.
"""

from __future__ import annotations

import logging
import sys
import time

PACKAGE = "autoheri_jax"
DATA = "autoheri_jax.data"
_HANDLER_NAME = "autoheri_jax.default"


class StdStreamsHandler(logging.Handler):
    """The default handler: a record's message on sys.stdout, or on sys.stderr for data
    preparation (loggers under autoheri_jax.data) and WARNING or above; the stream is looked up
    at each emit (never bound at import), and flushed after each line."""

    def __init__(self, level: int = logging.NOTSET):
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(message)s"))

    @staticmethod
    def stream_for(record: logging.LogRecord):
        data = record.name == DATA or record.name.startswith(DATA + ".")
        return sys.stderr if data or record.levelno >= logging.WARNING else sys.stdout

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            stream = self.stream_for(record)
            stream.write(msg + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _install_default_handler() -> None:
    """Once per process (idempotent, also on reload): the default handler, INFO, no propagation."""
    log = logging.getLogger(PACKAGE)
    if not any(h.name == _HANDLER_NAME for h in log.handlers):
        handler = StdStreamsHandler()
        handler.name = _HANDLER_NAME
        log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    log.propagate = False


_install_default_handler()
_log = logging.getLogger(PACKAGE)


def get_logger(name: str) -> logging.Logger:
    """The logger `name` (under "autoheri_jax"), with the package's default handler installed
    (importing this module installs it)."""
    return logging.getLogger(name)


def say(msg: str) -> None:
    """A status line: INFO on the "autoheri_jax" logger (by default: stdout, flushed at once)."""
    _log.info(msg)


class Progress:
    def __init__(self, total: int, desc: str, enabled: bool = True, min_interval_s: float = 10.0):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.min_interval_s = 0.2 if self.tty else min_interval_s
        self.start = self._last = time.perf_counter()
        self.done = 0

    def update(self, done: int, **fields: float) -> None:
        self.done = done
        now = time.perf_counter()
        if not self.enabled or (now - self._last < self.min_interval_s and done < self.total):
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        frac = done / max(self.total, 1)
        eta = elapsed / max(frac, 1e-9) - elapsed
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        extra = " ".join(f"{k}={v:.4g}" for k, v in fields.items())
        line = (
            f"{self.desc} [{bar}] {done}/{self.total} {100 * frac:5.1f}% "
            f"{done / elapsed:,.1f} steps/s eta {eta:,.0f}s {extra}"
        )
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K")
            if done >= self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
