# Stage 1a: fetch remote sources (http/https) of the datasets, and pretrained weights; local ones are read in place.


rule download:
    output:
        PATHS["download"],
    log:
        log_of("download", "dataset", "role", "filename"),
    benchmark:
        benchmark_of("download", "dataset", "role", "filename")
    conda:
        "../../envs/download.yaml"
    threads: 1
    resources:
        mem_mb=256,
        runtime=60,
    params:
        # without credentials: Snakemake records params in its metadata; the job reads them from the config
        url=lambda wildcards: remote_source(wildcards).public,
        spec=lambda wildcards: public_spec(DATASETS[wildcards.dataset][wildcards.role]),
    script:
        "../../scripts/download.py"


rule download_weights:
    output:
        PATHS["weights_download"],
    log:
        log_of("download_weights", "filename"),
    benchmark:
        benchmark_of("download_weights", "filename")
    conda:
        "../../envs/download.yaml"
    threads: 1
    resources:
        mem_mb=256,
        runtime=60,
    params:
        url=lambda wildcards: pretrained_source(wildcards)["url"],
        sha256=lambda wildcards: pretrained_source(wildcards)["sha256"],
    script:
        "../../scripts/download.py"
