"""The prediction work store: discarded for another signature only while no job writes into it."""

import subprocess
import sys

import pytest
from unet_pipeline.core.errors import PipelineError
from unet_pipeline.inference.work_store import WorkStore

WRITE = """
import sys, time
from unet_pipeline.inference.work_store import WorkStore
work = WorkStore(sys.argv[1], (2, 16, 16), "uint8", "model A")
with work.writer(0):
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_store_being_written_is_not_discarded_for_another_signature(tmp_path):
    out = tmp_path / "prediction.zarr"
    writer = subprocess.Popen([sys.executable, "-c", WRITE, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        with pytest.raises(PipelineError, match=r"another model, input or option set, and a job is still writing"):
            WorkStore(out, (2, 16, 16), "uint8", "model B")
        assert (tmp_path / ".prediction.zarr.partial" / "zarr.json").exists(), "the writer's store was deleted"
    finally:
        writer.kill()
        writer.wait()
    work = WorkStore(out, (2, 16, 16), "uint8", "model B")  # the writer is gone: discarded and made anew
    assert work.pending() == work.blocks()
    work.finish({})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prediction.zarr"], "no lock or marker left"
