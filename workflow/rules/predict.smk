# Stage 5: overlap-tile prediction of whole volumes with a trained model, streamed chunk by chunk.


rule predict:
    input:
        model=PATHS["model"],
        volume=PATHS["volume"],
    output:
        directory(PATHS["prediction"]),
    log:
        f"{RESULTS}/logs/predict/{{dataset}}.{{preset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{dataset}}.{{preset}}.tsv"
    conda:
        "../../envs/predict.yaml"
    threads: 8
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda wildcards: PRESETS[wildcards.preset]["gpus"],
    params:
        options={key: value for key, value in config["prediction"].items() if key != "submission_tiff"},
    script:
        "../../scripts/predict.py"


rule submission_tiff:
    input:
        PATHS["prediction"],
    output:
        PATHS["submission"],
    log:
        f"{RESULTS}/logs/submission_tiff/{{dataset}}.{{preset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/submission_tiff/{{dataset}}.{{preset}}.tsv"
    conda:
        "../../envs/predict.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime=30,
    script:
        "../../scripts/submission_tiff.py"
