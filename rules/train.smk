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
        archs=PLAN.archs,
        base_url=config["models"]["weights_base_url"],
        files=config["models"]["weights_files"],
        destinations=PLAN.weights_destinations,
    script:
        "../scripts/weights.py"


rule train:
    """Train one method on one architecture with one seed (a GPU job when CUDA is visible)."""
    input:
        train=cache_input("train"),
        val=cache_input("val"),
        reference=reference_weights,
        imagenet=imagenet_weights,
    output:
        weights=model_path("weights.pt"),
        history=model_path("history.parquet"),
        run=model_path("run.json"),
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
        training=training_params(),
        pretrained=config["models"]["pretrained"],
        checkpoint="results/checkpoints/{seed}/{method}/{arch}.pt",
    script:
        "../scripts/train.py"
