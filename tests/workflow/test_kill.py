"""Stages killed with SIGKILL and rerun give the uninterrupted run's outputs byte for byte (issue 35, item 9).

CI runs one seeded kill of four stages that resume or replace large outputs; ``benchmarks/kill_test.py --kills 5``
runs every stage (its figures: benchmarks/README.md).
"""

import subprocess
import sys

import pytest
from helpers import REPO


@pytest.mark.workflow
def test_killed_stages_rerun_to_the_same_bytes_and_leave_no_temporaries(tmp_path, isbi_dir):
    command = [sys.executable, str(REPO / "benchmarks" / "kill_test.py"), "--kills", "1", "--seed", "1"]
    command += ["--stages", "ingest,train,predict,segment", "--workdir", str(tmp_path / "kills")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said[-4000:]
    assert "stages x kills: 4 x 1 = 4; differences: 0" in said, said[-4000:]
