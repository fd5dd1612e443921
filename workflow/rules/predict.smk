# Stage 5: overlap-tile prediction of whole volumes with a trained model, streamed chunk by chunk.


rule predict:
    input:
        model=f"{RESULTS}/models/{{preset}}/model.pt",
        volume=f"{RESULTS}/{{dataset}}/volume.zarr",
    output:
        directory(f"{RESULTS}/{{dataset}}/predictions/{{preset}}.zarr"),
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
        f"{RESULTS}/{{dataset}}/predictions/{{preset}}.zarr",
    output:
        f"{RESULTS}/{{dataset}}/predictions/{{preset}}.tif",
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
