"""The HTML report's front page in words: methods by their paper names, CNNs, seeds, data, attacks.

`front_page(config, splits_path)` gives the sentences report/workflow.rst prints; the
workflow puts them under the config's `report_front_page` key, the only thing Snakemake's
report template can read. No torch and no pandas here: the workflow imports this module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from dpaat.attack_kinds import DEFAULT_QUERIES, KINDS
from dpaat.paper_results import ARCH_LABELS, METHOD_LABELS

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
    queries = int(attack.get("queries") or DEFAULT_QUERIES)
    if kind == "apgd":
        name = f"{steps}-step APGD-{(attack.get('loss') or 'ce').upper()}"
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


def front_page(config: Mapping[str, Any], splits_path: str | os.PathLike) -> dict[str, str]:
    """The report front page's sentences (methods, cnns, seeds, data, attacks) for a validated config."""
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
    return {
        "methods": words([METHOD_LABELS.get(m, m) for m in config["training"]["methods"]]),
        "cnns": words([ARCH_LABELS.get(a, a) for a in config["models"]["archs"]]),
        "seeds": f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {words(seeds)}",
        "data": f"{source}, classes {words(list(data['classes']))}; {achieved}",
        "attacks": "; ".join(attack_label(attack) for attack in config["attacks"]),
    }
