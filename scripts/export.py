"""Rule export: ONNX and BioImage.IO package of a trained model (see unet_pipeline.export)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.export import export_model
from unet_pipeline.rule_logging import rule_logging

with rule_logging(snakemake):
    output = snakemake.output
    export_model(snakemake.input.model, snakemake.input.volume, output.onnx, output.package, snakemake.params.name)
