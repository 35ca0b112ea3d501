# Data stage: acquire -> index -> split -> cache (file contracts in notes/CONTRACTS.md).


rule acquire:
    """Download (Dataverse or ISIC 2018), find (data.local_dir) or generate the raw files; the manifest lists them."""
    output:
        manifest="results/data/raw/manifest.json",
    log:
        "results/logs/data/acquire.log",
    benchmark:
        "results/benchmarks/data/acquire.tsv"
    localrule: PLAN.acquire_downloads()
    conda:
        "../envs/data.yaml"
    # Rendering the synthetic images is the first job and nothing else can run beside it.
    threads: 4
    params:
        settings=PLAN.acquire_settings(),
    script:
        "../scripts/acquire.py"


rule index:
    """Extract and check every image (and mask) the manifest lists; join them with the metadata."""
    input:
        manifest=rules.acquire.output.manifest,
    output:
        index="results/data/index.parquet",
        images=directory("results/data/images"),
        masks=directory("results/data/masks"),
    log:
        "results/logs/data/index.log",
    benchmark:
        "results/benchmarks/data/index.tsv"
    conda:
        "../envs/data.yaml"
    params:
        max_unreadable=config["data"]["max_unreadable"],
    script:
        "../scripts/index.py"


rule split:
    """Lesion-grouped, stratified train/val/test split; requested vs achieved counts per class and split."""
    input:
        index=rules.index.output.index,
    output:
        splits="results/data/splits.parquet",
        counts_csv="results/tables/split_counts.csv",
        counts_md="results/tables/split_counts.md",
    log:
        "results/logs/data/split.log",
    benchmark:
        "results/benchmarks/data/split.tsv"
    conda:
        "../envs/data.yaml"
    params:
        classes=PLAN.classes,
        train_per_class=config["data"]["train_per_class"],
        test_per_class=config["data"]["test_per_class"],
        val_fraction=config["data"]["val_fraction"],
        group_by_lesion=config["data"]["group_by_lesion"],
        exact_counts=config["data"]["exact_counts"],
        seed=config["data"]["split_seed"],
        # A dataset's own split: an ImageFolder's train/ and test/ always, MedMNIST's unless re-split.
        predefined=PLAN.predefined_split(),
    script:
        "../scripts/split.py"


rule cache:
    """One split's images (and masks) resized to size x size, as uint8 tensors."""
    input:
        splits=rules.split.output.splits,
        index=rules.index.output.index,
        images=rules.index.output.images,
        masks=rules.index.output.masks,
    output:
        cache=f"results/data/cache/{PLAN.cache_tag}{{split}}_{{size}}px.pt",
    log:
        f"results/logs/data/cache/{PLAN.cache_tag}{{split}}_{{size}}px.log",
    benchmark:
        f"results/benchmarks/data/cache/{PLAN.cache_tag}{{split}}_{{size}}px.tsv"
    wildcard_constraints:
        split="train|val|test",
        size=r"\d+",
    conda:
        "../envs/data.yaml"
    threads: 2
    params:
        classes=PLAN.classes,
        centre_crop=config["data"]["centre_crop"],
    script:
        "../scripts/cache.py"
