"""Rule predict: foreground probabilities of a dataset's volume (see unet_pipeline.predict)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.predict import predict_volume
from unet_pipeline.rule_logging import rule_logging

with rule_logging(snakemake):
    options = snakemake.params.options
    predict_volume(
        snakemake.input.model,
        snakemake.input.volume,
        snakemake.output[0],
        batch_size=options["batch_size"],
        device=options["device"],
        amp=options["amp"],
        tta=options["tta"],
        dtype=options["dtype"],
        threads=snakemake.threads,
        input_size=options["input_size"],
    )
