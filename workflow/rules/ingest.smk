# Stage 1b: validate a dataset's image and labels and write its OME-Zarr volume store.


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        directory(f"{RESULTS}/{{dataset}}/volume.zarr"),
    params:
        dataset=lambda wildcards: DATASETS[wildcards.dataset],
    log:
        f"{RESULTS}/logs/ingest/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{dataset}}.tsv"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=60,
    conda:
        "../../envs/ingest.yaml"
    script:
        "../../scripts/ingest.py"
