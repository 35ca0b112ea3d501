rule attack:
    """Attack one trained model's test set; keeps the adversarial images as float32."""
    input:
        weights="results/models/{seed}/{method}/{arch}/weights.pt",
        test=lambda w: cache_path("test", w.arch),
    output:
        adversarial="results/attacks/{seed}/{method}/{arch}/{attack}.pt",
    log:
        "results/logs/attack/{seed}/{method}/{arch}/{attack}.log",
    benchmark:
        "results/benchmarks/attack/{seed}/{method}/{arch}/{attack}.tsv"
    # Training first (it unlocks the most jobs), then attacks, so no long job is left for the end.
    priority: 1
    conda:
        "../envs/torch.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=gpu_count,
        mem_mb=8000,
        runtime=2 * 60,
    params:
        attack=lambda w: ATTACKS[w.attack],
        device=config["training"]["device"],
        batch_size=config["evaluation"]["batch_size"],
    script:
        "../scripts/attack.py"
