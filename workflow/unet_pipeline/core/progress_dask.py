"""Progress of a dask computation: ``progress.Progress`` lines in rule logs, dask's live bar on a terminal.

Kept apart from ``progress`` so that stages without dask do not import it.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

from .progress import Progress


@contextmanager
def dask_progress(what: str, log: logging.Logger):
    """Report the dask computations inside the block: log lines in rule logs, dask's live bar on a terminal."""
    if sys.stderr.isatty():
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=1.0):
            yield
        return
    from dask.callbacks import Callback

    class _Logged(Callback):
        def _start_state(self, dsk, state):
            self.progress = Progress(sum(len(state[key]) for key in ("ready", "waiting", "running")), what, log)

        def _posttask(self, key, result, dsk, state, worker_id):
            self.progress.update()

    with _Logged():
        yield
