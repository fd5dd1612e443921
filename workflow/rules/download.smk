# Stage 1a: fetch remote sources (http/https) of the datasets; local ones are read in place.


rule download:
    output:
        f"{RESULTS}/downloads/{{dataset}}/{{role}}/{{filename}}",
    params:
        url=lambda wildcards: remote_source(wildcards).location,
        sha256=lambda wildcards: DATASETS[wildcards.dataset][wildcards.role].get("sha256"),
    log:
        f"{RESULTS}/logs/download/{{dataset}}.{{role}}.{{filename}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/{{dataset}}.{{role}}.{{filename}}.tsv"
    threads: 1
    resources:
        mem_mb=256,
        runtime=60,
    conda:
        "../../envs/download.yaml"
    script:
        "../../scripts/download.py"
