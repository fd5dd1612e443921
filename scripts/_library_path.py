"""Put the pipeline library (workflow/unet_pipeline) on sys.path for the rule scripts.

Why this exists: with ``--use-conda`` every rule runs in its own env from
envs/, built from conda packages only, where the library is not installed (and
an exported PYTHONPATH would make ``snakemake --lint`` complain). Snakemake runs
each script with its own folder on sys.path, so ``import _library_path`` works
from every script, locally, in a conda env or on a cluster node. Tests and
benchmarks import the installed library instead (``pip install -e .``).
"""

import sys
from pathlib import Path

LIBRARY_DIR = str(Path(__file__).resolve().parents[1] / "workflow")
if LIBRARY_DIR not in sys.path:
    sys.path.insert(0, LIBRARY_DIR)
