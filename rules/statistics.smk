# Statistics: a verdict on each claim of the paper, paired comparisons, sanity checks.


rule claims:
    """Each claim of the paper tested on the per-image predictions; DPAAT's paired comparisons."""
    input:
        predictions=all_models("results/predictions/{seed}/{method}/{arch}.parquet"),
        # Fig. 3's claims are tested on the ablation's own models when it has them.
        ablation_predictions=model_files(
            f"{ABLATION.dir}/predictions/{{seed}}/{{method}}/{{arch}}.parquet",
            ABLATION.models,
        ),
    output:
        claims_csv="results/tables/claims.csv",
        claims_md="results/tables/claims.md",
        comparisons_csv="results/tables/comparisons.csv",
        comparisons_md="results/tables/comparisons.md",
    log:
        "results/logs/claims.log",
    benchmark:
        "results/benchmarks/claims.tsv"
    conda:
        "../envs/report.yaml"
    params:
        attacks=readable_param(list(PLAN.attacks)),
        resamples=config["report"]["bootstrap_resamples"],
        permutations=config["report"]["permutation_resamples"],
        seed=config["report"]["bootstrap_seed"],
        # Another dataset keeps the method-against-method claims, with no paper numbers.
        paper_dataset=PLAN.paper_dataset,
    script:
        "../scripts/claims.py"


rule sanity:
    """Sanity checks against gradient masking for every model, and the robustness curves."""
    input:
        metrics="results/metrics/metrics.parquet",
    output:
        sanity="results/metrics/sanity.parquet",
        table_csv="results/tables/sanity.csv",
        table_md="results/tables/sanity.md",
        curves=report(
            "results/figures/robustness_curves.png",
            caption="../report/robustness_curves.rst",
            category="Sanity checks",
            labels={"Figure": "Robust accuracy against the attack budget"},
        ),
    log:
        "results/logs/sanity.log",
    conda:
        "../envs/report.yaml"
    params:
        sanity=shown(config["sanity"]),
        adversary=shown(config["training"]["adversary"]),
        attacks=shown(PLAN.attacks),
    script:
        "../scripts/sanity.py"
