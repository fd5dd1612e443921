"""keep_freed_memory: training steps stop faulting their activations' pages in afresh."""

import subprocess
import sys

import pytest
from helpers import REPO

STEPS = """
import resource, sys, torch
from unet_pipeline.core.allocator import keep_freed_memory
from unet_pipeline.models.unet import UNetConfig, build_model

if sys.argv[1] == "kept" and not keep_freed_memory():
    raise SystemExit("keep_freed_memory did not take")
torch.set_num_threads(1)
model = build_model(UNetConfig(levels=3, base_channels=8))
optimizer = torch.optim.Adam(model.parameters())
x = torch.randn(2, 1, 188, 188)
for step in range(25):
    if step == 5:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    optimizer.zero_grad()
    model(x).mean().backward()
    optimizer.step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_step(setting: str) -> float:
    command = [sys.executable, "-c", STEPS, setting]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO / "workflow", check=True)
    return float(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_training_steps_reuse_freed_memory_instead_of_faulting_it_in_again():
    # measured on a 2-core Xeon: about 7000 page faults per step with glibc's defaults, 34 kept
    kept, default = faults_per_step("kept"), faults_per_step("default")
    assert kept < default / 10, (kept, default)
