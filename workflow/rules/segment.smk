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
        threshold=config["segmentation"]["threshold"],
        min_size=config["segmentation"]["min_size"],
    script:
        "../../scripts/segment.py"
