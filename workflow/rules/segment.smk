# Stage 7: cells as instance labels from the probabilities, with a per-cell table.


rule segment:
    input:
        unpack(segment_inputs),
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
    script:
        "../../scripts/segment.py"


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
