rule weights:
    """Download each architecture's ImageNet checkpoint into the torch cache (kept when present), sha256-verified."""
    output:
        record=WEIGHTS_RECORD,
    log:
        "results/logs/weights.log",
    benchmark:
        "results/benchmarks/weights.tsv"
    # Downloads: run where snakemake runs (the login node has the internet, compute nodes often not).
    localrule: True
    conda:
        "../envs/data.yaml"
    params:
        archs=ARCHS,
        base_url=config["models"]["weights_base_url"],
        files=config["models"]["weights_files"],
        destinations=WEIGHTS_DESTINATIONS,
    script:
        "../scripts/weights.py"


rule train:
    """Train one method on one architecture with one seed (a GPU job when CUDA is visible)."""
    input:
        train=lambda w: cache_path("train", w.arch),
        val=lambda w: cache_path("val", w.arch),
        reference=reference_weights,
        imagenet=imagenet_weights,
    output:
        weights="results/models/{seed}/{method}/{arch}/weights.pt",
        history="results/models/{seed}/{method}/{arch}/history.parquet",
        run="results/models/{seed}/{method}/{arch}/run.json",
    log:
        "results/logs/train/{seed}/{method}/{arch}.log",
    benchmark:
        "results/benchmarks/train/{seed}/{method}/{arch}.tsv"
    # Training first (it unlocks the most jobs), then evaluation, so no long job is left for the end.
    priority: 2
    # A job killed at its time limit resumes from its checkpoint with twice the runtime.
    retries: 1
    conda:
        "../envs/torch.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=gpu_count,
        mem_mb=job_mem_mb("train"),
        runtime=job_runtime("train"),
    params:
        training=training_params(TRAINING_SETTINGS),
        pretrained=config["models"]["pretrained"],
        checkpoint="results/checkpoints/{seed}/{method}/{arch}.pt",
    script:
        "../scripts/train.py"


if OWN_ABLATION:

    use rule train as train_ablation with:
        output:
            weights=f"{ABLATION_DIR}/models/{{seed}}/{{method}}/{{arch}}/weights.pt",
            history=f"{ABLATION_DIR}/models/{{seed}}/{{method}}/{{arch}}/history.parquet",
            run=f"{ABLATION_DIR}/models/{{seed}}/{{method}}/{{arch}}/run.json",
        log:
            f"results/logs/{ABLATION_TAG}/train/{{seed}}/{{method}}/{{arch}}.log",
        benchmark:
            f"results/benchmarks/{ABLATION_TAG}/train/{{seed}}/{{method}}/{{arch}}.tsv"
        resources:
            gpu=gpu_count,
            mem_mb=job_mem_mb("train"),
            runtime=job_runtime("train", ABLATION_TRAINING_SETTINGS),
        params:
            training=training_params(ABLATION_TRAINING_SETTINGS),
            pretrained=config["models"]["pretrained"],
            checkpoint=f"results/checkpoints/{ABLATION_TAG}/{{seed}}/{{method}}/{{arch}}.pt",
