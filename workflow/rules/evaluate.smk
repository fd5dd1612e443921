# Stage 6: ISBI 2012 scores of the predictions against the labels, and the report's figures.


rule evaluate:
    input:
        prediction=PATHS["prediction"],
        volume=PATHS["volume"],
    output:
        sections=report(
            f"{PATHS['evaluation_dir']}/sections.csv",
            caption="../report/evaluation_sections.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        summary=PATHS["summary"],
        thresholds=report(
            f"{PATHS['evaluation_dir']}/thresholds.png",
            caption="../report/evaluation_thresholds.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        overlays=report(
            f"{PATHS['evaluation_dir']}/overlays.png",
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
        prediction=PATHS["prediction"],
        volume=PATHS["volume"],
    output:
        report(
            PATHS["prediction_figure"],
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
