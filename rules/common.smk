"""Helpers shared by the rules: wildcard values, paths and the final targets."""

import sys
from pathlib import Path

# The library's torch-free helpers (ImageNet checkpoint paths, job resources) run in snakemake itself.
sys.path.insert(0, str(Path(workflow.basedir).parent / "scripts"))
from dpaat.imagenet_weights import weights_file
from dpaat import job_resources
from dpaat.job_resources import mem_mb, runtime_minutes
from dpaat.paper_results import BASELINES, arch_label
from dpaat.sanity import SanityPlan
from dpaat.front_page import front_page, readable_param, shown
from dpaat.data.classes import dataset_classes, is_paper_dataset

# The classes, known when planning: data.classes, or for null every class of the dataset
# (an ImageFolder's class folders, MedMNIST's INFO labels). Written back into the config so
# every rule's params and the job resources see the same list.
CLASSES = dataset_classes(config["data"])
config["data"]["classes"] = CLASSES
# HAM10000 with the paper's three classes: only then do its numbers and dataset-specific claims apply.
PAPER_DATASET = is_paper_dataset(config["data"], CLASSES)

SEEDS = [str(seed) for seed in config["seeds"]]
ARCHS = config["models"]["archs"]
METHODS = config["training"]["methods"]
ATTACKS = {
    attack["name"]: {key: value for key, value in attack.items() if key != "name"}
    for attack in config["attacks"]
}
if len(ATTACKS) != len(config["attacks"]):
    raise ValueError(
        "config attacks: two attacks share a name; give each a unique name"
    )
if "clean" in ATTACKS:
    raise ValueError(
        "config attacks: 'clean' names the unattacked test set; rename that attack"
    )
# Sanity checks against gradient masking add test attacks of their own (dpaat.sanity).
SANITY = SanityPlan.from_config(config["sanity"], config["training"]["adversary"])
SANITY.check_names(ATTACKS)
# What every evaluate job runs: the configured test attacks, then the sanity attacks.
EVAL_ATTACKS = {**ATTACKS, **SANITY.attacks}
SPLITS = ["train", "val", "test"]
# The HTML report's front page (report/workflow.rst) in words: its template sees only the config.
config["report_front_page"] = front_page(config, "results/data/splits.parquet")
# What a training job depends on: everything under `training` except the list of
# methods, so adding a method does not retrain the others, and the execution settings
# (the jobs read them from snakemake.config and snakemake.threads), so moving to
# another machine reruns nothing.
TRAINING_SETTINGS = {
    key: value
    for key, value in config["training"].items()
    if key not in {"methods", "device", "threads"}
}
# Methods that need the STD model of their architecture (AMAT takes ξ from it).
NEEDS_STD_REFERENCE = {"amat"}
# Settings sections read by one method alone: only that method's train jobs get them,
# so adding such a method (and its schema defaults) reruns no other job.
OWN_SETTINGS = {"trades", "mart"}


def training_params(settings):
    """A train rule's `training` params: `settings` without other methods' own sections."""
    return lambda wildcards: {
        key: value
        for key, value in settings.items()
        if key not in OWN_SETTINGS or key == wildcards.method
    }


# What determines the acquired files of each data.source: a change reruns acquire and all after it.
ACQUIRE_SETTINGS = {
    "synthetic": ["source", "synthetic"],
    "ham10000": ["source", "base_url", "download_masks", "masks_datafile_id"],
    "isic2018": ["source", "isic_base_url"],
    "local": ["source", "local_dir", "local_layout", "require_published_checksums"],
    "imagefolder": ["source", "local_dir"],
    "medmnist": ["source", "local_dir", "require_published_checksums"],
}


def acquire_settings():
    """The data settings that determine the acquired files (MedMNIST: which file, not how it is split)."""
    data = config["data"]
    settings = {key: data[key] for key in ACQUIRE_SETTINGS[data["source"]]}
    if data["source"] == "medmnist":
        settings["medmnist"] = {key: data["medmnist"][key] for key in ("flag", "size")}
    return settings


def acquire_downloads():
    """Whether acquire downloads: it then runs where snakemake runs (a cluster's login node has the
    internet, its compute nodes often not); generating or hashing files may go to a node.
    """
    data = config["data"]
    return data["source"] in {"ham10000", "isic2018"} or (
        data["source"] == "medmnist" and not data.get("local_dir")
    )


wildcard_constraints:
    seed=r"\d+",
    method=r"[a-z_]+",
    arch=r"[a-z0-9_]+",
    attack=r"[a-z0-9]+",
    split="|".join(SPLITS),
    size=r"\d+",


def image_size(arch):
    """Input resolution of an architecture (InceptionV3 has its own)."""
    return job_resources.image_size(config, arch)


# Centre-cropped and squashed caches live apart, so a changed data.centre_crop never reuses a cache.
CACHE_TAG = "centre_crop/" if config["data"]["centre_crop"] else ""


def cache_path(split, arch):
    """Preprocessed cache of one split at the resolution an architecture needs."""
    return f"results/data/cache/{CACHE_TAG}{split}_{image_size(arch)}px.pt"


def model_dir(seed, method, arch):
    return f"results/models/{seed}/{method}/{arch}"


def reference_weights(wildcards):
    """The STD model AMAT transfers its loss threshold ξ from, when ξ is not fixed."""
    if (
        wildcards.method in NEEDS_STD_REFERENCE
        and config["training"]["amat"]["xi"] is None
    ):
        return f"{model_dir(wildcards.seed, 'std', wildcards.arch)}/weights.pt"
    return []


def adversarial_files():
    """The evaluate rule's adversarial-image outputs: one per attack, only when they are kept."""
    if not config["evaluation"]["keep_adversarial"]:
        return []
    return expand(
        "results/attacks/{{seed}}/{{method}}/{{arch}}/{attack}.pt", attack=EVAL_ATTACKS
    )


def adversarial_dir(wildcards):
    """Where the evaluate job saves its adversarial images (None: they are not kept)."""
    if not config["evaluation"]["keep_adversarial"]:
        return None
    return f"results/attacks/{wildcards.seed}/{wildcards.method}/{wildcards.arch}"


WEIGHTS_RECORD = "results/weights/imagenet.json"
# Where the weights job puts each checkpoint on this machine (TORCH_HOME). A parameter of
# that job, so a machine whose torch cache is elsewhere fetches them again (retraining nothing).
WEIGHTS_DESTINATIONS = {
    arch: str(weights_file(arch, files=config["models"]["weights_files"]))
    for arch in ARCHS
}


def imagenet_weights(wildcards):
    """The weights job's record when models.pretrained, else nothing.

    Ancient, so a rerun of the weights job (another machine, a new arch) retrains nothing.
    """
    return ancient(WEIGHTS_RECORD) if config["models"]["pretrained"] else []


if config["models"]["pretrained"] and Path(WEIGHTS_RECORD).is_file():
    _gone = [p for p in WEIGHTS_DESTINATIONS.values() if not Path(p).is_file()]
    if _gone:
        logger.warning(
            f"{WEIGHTS_RECORD} lists ImageNet checkpoints that are gone ({', '.join(_gone)}): "
            "add --forcerun weights to fetch them again (trained models are kept)"
        )


def job_runtime(rule, training=None):
    """Runtime request (minutes) of a model rule's job from the config; a retry asks for more.

    `training` replaces training settings (the ablation's own epochs).
    """
    settings = {**config, "training": {**config["training"], **(training or {})}}

    def runtime(wildcards, threads, attempt):
        method = getattr(wildcards, "method", None)
        return runtime_minutes(
            settings, rule, wildcards.arch, method, threads=threads, attempt=attempt
        )

    return runtime


def job_mem_mb(rule):
    """Host memory request (MB) of a model rule's job from the config."""
    return lambda wildcards: mem_mb(config, rule, wildcards.arch)


def gpu_count(wildcards):
    """GPU tag of model jobs: 0 when the config pins them to the CPU, else 1."""
    return 0 if config["training"]["device"] == "cpu" else 1


def present(archs):
    """The configured archs among `archs`, in config order."""
    return [arch for arch in ARCHS if arch in archs]


# The ablation-only methods are trained only on the ablation figure's archs.
ABLATION_METHODS = {"d_a", "d_b"}
ABLATION_ARCHS = present(config["report"]["ablation_archs"]) or ARCHS
MODELS = [
    (seed, method, arch)
    for seed in SEEDS
    for method in METHODS
    for arch in ARCHS
    if method not in ABLATION_METHODS or arch in ABLATION_ARCHS
]


def model_files(pattern, models=MODELS):
    """`pattern` filled with every trained model's (or `models`') seed, method and arch."""
    return [
        pattern.format(seed=seed, method=method, arch=arch)
        for seed, method, arch in models
    ]


# Fig. 3's ablation: its own schedule (paper: batch 64, 100 epochs) and models when the
# schedule differs from the main one, else the main models of its methods.
ABLATION_TRAINING_SETTINGS = {
    **TRAINING_SETTINGS,
    **{
        key: config["ablation"][key]
        for key in ("batch_size", "epochs")
        if config["ablation"][key] is not None
    },
}
OWN_ABLATION = ABLATION_TRAINING_SETTINGS != TRAINING_SETTINGS
# The schedule is in the paths, so two ablation schedules never share a model either.
ABLATION_TAG = "ablation/batch{batch_size}_epochs{epochs}".format(
    **ABLATION_TRAINING_SETTINGS
)
ABLATION_DIR = f"results/{ABLATION_TAG}"
ABLATION_MODELS = (
    [
        (seed, method, arch)
        for seed in SEEDS
        for method in config["ablation"]["methods"]
        for arch in ABLATION_ARCHS
    ]
    if OWN_ABLATION
    else []
)


CONFUSION_ATTACK = config["evaluation"]["confusion_attack"]
if CONFUSION_ATTACK not in ATTACKS:
    raise ValueError(
        f"evaluation.confusion_attack {CONFUSION_ATTACK!r} is not among the "
        f"configured attacks {sorted(ATTACKS)}; name one of them"
    )
ABLATION_ATTACKS = {CONFUSION_ATTACK: ATTACKS[CONFUSION_ATTACK]}
# The metrics Fig. 3 is drawn from.
ABLATION_METRICS = (
    f"{ABLATION_DIR}/metrics.parquet"
    if OWN_ABLATION
    else "results/metrics/metrics.parquet"
)


GRADCAM_ARCHS = (
    present(config["report"]["gradcam_archs"])
    if set(config["report"]["gradcam_methods"]) <= set(METHODS)
    else []
)
CONFUSION_ARCHS = present(config["report"]["confusion_archs"])


def final_outputs():
    """Every table, figure and metrics file the configuration asks for."""
    # The claims first: the HTML report lists categories in the order it meets them.
    targets = [
        "results/tables/claims.csv",
        "results/tables/claims.md",
        "results/metrics/metrics.parquet",
        "results/figures/training_curves.png",
        "results/figures/ablation.png",
    ]
    targets += expand(
        "results/tables/{table}.{ext}",
        table=["table1", "table2"],
        ext=["csv", "md", "tex"],
    )
    targets += expand("results/tables/comparisons.{ext}", ext=["csv", "md"])
    if set(BASELINES) & set(METHODS):  # the baselines table, not Tables I/II or Fig. 2
        targets += expand("results/tables/baselines.{ext}", ext=["csv", "md", "tex"])
    if SANITY.attacks:
        targets += ["results/metrics/sanity.parquet", "results/tables/sanity.md"]
        targets.append("results/figures/robustness_curves.png")
    targets += expand("results/figures/confusion_{arch}.png", arch=CONFUSION_ARCHS)
    if GRADCAM_ARCHS:
        targets += expand("results/figures/gradcam_{arch}.png", arch=GRADCAM_ARCHS)
        targets.append("results/metrics/gradcam.parquet")
        targets += expand("results/tables/gradcam.{ext}", ext=["csv", "md", "tex"])
    return targets + html_tables(targets)


# The report's readable side: figures labelled by figure and CNN, tables as HTML pages.
def figure_labels(figure):
    """Report labels of a per-CNN figure: the figure and the CNN's name, in place of its path."""
    return lambda wildcards: {"Figure": figure, "CNN": arch_label(wildcards.arch)}


# The tables the report shows inline, from their Markdown (the report's viewer only downloads
# a CSV): name -> (caption file in report/, category, label). Tables not planned are skipped.
HTML_TABLES = {
    "claims": ("claims", "Claims", "The paper's claims and our verdicts"),
    "comparisons": ("comparisons", "Claims", "DPAAT against AT, SAT and AMAT"),
    "sanity": ("sanity", "Sanity checks", "Sanity checks against gradient masking"),
    "table1": ("table1", "Tables", "Table I: accuracy under attack"),
    "table2": ("table2", "Tables", "Table II: mAP, precision, recall, F1"),
    "baselines": ("baselines", "Tables", "Baselines TRADES and MART"),
    "gradcam": ("gradcam_table", "Tables", "Grad-CAM localisation"),
    "split_counts": ("split_counts", "Tables", "Images per class and split"),
}


def html_tables(targets):
    """The HTML page of each planned table that has one (the split's table is always made)."""
    planned = {*targets, "results/tables/split_counts.md"}
    return [
        f"results/tables/{name}.html"
        for name in HTML_TABLES
        if f"results/tables/{name}.md" in planned
    ]
