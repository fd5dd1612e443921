# U-Net (Ronneberger et al. 2015) for EM and microscopy segmentation, end to end.
# Stages live in workflow/rules/*.smk, their logic in workflow/unet_pipeline/.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/weight_maps.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        all_targets(),
