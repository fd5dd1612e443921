# Stage 5: overlap-tile prediction of whole volumes with a trained model, streamed chunk by chunk.


if PREDICTION_SHARDS == 1:

    rule predict:
        input:
            model=model_file,
            volume=PATHS["volume"],
        output:
            directory(PATHS["prediction"]),
        log:
            f"{RESULTS}/logs/predict/{{dataset}}.{{preset}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/predict/{{dataset}}.{{preset}}.tsv"
        conda:
            "../../envs/predict.yaml"
        threads: STAGE_THREADS
        resources:
            mem_mb=8000,
            runtime=240,
            gpu=lambda wildcards: PRESETS[wildcards.preset]["gpus"],
        params:
            options=PREDICTION_OPTIONS,
        script:
            "../../scripts/predict.py"

else:

    # prediction.shards > 1: one job creates the work store, one job per shard fills its chunks, the last checks
    # every chunk, writes pyramid and provenance and renames the store into place (unet_pipeline.stages.predict).
    rule predict_setup:
        input:
            model=model_file,
            volume=PATHS["volume"],
        output:
            temp(directory(PATHS["prediction_work"])),
        log:
            f"{RESULTS}/logs/predict_setup/{{dataset}}.{{preset}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/predict_setup/{{dataset}}.{{preset}}.tsv"
        conda:
            "../../envs/predict.yaml"
        # with prediction.input_size null it measures the tile all shard jobs use: on their device, threads, memory
        threads: STAGE_THREADS if MEASURED_TILE else 1
        resources:
            mem_mb=8000 if MEASURED_TILE else 2000,
            runtime=10,
            gpu=lambda wildcards: PRESETS[wildcards.preset]["gpus"] if MEASURED_TILE else 0,
        params:
            options=PREDICTION_OPTIONS,
            step="setup",
            prediction=lambda wildcards: PATHS["prediction"].format(**wildcards),
        script:
            "../../scripts/predict.py"

    rule predict_shard:
        input:
            work=ancient(PATHS["prediction_work"]),
            model=model_file,
            volume=PATHS["volume"],
        output:
            temp(PATHS["prediction_shard"]),
        log:
            f"{RESULTS}/logs/predict_shard/{{dataset}}.{{preset}}.{{shard}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/predict_shard/{{dataset}}.{{preset}}.{{shard}}.tsv"
        conda:
            "../../envs/predict.yaml"
        threads: STAGE_THREADS
        resources:
            mem_mb=8000,
            runtime=240,
            gpu=lambda wildcards: PRESETS[wildcards.preset]["gpus"],
        params:
            options=PREDICTION_OPTIONS,
            step="shard",
            prediction=lambda wildcards: PATHS["prediction"].format(**wildcards),
        script:
            "../../scripts/predict.py"

    rule predict:
        input:
            unpack(shard_outputs),
            work=ancient(PATHS["prediction_work"]),
            model=model_file,
            volume=PATHS["volume"],
        output:
            directory(PATHS["prediction"]),
        log:
            f"{RESULTS}/logs/predict/{{dataset}}.{{preset}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/predict/{{dataset}}.{{preset}}.tsv"
        conda:
            "../../envs/predict.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=60,
        params:
            options=PREDICTION_OPTIONS,
            step="finish",
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
