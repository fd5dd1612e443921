# Stage 1b: validate a dataset's image and labels and write its OME-Zarr volume store.


checkpoint ingest:
    input:
        unpack(ingest_inputs),
    output:
        directory(PATHS["volume"]),
    log:
        log_of("ingest", "dataset"),
    benchmark:
        benchmark_of("ingest", "dataset")
    conda:
        "../../envs/ingest.yaml"
    threads: 1
    resources:
        mem_mb=2048,
        runtime=60,
    params:
        # URLs without credentials (Snakemake records params); ingest uses a remote source's URL for provenance only
        dataset=lambda wildcards: public_dataset(DATASETS[wildcards.dataset]),
    script:
        "../../scripts/ingest.py"
