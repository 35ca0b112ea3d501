"""The workflow's plan, built once from the validated config (no torch, no Snakemake: pytest builds it too).

What the rules need to know and nothing else: the model grid and the ablation's sub-grid,
the test and sanity attacks, every job's params and paths, the final targets, and every
error a config can only show when planned (a clashing attack name, a confusion attack
that is not configured). `rules/common.smk` is the Snakemake glue over one `Plan`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpaat import job_resources
from dpaat.attack_kinds import check_entry
from dpaat.corruptions import DESIGN_SIZE, conditions, parse_condition
from dpaat.data.classes import dataset_classes, is_paper_dataset
from dpaat.imagenet_weights import weights_file
from dpaat.paper_results import BASELINES
from dpaat.sanity import SanityPlan
from dpaat.settings import TrainingSettings

SPLITS = ("train", "val", "test")
# Methods that need the STD model of their architecture (AMAT takes ξ from it when training.amat.xi is null).
NEEDS_STD_REFERENCE = frozenset({"amat"})
# The ablation-only methods are trained only on the ablation figure's archs.
ABLATION_METHODS = frozenset({"d_a", "d_b"})
# What determines the acquired files of each data.source: a change reruns acquire and all after it.
ACQUIRE_SETTINGS = {
    "synthetic": ["source", "synthetic"],
    "ham10000": ["source", "base_url", "download_masks", "masks_datafile_id"],
    "isic2018": ["source", "isic_base_url"],
    "local": ["source", "local_dir", "local_layout", "require_published_checksums"],
    "imagefolder": ["source", "local_dir"],
    "medmnist": ["source", "local_dir", "require_published_checksums"],
}
WEIGHTS_RECORD = "results/weights/imagenet.json"
MODEL_PATTERN = "results/models/{seed}/{method}/{arch}"

Model = tuple[str, str, str]  # seed, method, arch
# The tables the HTML report shows inline, from their Markdown (the report's viewer only downloads
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
    "corruptions": ("corruptions", "Corruptions and calibration", "Accuracy under dermoscopy corruptions"),
    "calibration": ("calibration", "Corruptions and calibration", "Calibration (ECE)"),
}


def test_attacks(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The configured test attacks by name (each entry without its name); clashing names are errors."""
    attacks = {a["name"]: {k: v for k, v in a.items() if k != "name"} for a in config["attacks"]}
    if len(attacks) != len(config["attacks"]):
        raise ValueError("config attacks: two attacks share a name; give each a unique name")
    if "clean" in attacks:
        raise ValueError("config attacks: 'clean' names the unattacked test set; rename that attack")
    for name, entry in attacks.items():
        try:
            check_entry(entry)
        except ValueError as error:
            raise ValueError(f"config attacks: {name}: {error}") from None
    confusion = config["evaluation"]["confusion_attack"]
    if confusion not in attacks:
        raise ValueError(
            f"evaluation.confusion_attack {confusion!r} is not among the configured attacks {sorted(attacks)}; "
            "name one of them"
        )
    return attacks


@dataclass(frozen=True)
class Ablation:
    """Fig. 3's ablation: its own schedule and models when the schedule differs from the main one."""

    overrides: dict[str, int]  # the ablation's batch_size/epochs where they differ from training's
    tag: str  # the schedule, in the paths: two ablation schedules never share a model
    models: list[Model]

    @property
    def own(self) -> bool:
        """Whether the ablation trains models of its own."""
        return bool(self.models)

    @property
    def dir(self) -> str:
        """Where its models, predictions and metrics live."""
        return f"results/{self.tag}"


class Plan:
    """Everything the rules derive from the config, computed once."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        # The classes, known when planning: data.classes, or for null every class of the dataset.
        self.config = copy.deepcopy(dict(config))
        self.classes = dataset_classes(config["data"])
        self.config["data"]["classes"] = self.classes
        # HAM10000 with the paper's three classes: only then do its numbers and dataset-specific claims apply.
        self.paper_dataset = is_paper_dataset(config["data"], self.classes)
        self.seeds = [str(seed) for seed in config["seeds"]]
        self.archs = list(config["models"]["archs"])
        self.methods = list(config["training"]["methods"])
        self.attacks = test_attacks(config)
        # Sanity checks against gradient masking add test attacks of their own (dpaat.sanity).
        self.sanity = SanityPlan.from_config(config["sanity"], config["training"]["adversary"], self.attacks)
        self.sanity.check_names(self.attacks)
        # What every evaluate job runs: the configured test attacks, then the sanity attacks.
        self.eval_attacks = {**self.attacks, **self.sanity.attacks}
        self.confusion_attack = config["evaluation"]["confusion_attack"]
        self.ablation_archs = self.present(config["report"]["ablation_archs"]) or self.archs
        self.models = [
            (seed, method, arch)
            for seed in self.seeds
            for method in self.methods
            for arch in self.archs
            if method not in ABLATION_METHODS or arch in self.ablation_archs
        ]
        self.ablation = self._ablation()
        gradcam_possible = set(config["report"]["gradcam_methods"]) <= set(self.methods)
        self.gradcam_archs = self.present(config["report"]["gradcam_archs"]) if gradcam_possible else []
        self.confusion_archs = self.present(config["report"]["confusion_archs"])
        # Corrupted test sets (dpaat.corruptions): their labels "<corruption>@<severity>", [] when off.
        self.corruptions = conditions(config["corruptions"])
        self.corruption_names = list(dict.fromkeys(parse_condition(c)[0] for c in self.corruptions))
        # The methods trained on every arch: the corruption and calibration tables' rows.
        self.report_methods = [m for m in self.methods if m not in ABLATION_METHODS]
        self.weights_destinations = {
            arch: str(weights_file(arch, files=config["models"]["weights_files"])) for arch in self.archs
        }

    def present(self, archs: Sequence[str]) -> list[str]:
        """The configured archs among `archs`, in config order."""
        return [arch for arch in self.archs if arch in archs]

    def _ablation(self) -> Ablation:
        training, ablation = self.config["training"], self.config["ablation"]
        schedule = {key: ablation[key] for key in ("batch_size", "epochs") if ablation[key] is not None}
        overrides = {key: value for key, value in schedule.items() if value != training[key]}
        tag = "ablation/batch{batch_size}_epochs{epochs}".format(**{**training, **schedule})
        models = [
            (seed, method, arch) for seed in self.seeds for method in ablation["methods"] for arch in self.ablation_archs
        ]
        return Ablation(overrides, tag, models if overrides else [])

    # ------------------------------------------------------------ params

    def training_params(self, method: str, ablation: bool = False) -> dict[str, Any]:
        """A train job's params: exactly the result settings `method` reads (`TrainingSettings.params`)."""
        overrides = self.ablation.overrides if ablation else {}
        return TrainingSettings.from_mapping(method, {**self.config["training"], **overrides}).params()

    def acquire_settings(self) -> dict[str, Any]:
        """The data settings that determine the acquired files (MedMNIST: which file, not how it is split)."""
        data = self.config["data"]
        settings = {key: data[key] for key in ACQUIRE_SETTINGS[data["source"]]}
        if data["source"] == "medmnist":
            settings["medmnist"] = {key: data["medmnist"][key] for key in ("flag", "size")}
        return settings

    def acquire_downloads(self) -> bool:
        """Whether acquire downloads: it then runs where snakemake runs (a cluster's login node has the internet)."""
        data = self.config["data"]
        return data["source"] in {"ham10000", "isic2018"} or (data["source"] == "medmnist" and not data.get("local_dir"))

    def predefined_split(self) -> bool:
        """A dataset's own split: an ImageFolder's train/ and test/ always, MedMNIST's unless re-split."""
        data = self.config["data"]
        return data["source"] != "medmnist" or data["medmnist"]["official_split"]

    def confusion_methods(self) -> list[str]:
        """The methods of Fig. 2's confusion matrices: the paper's five."""
        return [m for m in self.methods if m not in ABLATION_METHODS | set(BASELINES)]

    # ------------------------------------------------------------ paths

    @property
    def cache_tag(self) -> str:
        """Centre-cropped and squashed caches live apart, so a changed data.centre_crop never reuses a cache."""
        return "centre_crop/" if self.config["data"]["centre_crop"] else ""

    @property
    def corrupted_dir(self) -> str:
        """The corrupted test sets, corrupted at 224 px (their severities' resolution), resized per model."""
        return f"results/data/corrupted/{self.cache_tag}test"

    @property
    def corruption_source(self) -> str:
        """The test cache the corrupted sets are made from."""
        return f"results/data/cache/{self.cache_tag}test_{DESIGN_SIZE}px.pt"

    def image_size(self, arch: str) -> int:
        """Input resolution of an architecture (InceptionV3 has its own)."""
        return job_resources.image_size(self.config, arch)

    def cache_path(self, split: str, arch: str) -> str:
        """Preprocessed cache of one split at the resolution an architecture needs."""
        return f"results/data/cache/{self.cache_tag}{split}_{self.image_size(arch)}px.pt"

    def reference_weights(self, seed: str, method: str, arch: str) -> list[str]:
        """The STD model AMAT transfers its loss threshold ξ from, when ξ is not fixed."""
        if method in NEEDS_STD_REFERENCE and self.config["training"]["amat"]["xi"] is None:
            return [MODEL_PATTERN.format(seed=seed, method="std", arch=arch) + "/weights.pt"]
        return []

    def adversarial_files(self) -> list[str]:
        """The evaluate rule's adversarial-image outputs (wildcards kept): one per attack, only when kept."""
        if not self.config["evaluation"]["keep_adversarial"]:
            return []
        return [f"results/attacks/{{seed}}/{{method}}/{{arch}}/{attack}.pt" for attack in self.eval_attacks]

    def adversarial_dir(self, seed: str, method: str, arch: str) -> str | None:
        """Where the evaluate job saves its adversarial images (None: they are not kept)."""
        return f"results/attacks/{seed}/{method}/{arch}" if self.config["evaluation"]["keep_adversarial"] else None

    def missing_weights(self) -> list[str]:
        """ImageNet checkpoints the weights record lists but this machine's torch cache lacks."""
        if not (self.config["models"]["pretrained"] and Path(WEIGHTS_RECORD).is_file()):
            return []
        return [path for path in self.weights_destinations.values() if not Path(path).is_file()]

    @property
    def ablation_metrics(self) -> str:
        """The metrics Fig. 3 is drawn from."""
        return f"{self.ablation.dir}/metrics.parquet" if self.ablation.own else "results/metrics/metrics.parquet"

    # ------------------------------------------------------------ resources

    def resource_config(self, ablation: bool = False) -> dict[str, Any]:
        """The config the job resource model reads (the ablation's own schedule for its jobs)."""
        if not ablation:
            return self.config
        return {**self.config, "training": {**self.config["training"], **self.ablation.overrides}}

    def runtime_minutes(
        self, rule: str, arch: str, method: str | None, threads: int, attempt: int, ablation: bool = False
    ) -> int:
        """Runtime request (minutes) of a model rule's job (`ablation`: on its own schedule); a retry asks for more."""
        config = self.resource_config(ablation)
        return job_resources.runtime_minutes(config, rule, arch, method, threads=threads, attempt=attempt)

    def mem_mb(self, rule: str, arch: str) -> int:
        """Host memory request (MB) of a model rule's job."""
        return job_resources.mem_mb(self.config, rule, arch)

    def gpu_count(self) -> int:
        """GPU tag of model jobs: 0 when the config pins them to the CPU, else 1."""
        return 0 if self.config["training"]["device"] == "cpu" else 1

    # ------------------------------------------------------------ targets

    def final_outputs(self) -> list[str]:
        """Every table, figure and metrics file the configuration asks for."""
        # The claims first: the HTML report lists categories in the order it meets them.
        targets = [
            "results/tables/claims.csv",
            "results/tables/claims.md",
            "results/metrics/metrics.parquet",
            "results/figures/training_curves.png",
            "results/figures/ablation.png",
        ]
        targets += [f"results/tables/{t}.{ext}" for t in ("table1", "table2") for ext in ("csv", "md", "tex")]
        targets += [f"results/tables/comparisons.{ext}" for ext in ("csv", "md")]
        if set(BASELINES) & set(self.methods):  # the baselines table, not Tables I/II or Fig. 2
            targets += [f"results/tables/baselines.{ext}" for ext in ("csv", "md", "tex")]
        if self.sanity.attacks:
            targets += ["results/metrics/sanity.parquet", "results/tables/sanity.md"]
            targets.append("results/figures/robustness_curves.png")
        targets += [f"results/figures/confusion_{arch}.png" for arch in self.confusion_archs]
        if self.corruptions:
            targets += [f"results/tables/{t}.{ext}" for t in ("corruptions", "calibration") for ext in ("csv", "md")]
            targets += [f"results/figures/{f}.png" for f in ("corruption_severity", "corruption_panel", "reliability")]
        if self.gradcam_archs:
            targets += [f"results/figures/gradcam_{arch}.png" for arch in self.gradcam_archs]
            targets.append("results/metrics/gradcam.parquet")
            targets += [f"results/tables/gradcam.{ext}" for ext in ("csv", "md", "tex")]
        return targets + html_tables(targets)


def model_files(pattern: str, models: Sequence[Model]) -> list[str]:
    """`pattern` filled with each model's seed, method and arch."""
    return [pattern.format(seed=seed, method=method, arch=arch) for seed, method, arch in models]


def html_tables(targets: Sequence[str]) -> list[str]:
    """The HTML page of each planned table that has one (the split's table is always made)."""
    planned = {*targets, "results/tables/split_counts.md"}
    return [f"results/tables/{name}.html" for name in HTML_TABLES if f"results/tables/{name}.md" in planned]
