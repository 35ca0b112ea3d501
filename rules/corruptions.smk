# Corrupted test sets (MedMNIST-C's dermoscopy corruptions) and calibration, beside the attacks.


rule corrupt:
    """The test images under each corruption and severity at 224 px, resized to every model resolution."""
    input:
        test=PLAN.corruption_source,
    output:
        corrupted=directory(PLAN.corrupted_dir),
    log:
        f"results/logs/data/{PLAN.cache_tag}corrupt.log",
    benchmark:
        f"results/benchmarks/data/{PLAN.cache_tag}corrupt.tsv"
    conda:
        "../envs/data.yaml"
    # Threads share the images (Snakemake caps them at --cores); at the paper's scale the job costs about 7 CPU-minutes.
    threads: 4
    params:
        conditions=PLAN.corruptions,
        corruption_set=config["corruptions"]["set"],
        seed=config["corruptions"]["seed"],
        sizes=sorted({PLAN.image_size(arch) for arch in PLAN.archs}),
    script:
        "../scripts/corrupt.py"


rule corruption_tables:
    """Corruption and calibration tables: mean and worst corruption accuracy, ECE; severity, reliability and image figures."""
    input:
        predictions=all_models("results/predictions/{seed}/{method}/{arch}.parquet"),
        test=PLAN.corruption_source,
    output:
        table_csv="results/tables/corruptions.csv",
        table_md="results/tables/corruptions.md",
        severity=report(
            "results/figures/corruption_severity.png",
            caption="../report/corruption_severity.rst",
            category="Corruptions and calibration",
        ),
        panel=report(
            "results/figures/corruption_panel.png",
            caption="../report/corruption_panel.rst",
            category="Corruptions and calibration",
        ),
        calibration_csv="results/tables/calibration.csv",
        calibration_md="results/tables/calibration.md",
        reliability=report(
            "results/figures/reliability.png",
            caption="../report/reliability.rst",
            category="Corruptions and calibration",
        ),
    log:
        "results/logs/corruption_tables.log",
    conda:
        "../envs/report.yaml"
    params:
        # Lists that read as words in the report; a change of any reruns the evaluate jobs, so the inputs change too.
        methods=readable_param(PLAN.report_methods),
        corruptions=readable_param(PLAN.corruption_names),
        attacks=readable_param(list(PLAN.attacks)),
        reliability_attack=PLAN.confusion_attack,
        bins=config["report"]["calibration_bins"],
        panel_severity=config["corruptions"]["panel_severity"],
        corruption_seed=config["corruptions"]["seed"],
        resamples=config["report"]["bootstrap_resamples"],
        seed=config["report"]["bootstrap_seed"],
    script:
        "../scripts/corruption_tables.py"
