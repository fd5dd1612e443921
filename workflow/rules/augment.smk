# Stage 3: the augmented training set (elastic deformation and friends), generated with dask into Zarr.


rule augment:
    input:
        volume=f"{RESULTS}/{{dataset}}/volume.zarr",
        weights=f"{RESULTS}/{{dataset}}/weights.zarr",
    output:
        augmented=directory(f"{RESULTS}/{{dataset}}/augmented/{{preset}}.zarr"),
        figure=report(
            f"{RESULTS}/{{dataset}}/figures/augmented_{{preset}}.png",
            caption="../report/augmented.rst",
            category="Augmentation",
            subcategory="{dataset}",
        ),
    log:
        f"{RESULTS}/logs/augment/{{dataset}}.{{preset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/augment/{{dataset}}.{{preset}}.tsv"
    conda:
        "../../envs/augment.yaml"
    threads: 2
    resources:
        mem_mb=4096,
        runtime=120,
    params:
        geometry=lambda wildcards: preset_geometry(wildcards.preset),
        input_size=lambda wildcards: PRESETS[wildcards.preset]["input_size"],
        options=lambda wildcards: augmentation_options(wildcards.preset),
    script:
        "../../scripts/augment.py"
