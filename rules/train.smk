rule train:
    """Train one method on one architecture with one seed (a GPU job when CUDA is visible)."""
    input:
        train=lambda w: cache_path("train", w.arch),
        val=lambda w: cache_path("val", w.arch),
        reference=reference_weights,
    output:
        weights="results/models/{seed}/{method}/{arch}/weights.pt",
        history="results/models/{seed}/{method}/{arch}/history.parquet",
        run="results/models/{seed}/{method}/{arch}/run.json",
    params:
        training=config["training"],
        pretrained=config["models"]["pretrained"],
        checkpoint="results/checkpoints/{seed}/{method}/{arch}.pt",
    log:
        "results/logs/train/{seed}/{method}/{arch}.log",
    benchmark:
        "results/benchmarks/train/{seed}/{method}/{arch}.tsv"
    threads: config["training"]["threads"]
    resources:
        gpu=gpu_count,
        mem_mb=8000,
        runtime=12 * 60,
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/train.py"
