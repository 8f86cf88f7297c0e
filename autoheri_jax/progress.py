"""A dependency-free progress line for training loops, and `say` for one-off status lines.

On a terminal it redraws one line (`\\r`); elsewhere (CI logs, pipes) it prints a line at
most every `min_interval_s`, so logs stay short but never silent.
"""

from __future__ import annotations

import sys
import time


def say(msg: str) -> None:
    """A status line, flushed at once (logs of long runs stay in order with the progress)."""
    print(msg, flush=True)


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
