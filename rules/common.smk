"""Snakemake glue over the plan (dpaat.plan): wildcard constraints, input functions and job resources."""

# The library's torch-free plan runs in snakemake itself (the Snakefile put scripts/ on the path).
from dpaat.front_page import front_page, readable_param, shown
from dpaat.paper_results import arch_label
from dpaat.plan import HTML_TABLES, SPLITS, WEIGHTS_RECORD, Plan, model_files

PLAN = Plan(config)
ABLATION = PLAN.ablation
# The HTML report's front page (report/workflow.rst) in words: its template sees only the config.
config["report_front_page"] = front_page(PLAN.config, "results/data/splits.parquet")


wildcard_constraints:
    seed=r"\d+",
    method=r"[a-z_]+",
    arch=r"[a-z0-9_]+",
    attack=r"[a-z0-9]+",
    split="|".join(SPLITS),
    size=r"\d+",


def cache_input(split):
    """A model rule's input: one split's cache at the resolution of the job's arch."""
    return lambda wildcards: PLAN.cache_path(split, wildcards.arch)


def model_path(name, root="results"):
    """A file of the job's trained model (`root`: the ablation's folder for its own models)."""
    return f"{root}/models/{{seed}}/{{method}}/{{arch}}/{name}"


def training_params(ablation=False):
    """A train rule's `training` params: exactly the result settings its method reads."""
    return lambda wildcards: PLAN.training_params(wildcards.method, ablation)


def reference_weights(wildcards):
    """The STD model AMAT transfers its loss threshold ξ from, when ξ is not fixed."""
    return PLAN.reference_weights(wildcards.seed, wildcards.method, wildcards.arch)


def adversarial_dir(wildcards):
    """Where the evaluate job saves its adversarial images (None: they are not kept)."""
    return PLAN.adversarial_dir(wildcards.seed, wildcards.method, wildcards.arch)


def imagenet_weights(wildcards):
    """The weights job's record when models.pretrained, else nothing.

    Ancient, so a rerun of the weights job (another machine, a new arch) retrains nothing.
    """
    return ancient(WEIGHTS_RECORD) if config["models"]["pretrained"] else []


if PLAN.missing_weights():
    logger.warning(
        f"{WEIGHTS_RECORD} lists ImageNet checkpoints that are gone ({', '.join(PLAN.missing_weights())}): "
        "add --forcerun weights to fetch them again (trained models are kept)"
    )


def job_runtime(rule_name, ablation=False):
    """Runtime request (minutes) of a model rule's job from the config; a retry asks for more."""

    def runtime(wildcards, threads, attempt):
        method = getattr(wildcards, "method", None)
        return PLAN.runtime_minutes(
            rule_name, wildcards.arch, method, threads, attempt, ablation
        )

    return runtime


def job_mem_mb(rule_name):
    """Host memory request (MB) of a model rule's job from the config."""
    return lambda wildcards: PLAN.mem_mb(rule_name, wildcards.arch)


def gpu_count(wildcards):
    """GPU tag of model jobs: 0 when the config pins them to the CPU, else 1."""
    return PLAN.gpu_count()


def all_models(pattern):
    """`pattern` filled with every trained model's seed, method and arch."""
    return model_files(pattern, PLAN.models)


def figure_labels(figure):
    """Report labels of a per-CNN figure: the figure and the CNN's name, in place of its path."""
    return lambda wildcards: {"Figure": figure, "CNN": arch_label(wildcards.arch)}
