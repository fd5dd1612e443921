# Stage 6: ISBI 2012 scores of the predictions against the labels, and the report's figures.


rule evaluate:
    input:
        prediction=f"{RESULTS}/{{dataset}}/predictions/{{preset}}.zarr",
        volume=f"{RESULTS}/{{dataset}}/volume.zarr",
    output:
        sections=report(
            f"{RESULTS}/{{dataset}}/evaluation/{{preset}}/sections.csv",
            caption="../report/evaluation_sections.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        summary=f"{RESULTS}/{{dataset}}/evaluation/{{preset}}/summary.json",
        thresholds=report(
            f"{RESULTS}/{{dataset}}/evaluation/{{preset}}/thresholds.png",
            caption="../report/evaluation_thresholds.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        overlays=report(
            f"{RESULTS}/{{dataset}}/evaluation/{{preset}}/overlays.png",
            caption="../report/evaluation_overlays.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}.{{preset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}.{{preset}}.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 2
    resources:
        mem_mb=2048,
        runtime=60,
    script:
        "../../scripts/evaluate.py"


rule prediction_figure:
    input:
        prediction=f"{RESULTS}/{{dataset}}/predictions/{{preset}}.zarr",
        volume=f"{RESULTS}/{{dataset}}/volume.zarr",
    output:
        report(
            f"{RESULTS}/{{dataset}}/figures/prediction_{{preset}}.png",
            caption="../report/prediction.rst",
            category="Predictions",
            subcategory="{dataset}",
        ),
    log:
        f"{RESULTS}/logs/prediction_figure/{{dataset}}.{{preset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prediction_figure/{{dataset}}.{{preset}}.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime=10,
    script:
        "../../scripts/prediction_figure.py"
