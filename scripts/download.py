"""Rules download and download_weights: fetch a remote source (trying its mirrors) or a weight file, verified.

See unet_pipeline.stages.download and unet_pipeline.data.transfer.
"""

from dataclasses import asdict

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.data.transfer import DownloadOptions, download
from unet_pipeline.stages.download import candidates, fetch_verified

with rule_logging(snakemake):
    options = asdict(DownloadOptions.of(snakemake.config["download"]))
    if snakemake.rule == "download":
        spec = snakemake.params.spec
        found = candidates(snakemake.params.url, spec)
        memory_bytes = snakemake.resources.mem_mb * 2**20  # sections this job cannot hold are refused unread
        fetch_verified(found, snakemake.output[0], spec.get("pixel_sha256"), options, memory_bytes)
    else:
        download(snakemake.params.url, snakemake.output[0], sha256=snakemake.params.sha256, **options)
