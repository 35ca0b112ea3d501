rule evaluate:
    """Clean pass, every test attack and corrupted test set of one model: its metrics rows and per-image predictions."""
    input:
        weights=model_path("weights.pt"),
        test=cache_input("test"),
        corrupted=PLAN.corrupted_dir if PLAN.corruptions else [],
    output:
        metrics="results/metrics/models/{seed}/{method}/{arch}.parquet",
        predictions="results/predictions/{seed}/{method}/{arch}.parquet",
        run="results/metrics/models/{seed}/{method}/{arch}.run.json",
        adversarial=PLAN.adversarial_files(),
    log:
        "results/logs/evaluate/{seed}/{method}/{arch}.log",
    benchmark:
        "results/benchmarks/evaluate/{seed}/{method}/{arch}.tsv"
    # Training first (it unlocks the most jobs), then evaluation, so no long job is left for the end.
    priority: 1
    conda:
        "../envs/torch.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=gpu_count,
        mem_mb=job_mem_mb("evaluate"),
        runtime=job_runtime("evaluate"),
    params:
        attacks=PLAN.eval_attacks,
        corruptions=PLAN.corruptions,
        batch_size=config["evaluation"]["batch_size"],
        adversarial_dir=adversarial_dir,
    script:
        "../scripts/evaluate.py"


rule aggregate:
    """All models' metrics in one Parquet table, checked against its schema."""
    input:
        metrics=all_models("results/metrics/models/{seed}/{method}/{arch}.parquet"),
    output:
        # Not in the HTML report (a browser cannot show Parquet): its tables and figures are.
        metrics="results/metrics/metrics.parquet",
    log:
        "results/logs/aggregate.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/aggregate.py"
