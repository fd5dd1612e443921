"""Run the workflow with the shipped config plus an overlay, as the accuracy benchmarks do.

Benchmarks import this module by name (Python puts the script's folder, benchmarks/, on sys.path).
"""

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = REPO / "config" / "config.yaml"
# the ISBI 2012 stacks: ../shared/data/isbi2012 beside the checkout, or the folder UNET_SHARED_DATA names
ISBI_DATA = Path(os.environ.get("UNET_SHARED_DATA", REPO.parent / "shared" / "data" / "isbi2012"))


def shipped_config() -> dict:
    """config/config.yaml as the workflow sees it: the schema's defaults filled in (Snakemake's ``validate``)."""
    from snakemake.utils import validate

    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def readme_fine_tuning_preset() -> dict:
    """The preset of README's "Fine-tuning the ISBI model on your own labelled stack", as users copy it."""
    section = (REPO / "README.md").read_text().split("## Fine-tuning the ISBI model", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    (preset,) = yaml.safe_load(block)["presets"].values()
    return preset


def run_shipped(overlay: dict, name: str, cores: int, targets=(), options=()) -> subprocess.CompletedProcess:
    """``snakemake`` with config/config.yaml and ``overlay`` (written to ``overlay['results']/name.yaml``).

    ``options``: further snakemake options (e.g. ``--forcerun evaluate``).

    Returns the finished process (output captured; the caller decides what a failure means).
    """
    overlay_file = Path(overlay["results"]) / f"{name}.yaml"
    overlay_file.write_text(yaml.safe_dump(overlay))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO)]
    command += [
        "--cores",
        str(cores),
        *options,
        "--configfile",
        str(SHIPPED_CONFIG),
        str(overlay_file),
    ]
    command += ["--", *map(str, targets)] if targets else []
    return subprocess.run(command, check=False, capture_output=True, text=True)


def cpu_model() -> str:
    """The `lscpu` model name, printed with every timing."""
    for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"
