"""Rule ingest: write a dataset's OME-Zarr volume store (see unet_pipeline.stages.ingest)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.data.readers import MemoryLimit
from unet_pipeline.stages.ingest import ingest

with rule_logging(snakemake):
    ingest(
        snakemake.wildcards.dataset,
        snakemake.params.dataset,
        snakemake.input.image,
        snakemake.input.get("labels"),
        snakemake.output[0],
        memory=MemoryLimit.of_job(
            snakemake.resources.mem_mb, snakemake.rule
        ),  # sections it cannot hold: refused unread
    )
