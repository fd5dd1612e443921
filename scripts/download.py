"""Rules download and download_weights: fetch a remote source (trying its mirrors) or a weight file, verified.

The URLs come from the config, not from the rule's params, which hold them without credentials (Snakemake
records params in its metadata). See unet_pipeline.stages.download and unet_pipeline.data.transfer.
"""

from dataclasses import asdict

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.data.readers import MemoryLimit
from unet_pipeline.data.sources import pretrained_url, resolve_source
from unet_pipeline.data.transfer import DownloadOptions, download
from unet_pipeline.stages.download import candidates, fetch_verified

with rule_logging(snakemake):
    options = asdict(DownloadOptions.of(snakemake.config["download"]))
    if snakemake.rule == "download":
        dataset = snakemake.config["datasets"][snakemake.wildcards.dataset]
        spec = dataset[snakemake.wildcards.role]
        found = candidates(resolve_source(dataset, snakemake.wildcards.role).location, spec)
        memory = MemoryLimit.of_job(snakemake.resources.mem_mb, snakemake.rule)  # what it cannot hold: refused unread
        fetch_verified(found, snakemake.output[0], spec, options, memory)
    else:
        url = pretrained_url(snakemake.config["pretrained_weights"], snakemake.wildcards.filename)
        download(url, snakemake.output[0], sha256=snakemake.params.sha256, **options)
