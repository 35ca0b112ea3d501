rule evaluate:
    """Clean pass, every test attack and corrupted test set of one model: its metrics rows and per-image predictions."""
    input:
        weights="results/models/{seed}/{method}/{arch}/weights.pt",
        test=lambda w: cache_path("test", w.arch),
        corrupted=CORRUPTED_DIR if CORRUPTIONS else [],
    output:
        metrics="results/metrics/models/{seed}/{method}/{arch}.parquet",
        predictions="results/predictions/{seed}/{method}/{arch}.parquet",
        run="results/metrics/models/{seed}/{method}/{arch}.run.json",
        adversarial=adversarial_files(),
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
        attacks=EVAL_ATTACKS,
        corruptions=CORRUPTIONS,
        batch_size=config["evaluation"]["batch_size"],
        adversarial_dir=adversarial_dir,
    script:
        "../scripts/evaluate.py"


rule aggregate:
    """All models' metrics in one Parquet table, checked against its schema."""
    input:
        metrics=model_files("results/metrics/models/{seed}/{method}/{arch}.parquet"),
    output:
        # Not in the HTML report (a browser cannot show Parquet): its tables and figures are.
        metrics="results/metrics/metrics.parquet",
    log:
        "results/logs/aggregate.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/aggregate.py"


if OWN_ABLATION:

    use rule evaluate as evaluate_ablation with:
        input:
            weights=f"{ABLATION_DIR}/models/{{seed}}/{{method}}/{{arch}}/weights.pt",
            test=lambda w: cache_path("test", w.arch),
        output:
            metrics=f"{ABLATION_DIR}/metrics/models/{{seed}}/{{method}}/{{arch}}.parquet",
            predictions=f"{ABLATION_DIR}/predictions/{{seed}}/{{method}}/{{arch}}.parquet",
            run=f"{ABLATION_DIR}/metrics/models/{{seed}}/{{method}}/{{arch}}.run.json",
        log:
            f"results/logs/{ABLATION_TAG}/evaluate/{{seed}}/{{method}}/{{arch}}.log",
        benchmark:
            f"results/benchmarks/{ABLATION_TAG}/evaluate/{{seed}}/{{method}}/{{arch}}.tsv"
        resources:
            gpu=gpu_count,
            mem_mb=job_mem_mb("evaluate_ablation"),
            runtime=job_runtime("evaluate_ablation"),
        params:
            # Fig. 3 needs the clean pass and the confusion attack only.
            attacks=ABLATION_ATTACKS,
            corruptions=[],
            batch_size=config["evaluation"]["batch_size"],
            adversarial_dir=None,

    use rule aggregate as aggregate_ablation with:
        input:
            metrics=model_files(
                f"{ABLATION_DIR}/metrics/models/{{seed}}/{{method}}/{{arch}}.parquet",
                ABLATION_MODELS,
            ),
        output:
            metrics=f"{ABLATION_DIR}/metrics.parquet",
        log:
            f"results/logs/{ABLATION_TAG}/aggregate.log",
