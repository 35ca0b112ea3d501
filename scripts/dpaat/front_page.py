"""The HTML report's front page in words: methods by their paper names, CNNs, seeds, data, attacks.

`front_page(config, splits_path)` gives the sentences report/workflow.rst prints; the
workflow puts them under the config's `report_front_page` key, the only thing Snakemake's
report template can read. No torch and no pandas here: the workflow imports this module.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dpaat.attack_kinds import KINDS, queries_of
from dpaat.data.classes import is_paper_dataset
from dpaat.paper_results import ARCH_GROUPS, ARCH_LABELS, METHOD_LABELS

NORM_LABELS = {"l2": "L2", "linf": "L∞"}
KIND_LABELS = {"fgsm": "FGSM", "ifgsm": "I-FGSM", "pgd": "PGD", "apgd": "APGD", "square": "Square"}
SOURCE_LABELS = {
    "synthetic": "synthetic HAM10000-format images (dpaat.data.synthetic)",
    "local": "a local copy of HAM10000 (data.local_dir)",
    "ham10000": "HAM10000, downloaded from the Harvard Dataverse",
    "isic2018": "the ISIC 2018 Task 3 training data (HAM10000's images)",
    "imagefolder": "an ImageFolder tree, one folder per class (data.local_dir)",
}
SPLIT_ORDER = ("train", "val", "test")
# The claims' verdicts in the order the front page counts them (dpaat.claims).
VERDICTS = ("supported", "contradicted", "inconclusive", "not tested")


def words(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def eps_label(eps: float, norm: str) -> str:
    """An Linf budget on the 8-bit grid as k/255 (1/255), any other budget as a short decimal (0.15)."""
    levels = eps * 255
    if norm == "linf" and levels >= 1 and math.isclose(levels, round(levels), abs_tol=1e-6):
        return f"{round(levels)}/255"
    return f"{eps:.4g}"


def attack_label(attack: Mapping[str, Any]) -> str:
    """One attack config entry as a person says it: 'FGSM, L∞ ε = 1/255', '20-step PGD, L2 ε = 0.15'."""
    kind = attack["kind"]
    norm = attack.get("norm") or KINDS[kind].norm
    steps = int(attack.get("steps") or KINDS[kind].steps)
    queries = queries_of(attack)
    if kind == "apgd":
        name = f"{steps}-step APGD-{(attack.get('loss') or 'ce').upper()}"
    elif kind == "autoattack" and queries == 0:
        name = f"AutoAttack's white-box attacks ({steps}-step APGD, FAB)"
    elif kind == "autoattack":
        name = f"AutoAttack ({steps}-step APGD, {queries}-query Square)"
    elif kind == "square":
        name = f"Square ({queries} queries)"
    elif kind == "fgsm":
        name = "FGSM"
    else:
        name = f"{steps}-step {KIND_LABELS[kind]}"
    if attack.get("restarts") and kind in ("pgd", "apgd"):
        name += f", {attack['restarts']} restart{'s' if attack['restarts'] > 1 else ''}"
    return f"{name}, {NORM_LABELS[norm]} ε = {eps_label(float(attack['eps']), norm)}"


def split_counts_text(counts: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> str:
    """Achieved images per split and class: 'train 136 mel, 136 bkl, 136 nv (408); val …'."""
    parts = []
    for split in SPLIT_ORDER:
        achieved = {row["dx"]: int(row["achieved"]) for row in counts if row["split"] == split}
        if achieved:
            per_class = ", ".join(f"{achieved.get(dx, 0)} {dx}" for dx in classes)
            parts.append(f"{split} {per_class} ({sum(achieved.values())} images)")
    return "; ".join(parts)


def read_split_counts(splits_path: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The achieved counts in splits.parquet's metadata (dpaat.data.split), or None before the split has run."""
    if not os.path.exists(splits_path):
        return None
    from dpaat.io import read_parquet_metadata

    return read_parquet_metadata(splits_path).get("dpaat", {}).get("counts")


def _read_csv(path: str | os.PathLike) -> list[dict[str, str]] | None:
    """A CSV's rows as dicts, or None before the job writing it has run."""
    if not os.path.exists(path):
        return None
    with open(path, newline="") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def verdicts_text(claims: Sequence[Mapping[str, str]] | None) -> str:
    """'3 supported, 1 contradicted, 5 inconclusive and 2 not tested, of 11 claims' from claims.csv's rows."""
    if claims is None:
        return "the claims' verdicts appear once the claims job has run"
    counts = Counter(row["verdict"] for row in claims)
    order = [v for v in VERDICTS if counts[v]] + sorted(set(counts) - set(VERDICTS))
    return f"{words([f'{counts[v]} {v}' for v in order])}, of {len(claims)} claims"


def sanity_text(sanity: Sequence[Mapping[str, str]] | None) -> str:
    """'2 flags in 108 checks of 14 models (…)' from sanity.csv's rows, or that none flagged."""
    if sanity is None:
        return "the sanity checks appear once the sanity job has run"
    flagged = [row for row in sanity if row.get("passed", "").strip().lower() in ("false", "0")]
    models = {(row["seed"], row["method"], row["arch"]) for row in sanity}
    text = f"{len(flagged)} flag{'s' if len(flagged) != 1 else ''} in {len(sanity)} checks of {len(models)} models"
    if flagged:
        checks = Counter(row["check"] for row in flagged)
        text += " (" + ", ".join(f"{check} {n}×" for check, n in checks.most_common()) + ")"
    return text


def size_caveats(config: Mapping[str, Any], counts: Sequence[Mapping[str, Any]] | None) -> str:
    """The run's size in the terms that limit what it shows: data, resolution, epochs, CNNs, seeds, test images."""
    data, models, training = config["data"], config["models"], config["training"]
    if counts:
        test_images = sum(int(row["achieved"]) for row in counts if row["split"] == "test")
    else:
        test_images = int(data["test_per_class"]) * len(data["classes"])
    epochs = int(training["warmup_epochs"]) + int(training["epochs"])
    archs, seeds = models["archs"], config["seeds"]
    parts = [
        "synthetic images, not patients' lesions" if data["source"] == "synthetic" else None,
        f"{models['image_size']} px images",
        f"at most {epochs} epochs" + (" (early stopping may end sooner)" if training.get("patience") else ""),
        f"{len(archs)} CNN{'s' if len(archs) != 1 else ''}",
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}",
        f"{test_images} test images",
    ]
    return "; ".join(part for part in parts if part)


def paper_columns_text(config: Mapping[str, Any], paper_dataset: bool) -> str:
    """Why the tables' paper values are shown or blank for this run."""
    if not config["report"]["paper_numbers"]:
        return "The paper's values are switched off (report.paper_numbers: false)."
    if not paper_dataset:
        return "The paper's values are left out: they belong to HAM10000's mel, bkl and nv, which this run does not classify."
    complete = [name for _, name, _, members in ARCH_GROUPS if set(members) <= set(config["models"]["archs"])]
    if not complete:
        return (
            "The paper's columns are blank: the paper reports averages over groups of three CNNs "
            f"({words([name[0].lower() + name[1:] for _, name, _, _ in ARCH_GROUPS])}), and this run trains "
            f"{words([ARCH_LABELS.get(a, a) for a in config['models']['archs']])}, a different average "
            "that the paper's numbers do not describe."
        )
    return f"The paper's values appear beside ours for the complete groups: {words(complete)}."


def front_page(
    config: Mapping[str, Any], splits_path: str | os.PathLike, tables_dir: str | os.PathLike = "results/tables"
) -> dict[str, Any]:
    """The report front page's sentences (methods, cnns, seeds, data, attacks, results, caveats) for a validated config."""
    data = config["data"]
    if data["source"] == "medmnist":
        source = f"MedMNIST's {data['medmnist']['flag']} at {data['medmnist']['size']} px"
    else:
        source = SOURCE_LABELS.get(data["source"], f"data source {data['source']}")
    counts = read_split_counts(splits_path)
    achieved = (
        f"achieved split: {split_counts_text(counts, data['classes'])}"
        if counts
        else "split counts appear once the split job has run"
    )
    seeds = [str(seed) for seed in config["seeds"]]
    paper_dataset = is_paper_dataset(data, list(data["classes"]))
    return {
        "methods": words([METHOD_LABELS.get(m, m) for m in config["training"]["methods"]]),
        "cnns": words([ARCH_LABELS.get(a, a) for a in config["models"]["archs"]]),
        "seeds": f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {words(seeds)}",
        "data": f"{source}, classes {words(list(data['classes']))}; {achieved}",
        "attacks": "; ".join(attack_label(attack) for attack in config["attacks"]),
        "verdicts": verdicts_text(_read_csv(Path(tables_dir) / "claims.csv")),
        "sanity": sanity_text(_read_csv(Path(tables_dir) / "sanity.csv")),
        "caveats": size_caveats(config, counts),
        "paper_columns": paper_columns_text(config, paper_dataset),
        "arch_labels": {arch: ARCH_LABELS.get(arch, arch) for arch in {*ARCH_LABELS, *config["models"]["archs"]}},
    }


def _part(value: Any) -> str:
    return f"({value})" if isinstance(value, ShownDict) else str(value)


class ShownList(list):
    """A list that reads 'a, b, c' where the HTML report prints a job's parameters (its repr is a list's)."""

    def __str__(self) -> str:
        return ", ".join(map(_part, self)) or "none"


class ShownDict(dict):
    """A dict that reads 'key: value; key: value' where the HTML report prints a job's parameters (its repr is a dict's)."""

    def __str__(self) -> str:
        return "; ".join(f"{key}: {_part(value)}" for key, value in self.items()) or "none"


def shown(value: Any) -> Any:
    """`value` with its lists and dicts (at every depth) readable in the report; equal to, and with the repr of, the original.

    The repr is unchanged, so Snakemake's parameter-change check reruns nothing.
    """
    if isinstance(value, Mapping):
        return ShownDict({key: shown(item) for key, item in value.items()})
    if isinstance(value, list):
        return ShownList(shown(item) for item in value)
    return value


def readable_param(value: Any) -> Callable[[Any], Any]:
    """A list rule parameter that reads as words in the report: a function of the wildcards, since
    Snakemake rebuilds a plain list given directly. Snakemake's params check skips functions, so
    use it only where a change of the value also changes the job's inputs (a dict needs only `shown`)."""
    readable = shown(value)
    return lambda wildcards: readable
