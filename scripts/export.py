"""Rule export: ONNX and BioImage.IO package of a trained model (see unet_pipeline.stages.export)."""

import _library_path  # noqa: F401 (makes unet_pipeline importable)
from unet_pipeline.core.rule_logging import rule_logging
from unet_pipeline.stages.export import export_model

with rule_logging(snakemake):
    output = snakemake.output
    export_model(snakemake.input.model, snakemake.input.volume, output.onnx, output.package, snakemake.params.name)
