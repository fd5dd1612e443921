"""Progress of long stages as log lines people can read: one every few seconds or steps, with rate and ETA.

Rule logs are files, not terminals: a live progress bar writes a carriage-return
update per refresh into them (hundreds of unreadable fragments). ``Progress``
logs one line at most every ``interval_s`` seconds and at 10 % steps, plus the
last; ``progress_dask.dask_progress`` does the same for a dask computation.
"""

from __future__ import annotations

import logging
import time

INTERVAL_S = 10.0


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


class Progress:
    """Counts finished items of a stage and logs "what: done/total (pct), rate, elapsed, ETA" now and then.

    Args:
        total: the number of items.
        what: what is counted, as it appears in the log (e.g. "predict results/x.zarr: chunks").
        log: the logger to write to.
        interval_s: at most one line per this many seconds, besides the 10 % steps and the end.
    """

    def __init__(self, total: int, what: str, log: logging.Logger, interval_s: float = INTERVAL_S):
        self.total, self.what, self.log, self.interval_s = max(total, 0), what, log, interval_s
        self.done, self.started = 0, time.monotonic()
        self._last_time, self._last_decile = self.started, 0

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        decile = 10 * self.done // self.total if self.total else 10
        if self.done >= self.total or decile > self._last_decile or now - self._last_time >= self.interval_s:
            self._last_time, self._last_decile = now, decile
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * self.done / self.total if self.total else 100.0
        eta = _duration((self.total - self.done) / rate) if rate > 0 else "?"
        return (
            f"{self.what}: {self.done}/{self.total} ({percent:.0f}%), {rate:.2f}/s, "
            f"elapsed {_duration(elapsed)}, ETA {eta}"
        )
