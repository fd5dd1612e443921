"""Rules download and download_weights: fetch one remote file, verified (see unet_pipeline.download)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.download import download
from unet_pipeline.rule_logging import rule_logging

with rule_logging(snakemake):
    options = snakemake.config["download"]
    download(
        snakemake.params.url,
        snakemake.output[0],
        sha256=snakemake.params.sha256,
        retries=options["retries"],
        backoff_s=options["backoff_s"],
        timeout_s=options["timeout_s"],
    )
