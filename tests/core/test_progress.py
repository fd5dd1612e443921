"""Progress in rule logs: a few readable lines with rate and ETA, not carriage-return bars."""

import logging

import dask
import dask.array as da
from unet_pipeline.core.progress import Progress
from unet_pipeline.core.progress_dask import dask_progress


def test_progress_logs_at_ten_percent_steps_and_the_end(caplog):
    caplog.set_level(logging.INFO)
    progress = Progress(200, "predict x.zarr: chunks", logging.getLogger("t"), interval_s=3600)
    for _ in range(200):
        progress.update()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 10, "one line per 10 %, none per item"
    assert lines[0].startswith("predict x.zarr: chunks: 20/200 (10%), ") and "/s, elapsed " in lines[0]
    assert lines[-1].startswith("predict x.zarr: chunks: 200/200 (100%)") and "ETA 0m00s" in lines[-1]


def test_dask_progress_writes_lines_without_carriage_returns(caplog, capsys):
    caplog.set_level(logging.INFO)
    with dask.config.set(scheduler="synchronous"), dask_progress("weight maps: tasks", logging.getLogger("t")):
        da.ones((40, 10), chunks=(1, 10)).sum(axis=1).compute()
    lines = [record.getMessage() for record in caplog.records]
    assert 1 <= len(lines) <= 12 and lines[-1].startswith("weight maps: tasks: ") and "(100%)" in lines[-1]
    assert "\r" not in capsys.readouterr().err, "no live bar when stderr is not a terminal"
