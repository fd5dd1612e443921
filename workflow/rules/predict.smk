# Stage 5: overlap-tile prediction of whole volumes with a trained model, streamed chunk by chunk.
# prediction.shards 1: the predict job predicts the whole volume. More: one predict_setup job creates the work
# store, one predict_shard job per shard fills its chunks, and the predict job checks every chunk, writes
# pyramid and provenance and renames the store into place (unet_pipeline.stages.predict). The three share
# the env, script and options of the predict rule.
SHARDED = PREDICTION_SHARDS != 1


rule predict:
    input:
        unpack(shard_outputs) if SHARDED else [],
        model=model_file,
        volume=PATHS["volume"],
        work=ancient(PATHS["prediction_work"]) if SHARDED else [],
    output:
        directory(PATHS["prediction"]),
    log:
        log_of("predict", "dataset", "preset"),
    benchmark:
        benchmark_of("predict", "dataset", "preset")
    conda:
        "../../envs/predict.yaml"
    threads: 1 if SHARDED else STAGE_THREADS
    resources:
        mem_mb=2000 if SHARDED else 8000,
        runtime=60 if SHARDED else 240,
        gpu=lambda wildcards: 0 if SHARDED else PRESETS[wildcards.preset]["gpus"],
    params:
        options=PREDICTION_OPTIONS,
        step="finish" if SHARDED else "all",
    script:
        "../../scripts/predict.py"


if SHARDED:

    use rule predict as predict_setup with:
        input:
            model=model_file,
            volume=PATHS["volume"],
        output:
            temp(directory(PATHS["prediction_work"])),
        log:
            log_of("predict_setup", "dataset", "preset"),
        benchmark:
            benchmark_of("predict_setup", "dataset", "preset")
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

    use rule predict as predict_shard with:
        input:
            work=ancient(PATHS["prediction_work"]),
            model=model_file,
            volume=PATHS["volume"],
        output:
            temp(PATHS["prediction_shard"]),
        log:
            log_of("predict_shard", "dataset", "preset", "shard"),
        benchmark:
            benchmark_of("predict_shard", "dataset", "preset", "shard")
        threads: STAGE_THREADS
        resources:
            mem_mb=8000,
            runtime=240,
            gpu=lambda wildcards: PRESETS[wildcards.preset]["gpus"],
        params:
            options=PREDICTION_OPTIONS,
            step="shard",
            prediction=lambda wildcards: PATHS["prediction"].format(**wildcards),


rule submission_tiff:
    input:
        PATHS["prediction"],
    output:
        PATHS["submission"],
    log:
        log_of("submission_tiff", "dataset", "preset"),
    benchmark:
        benchmark_of("submission_tiff", "dataset", "preset")
    conda:
        "../../envs/predict.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime=30,
    script:
        "../../scripts/submission_tiff.py"
