"""A dependency-free progress line on stderr: slots done, slots per second, ETA."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", unit: str = "slots", stream=None, min_interval: float = 1.0,
                 start: int = 0):
        """``start``: slots already done (a resumed run): the bar counts absolute slots, the speed
        and ETA only the slots run in this process."""
        self.total, self.desc, self.unit = total, desc, unit
        self.start = start
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.done = start
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.min_interval = min_interval

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.done < self.total and now - self.last < self.min_interval:
            return
        self.last = now
        self.stream.write(("\r" if self.tty else "") + self.line(now) + ("" if self.tty else "\n"))
        self.stream.flush()

    def line(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        el = max(now - self.t0, 1e-9)
        rate = (self.done - self.start) / el
        frac = self.done / max(self.total, 1)
        width = 24
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        return (f"{self.desc} [{bar}] {self.done}/{self.total} {self.unit} "
                f"{rate:,.0f} {self.unit}/s elapsed {_fmt(el)} eta {_fmt(eta)}")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
