# Stage 1a: fetch remote sources (http/https) of the datasets, and pretrained weights; local ones are read in place.


rule download:
    output:
        PATHS["download"],
    log:
        f"{RESULTS}/logs/download/{{dataset}}.{{role}}.{{filename}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/{{dataset}}.{{role}}.{{filename}}.tsv"
    conda:
        "../../envs/download.yaml"
    threads: 1
    resources:
        mem_mb=256,
        runtime=60,
    params:
        url=lambda wildcards: remote_source(wildcards).location,
        spec=lambda wildcards: DATASETS[wildcards.dataset][wildcards.role],
    script:
        "../../scripts/download.py"


rule download_weights:
    output:
        PATHS["weights_download"],
    log:
        f"{RESULTS}/logs/download_weights/{{filename}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download_weights/{{filename}}.tsv"
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
