# Stage 3: the augmented training set (elastic deformation and friends), generated with dask into Zarr.


rule augment:
    input:
        volume=PATHS["volume"],
        weights=PATHS["weights"],
    output:
        augmented=directory(PATHS["augmented"]),
        figure=report(
            PATHS["augmented_figure"],
            caption="../report/augmented.rst",
            category="Augmentation",
            subcategory="{dataset}",
        ),
    log:
        log_of("augment", "dataset", "preset"),
    benchmark:
        benchmark_of("augment", "dataset", "preset")
    conda:
        "../../envs/augment.yaml"
    threads: STAGE_THREADS
    resources:
        mem_mb=4096,
        runtime=120,
    params:
        geometry=lambda wildcards: preset_geometry(wildcards.preset),
        input_size=lambda wildcards: PRESETS[wildcards.preset]["input_size"],
        options=lambda wildcards: augmentation_options(wildcards.preset),
    script:
        "../../scripts/augment.py"
