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
        cells=report(
            f"{PATHS['evaluation_dir']}/cells.csv",
            caption="../report/evaluation_cells.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        cell_overlays=report(
            f"{PATHS['evaluation_dir']}/cells.png",
            caption="../report/evaluation_cell_overlays.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
    log:
        log_of("evaluate", "dataset", "preset"),
    benchmark:
        benchmark_of("evaluate", "dataset", "preset")
    conda:
        "../../envs/evaluate.yaml"
    threads: STAGE_THREADS
    resources:
        mem_mb=2048,
        runtime=60,
    params:
        segmentation=config["segmentation"],
    script:
        "../../scripts/evaluate.py"


rule headline_scores:
    input:
        lambda wildcards: [
            PATHS["summary"].format(dataset=name, preset=wildcards.preset) for name in DATASETS if labelled(name)
        ],
    output:
        report(
            PATHS["headline_scores"],
            caption="../report/headline_scores.rst",
            category="Headline scores",
        ),
    log:
        log_of("headline_scores", "preset"),
    benchmark:
        benchmark_of("headline_scores", "preset")
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=512,
        runtime=5,
    script:
        "../../scripts/headline_scores.py"


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
        log_of("prediction_figure", "dataset", "preset"),
    benchmark:
        benchmark_of("prediction_figure", "dataset", "preset")
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1024,
        runtime=10,
    script:
        "../../scripts/prediction_figure.py"
