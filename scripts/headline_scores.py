"""Rule headline_scores: the report's front-page table of every evaluation summary (see unet_pipeline.stages.evaluate)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.stages.evaluate import write_headline_table

with rule_logging(snakemake):
    write_headline_table(snakemake.input, snakemake.output[0])
