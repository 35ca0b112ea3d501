# The report's readable side: tables as HTML pages (HTML_TABLES in common.smk).

for _name, (_caption, _category, _label) in HTML_TABLES.items():

    rule:
        name:
            f"html_{_name}"
        input:
            markdown=f"results/tables/{_name}.md",
        output:
            page=report(
                f"results/tables/{_name}.html",
                caption=f"../report/{_caption}.rst",
                category=_category,
                labels={"Table": _label},
            ),
        log:
            f"results/logs/html/{_name}.log",
        conda:
            "../envs/report.yaml"
        params:
            title=_label,
        script:
            "../scripts/html_table.py"


rule gradcam:
    """Grad-CAM panels of STD, AT and DPAAT on correctly predicted test images (Fig. 4)."""
    input:
        weights=lambda w: expand(
            "results/models/{seed}/{method}/{arch}/weights.pt",
            seed=PLAN.seeds[0],
            method=config["report"]["gradcam_methods"],
            arch=w.arch,
        ),
        test=cache_input("test"),
    output:
        figure=report(
            "results/figures/gradcam_{arch}.png",
            caption="../report/gradcam.rst",
            category="Figures",
            subcategory="Fig. 4 Grad-CAM",
            labels=figure_labels("Fig. 4"),
        ),
        scores="results/metrics/gradcam/{arch}.parquet",
    log:
        "results/logs/gradcam/{arch}.log",
    benchmark:
        "results/benchmarks/gradcam/{arch}.tsv"
    conda:
        "../envs/report.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=gpu_count,
        mem_mb=job_mem_mb("gradcam"),
        runtime=job_runtime("gradcam"),
    params:
        methods=readable_param(config["report"]["gradcam_methods"]),
        seed=PLAN.seeds[0],
        per_class=config["report"]["gradcam_images_per_class"],
    script:
        "../scripts/gradcam.py"


rule gradcam_scores:
    """Grad-CAM localisation scores of all architectures in one table."""
    input:
        scores=expand("results/metrics/gradcam/{arch}.parquet", arch=PLAN.gradcam_archs),
    output:
        scores="results/metrics/gradcam.parquet",
        table_csv="results/tables/gradcam.csv",
        table_md="results/tables/gradcam.md",
        table_tex="results/tables/gradcam.tex",
    log:
        "results/logs/gradcam_scores.log",
    conda:
        "../envs/report.yaml"
    params:
        resamples=config["report"]["bootstrap_resamples"],
        seed=config["report"]["bootstrap_seed"],
    script:
        "../scripts/gradcam_scores.py"


rule confusion:
    """Fig. 2: one CNN's confusion matrices, clean and under the confusion attack, one column per method."""
    input:
        metrics="results/metrics/metrics.parquet",
    output:
        figure=report(
            "results/figures/confusion_{arch}.png",
            caption="../report/confusion.rst",
            category="Figures",
            subcategory="Fig. 2 confusion matrices",
            labels=figure_labels("Fig. 2"),
        ),
    log:
        "results/logs/confusion/{arch}.log",
    conda:
        "../envs/report.yaml"
    params:
        attack=config["evaluation"]["confusion_attack"],
        methods=readable_param(PLAN.confusion_methods()),
    script:
        "../scripts/confusion.py"


rule report:
    """Tables I and II and Fig. 3 and the training curves from the metrics."""
    input:
        metrics="results/metrics/metrics.parquet",
        ablation_metrics=PLAN.ablation_metrics,
        predictions=all_models("results/predictions/{seed}/{method}/{arch}.parquet"),
        histories=all_models("results/models/{seed}/{method}/{arch}/history.parquet"),
        gradcam="results/metrics/gradcam.parquet" if PLAN.gradcam_archs else [],
    output:
        table1_csv="results/tables/table1.csv",
        table1_md="results/tables/table1.md",
        table1_tex="results/tables/table1.tex",
        table2_csv="results/tables/table2.csv",
        table2_md="results/tables/table2.md",
        table2_tex="results/tables/table2.tex",
        ablation=report(
            "results/figures/ablation.png",
            caption="../report/ablation.rst",
            category="Figures",
            subcategory="Fig. 3 ablation",
            labels={
                "Figure": "Fig. 3",
                "CNN": ", ".join(map(arch_label, PLAN.ablation_archs)),
            },
        ),
        curves=report(
            "results/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="Figures",
            subcategory="Training",
            labels={"Figure": "Training curves", "CNN": "every CNN"},
        ),
    log:
        "results/logs/report.log",
    conda:
        "../envs/report.yaml"
    params:
        # The paper's numbers belong to HAM10000's mel, bkl and nv alone.
        paper_numbers=config["report"]["paper_numbers"] and PLAN.paper_dataset,
        attack=config["evaluation"]["confusion_attack"],
        ablation_archs=readable_param(PLAN.ablation_archs),
        attacks=readable_param(list(PLAN.attacks)),
        resamples=config["report"]["bootstrap_resamples"],
        seed=config["report"]["bootstrap_seed"],
    script:
        "../scripts/report.py"


rule baselines:
    """The paper's five methods and the baselines TRADES and MART side by side, with intervals."""
    input:
        metrics="results/metrics/metrics.parquet",
        predictions=all_models("results/predictions/{seed}/{method}/{arch}.parquet"),
    output:
        table_csv="results/tables/baselines.csv",
        table_md="results/tables/baselines.md",
        table_tex="results/tables/baselines.tex",
    log:
        "results/logs/baselines.log",
    conda:
        "../envs/report.yaml"
    params:
        attacks=readable_param(list(PLAN.attacks)),
        resamples=config["report"]["bootstrap_resamples"],
        seed=config["report"]["bootstrap_seed"],
    script:
        "../scripts/baselines.py"
