rule evaluate:
    """Clean and adversarial predictions of one model into its metrics rows."""
    input:
        weights="results/models/{seed}/{method}/{arch}/weights.pt",
        test=lambda w: cache_path("test", w.arch),
        adversarial=expand(
            "results/attacks/{{seed}}/{{method}}/{{arch}}/{attack}.pt", attack=ATTACKS
        ),
    output:
        metrics="results/metrics/models/{seed}/{method}/{arch}.parquet",
    log:
        "results/logs/evaluate/{seed}/{method}/{arch}.log",
    benchmark:
        "results/benchmarks/evaluate/{seed}/{method}/{arch}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        device=config["training"]["device"],
        batch_size=config["evaluation"]["batch_size"],
    script:
        "../scripts/evaluate.py"


rule aggregate:
    """All models' metrics in one Parquet table, checked against its schema."""
    input:
        metrics=model_files("results/metrics/models/{seed}/{method}/{arch}.parquet"),
    output:
        metrics=report(
            "results/metrics/metrics.parquet",
            caption="../report/metrics.rst",
            category="Metrics",
        ),
    log:
        "results/logs/aggregate.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/aggregate.py"
