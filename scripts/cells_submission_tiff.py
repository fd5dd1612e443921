"""Rule cells_submission_tiff: the cells as an ISBI 2012 submission TIFF (see unet_pipeline.stages.segment)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.stages.segment import write_cells_tiff

with rule_logging(snakemake):
    write_cells_tiff(snakemake.input[0], snakemake.output[0])
