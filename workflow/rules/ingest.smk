# Stage 1b: validate a dataset's image and labels and write its OME-Zarr volume store.


checkpoint ingest:
    input:
        unpack(ingest_inputs),
    output:
        directory(PATHS["volume"]),
    log:
        f"{RESULTS}/logs/ingest/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{dataset}}.tsv"
    conda:
        "../../envs/ingest.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=60,
    params:
        dataset=lambda wildcards: DATASETS[wildcards.dataset],
    script:
        "../../scripts/ingest.py"
