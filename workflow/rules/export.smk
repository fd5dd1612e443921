# Stage 8: the trained model as ONNX and as a BioImage.IO model package.


rule export:
    input:
        model=PATHS["model"],
        volume=lambda wildcards: PATHS["volume"].format(dataset=trainset_datasets(wildcards.trainset)[0]),
    output:
        onnx=PATHS["onnx"],
        package=PATHS["bioimageio"],
    log:
        log_of("export", "trainset", "preset"),
    benchmark:
        benchmark_of("export", "trainset", "preset")
    conda:
        "../../envs/export.yaml"
    threads: 2
    resources:
        mem_mb=4096,
        runtime=30,
    params:
        name=lambda wildcards: f"U-Net {wildcards.preset} ({wildcards.trainset})",
    script:
        "../../scripts/export.py"
