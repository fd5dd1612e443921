"""Rule submission_tiff: a prediction as the ISBI 2012 submission format (see unet_pipeline.stages.predict)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.stages.predict import write_submission_tiff

with rule_logging(snakemake):
    write_submission_tiff(snakemake.input[0], snakemake.output[0])
