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
        claims_csv=report(
            "results/tables/claims.csv",
            caption="../report/claims.rst",
            category="Claims",
        ),
        claims_md="results/tables/claims.md",
        comparisons_csv=report(
            "results/tables/comparisons.csv",
            caption="../report/comparisons.rst",
            category="Claims",
        ),
        comparisons_md="results/tables/comparisons.md",
    log:
        "results/logs/claims.log",
    benchmark:
        "results/benchmarks/claims.tsv"
    conda:
        "../envs/report.yaml"
    params:
        attacks=list(PLAN.attacks),
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
        table_csv=report(
            "results/tables/sanity.csv",
            caption="../report/sanity.rst",
            category="Sanity checks",
        ),
        table_md="results/tables/sanity.md",
        curves=report(
            "results/figures/robustness_curves.png",
            caption="../report/robustness_curves.rst",
            category="Sanity checks",
        ),
    log:
        "results/logs/sanity.log",
    conda:
        "../envs/report.yaml"
    params:
        sanity=config["sanity"],
        adversary=config["training"]["adversary"],
        attacks=PLAN.attacks,
    script:
        "../scripts/sanity.py"
