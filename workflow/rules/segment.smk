# Stage 7: cells as instance labels from the probabilities, with a per-cell table.
# segmentation.shards 1: the segment job makes the cells alone. More: one segment_shard job per shard fills the
# work folder with its sections (3D: its blocks' fragments), then the segment job writes the cells from it
# (unet_pipeline.stages.segment). They share the env, script and options.
rule segment:
    input:
        unpack(segment_inputs),
        shards=segment_shard_outputs if SEGMENT_SHARDS > 1 else [],
    output:
        cells=directory(PATHS["segmentation"]),
        table=PATHS["cell_table"],
    log:
        log_of("segment", "dataset", "preset"),
    benchmark:
        benchmark_of("segment", "dataset", "preset")
    conda:
        "../../envs/segment.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=60,
    params:
        options=config["segmentation"],
        step="all",
    script:
        "../../scripts/segment.py"


if SEGMENT_SHARDS > 1:

    use rule segment as segment_shard with:
        input:
            unpack(segment_inputs),
        output:
            temp(PATHS["segmentation_shard"]),
        log:
            log_of("segment_shard", "dataset", "preset", "shard"),
        benchmark:
            benchmark_of("segment_shard", "dataset", "preset", "shard")
        params:
            options=config["segmentation"],
            step="shard",
            cells=lambda wildcards: PATHS["segmentation"].format(**wildcards),


rule cells_submission_tiff:
    input:
        PATHS["segmentation"],
    output:
        PATHS["cells_submission"],
    log:
        log_of("cells_submission_tiff", "dataset", "preset"),
    benchmark:
        benchmark_of("cells_submission_tiff", "dataset", "preset")
    conda:
        "../../envs/segment.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime=30,
    script:
        "../../scripts/cells_submission_tiff.py"
