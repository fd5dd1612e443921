# Stage 2: the paper's border-emphasising loss weights of every labelled section.


rule weight_maps:
    input:
        volume=PATHS["volume"],
    output:
        weights=directory(PATHS["weights"]),
        figure=report(
            PATHS["weight_map_figure"],
            caption="../report/weight_map.rst",
            category="Weight maps",
            subcategory="{dataset}",
        ),
    log:
        log_of("weight_maps", "dataset"),
    benchmark:
        benchmark_of("weight_maps", "dataset")
    conda:
        "../../envs/weight_maps.yaml"
    threads: STAGE_THREADS
    resources:
        mem_mb=2048,
        runtime=30,
    params:
        # only what changes the weights: a new figure_section must not retrain everything downstream
        w0=config["weight_map"]["w0"],
        sigma=config["weight_map"]["sigma"],
    script:
        "../../scripts/weight_maps.py"
