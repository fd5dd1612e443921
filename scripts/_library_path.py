"""Put the pipeline library (workflow/unet_pipeline) on sys.path for the rule scripts.

Snakemake runs each script with its own folder on sys.path, so ``import
_library_path`` works from every script, locally, in a conda env or on a
cluster node, without installing the library or setting PYTHONPATH.
"""

import sys
from pathlib import Path

LIBRARY_DIR = str(Path(__file__).resolve().parents[1] / "workflow")
if LIBRARY_DIR not in sys.path:
    sys.path.insert(0, LIBRARY_DIR)
