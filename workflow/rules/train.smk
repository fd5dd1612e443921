# Stage 4: train the preset's U-Net on the augmented set of a labelled dataset (trainset), optionally starting
# from a trained model (init_from).


rule train:
    input:
        unpack(train_inputs),
    output:
        model=PATHS["model"],
        metadata=f"{PATHS['model_dir']}/model.json",
        curve_csv=report(
            f"{PATHS['model_dir']}/training_curve.csv",
            caption="../report/training_curve.rst",
            category="Training",
            subcategory="{preset}",
        ),
        curve_png=report(
            f"{PATHS['model_dir']}/training_curve.png",
            caption="../report/training_curve.rst",
            category="Training",
            subcategory="{preset}",
        ),
    log:
        log_of("train", "trainset", "preset"),
    benchmark:
        benchmark_of("train", "trainset", "preset")
    conda:
        "../../envs/train.yaml"
    threads: STAGE_THREADS
    resources:
        mem_mb=16000,
        runtime=lambda wildcards: PRESETS[wildcards.preset]["runtime_minutes"],
        gpu=lambda wildcards: PRESETS[wildcards.preset]["gpus"],
    params:
        preset=lambda wildcards: PRESETS[wildcards.preset],
        encoder_weights=lambda wildcards: encoder_weights_file(wildcards.preset),
        # not an output: Snakemake deletes a failed job's outputs, checkpoints must survive to resume
        checkpoints=f"{PATHS['model_dir']}/checkpoints",
    script:
        "../../scripts/train.py"
