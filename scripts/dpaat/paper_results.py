"""The paper's vocabulary (method, architecture, attack and group names) and its Table I/II numbers.

Numbers are transcribed from Li et al., "Dynamic Perturbation-Adaptive Adversarial
Training on Medical Image Classification" (arXiv 2403.06798), Tables I and II, so that
report tables can show them beside ours. Keys use the pipeline's names: methods as in
`training.methods`, attacks as in the default `attacks` config, `clean` for GAcc.
"""

from __future__ import annotations

import re

# Training methods in table order, with the paper's display names (Fig. 3 for the ablation), then the baselines.
METHOD_LABELS: dict[str, str] = {
    "std": "STD",
    "at": "AT",
    "sat": "SAT",
    "amat": "AMAT",
    "dpaat": "DPAAT",
    "d_a": "D-A",
    "d_b": "D-B",
    "trades": "TRADES",
    "mart": "MART",
}
METHODS: tuple[str, ...] = tuple(METHOD_LABELS)
# Baselines that are not the paper's (Zhang et al. 2019; Wang et al. 2020): kept out of Tables I and II.
BASELINES: tuple[str, ...] = ("trades", "mart")
# The baselines table: the paper's five methods and the baselines.
BASELINE_TABLE_METHODS: tuple[str, ...] = ("std", "at", "sat", "amat", "dpaat", *BASELINES)

ARCH_LABELS: dict[str, str] = {
    "resnet34": "ResNet34",
    "inception_v3": "InceptionV3",
    "densenet121": "DenseNet121",
    "mobilenet_v2": "MobileNetV2",
    "shufflenet_v2_x1_0": "ShuffleNetV2",
    "squeezenet1_1": "SqueezeNet",
}

# The paper's architecture groups: (id, name when complete, name prefix when partial, archs).
ARCH_GROUPS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("widely", "Three widely used CNNs", "Widely used CNNs", ("resnet34", "inception_v3", "densenet121")),
    (
        "lightweight",
        "Three lightweight CNNs",
        "Lightweight CNNs",
        ("mobilenet_v2", "shufflenet_v2_x1_0", "squeezenet1_1"),
    ),
)
ALL_GROUP: tuple[str, str, str] = ("all", "All six CNNs", "All CNNs")

# Table I columns in the paper's order; `clean` is GAcc.
TABLE1_ATTACKS: tuple[str, ...] = ("fgsm", "ifgsm10", "ifgsm20", "pgd20", "pgd50", "clean")
# Table II columns; mARP, precision, recall and F1 are under 20-PGD in the paper.
TABLE2_COLUMNS: tuple[str, ...] = ("map", "marp", "precision", "recall", "f1")
TABLE2_ATTACK = "pgd20"


def _rows(columns: tuple[str, ...], text: str) -> dict[str, dict[str, float]]:
    """Parse 'METHOD v1 v2 ...' lines into {method: {column: value}}."""
    labels_to_method = {label: method for method, label in METHOD_LABELS.items()}
    rows = {}
    for line in text.strip().splitlines():
        label, *values = line.split()
        rows[labels_to_method[label]] = dict(zip(columns, map(float, values), strict=True))
    return rows


# Table I: RAcc (%) under FGSM, 10-IFGSM, 20-IFGSM, 20-PGD, 50-PGD, then GAcc (%).
TABLE1: dict[str, dict[str, dict[str, float]]] = {
    "widely": _rows(
        TABLE1_ATTACKS,
        """
        STD   59.04  1.06  0.04 12.00 11.60 75.81
        AT    69.12 59.84 53.95 63.14 63.14 70.41
        SAT   70.19 56.32 45.87 60.19 60.19 71.66
        AMAT  69.83 56.58 48.55 61.58 61.58 71.45
        DPAAT 71.00 60.82 54.00 65.46 65.46 71.93
    """,
    ),
    "lightweight": _rows(
        TABLE1_ATTACKS,
        """
        STD   51.27  3.66  0.76 12.56 12.71 70.77
        AT    66.93 55.91 49.18 61.35 61.35 67.83
        SAT   66.57 51.67 44.76 58.23 58.23 68.72
        AMAT  66.73 54.93 47.88 60.42 60.42 68.01
        DPAAT 68.63 59.79 54.84 63.81 63.81 69.48
    """,
    ),
    "all": _rows(
        TABLE1_ATTACKS,
        """
        STD   55.15  2.36  0.41 12.34 12.20 73.96
        AT    68.03 56.56 51.56 62.25 62.25 69.12
        SAT   68.38 54.00 44.09 59.80 59.80 70.19
        AMAT  68.28 55.75 48.22 61.71 61.84 69.73
        DPAAT 69.81 60.31 54.42 64.70 64.70 70.71
    """,
    ),
}

# Table II: mAP, mARP, precision, recall, F1 (fractions, not %).
TABLE2: dict[str, dict[str, dict[str, float]]] = {
    "widely": _rows(
        TABLE2_COLUMNS,
        """
        AT    0.6000 0.6267 0.7109 0.7096 0.7092
        SAT   0.6600 0.5833 0.7195 0.7197 0.7162
        AMAT  0.5633 0.4867 0.7178 0.7152 0.7130
        DPAAT 0.8133 0.7633 0.7304 0.7310 0.7270
    """,
    ),
    "lightweight": _rows(
        TABLE2_COLUMNS,
        """
        AT    0.7500 0.7267 0.6911 0.6890 0.6891
        SAT   0.8100 0.7600 0.7011 0.7008 0.7001
        AMAT  0.7167 0.6733 0.6958 0.6902 0.6900
        DPAAT 0.8500 0.8333 0.7082 0.7080 0.7049
    """,
    ),
    "all": _rows(
        TABLE2_COLUMNS,
        """
        AT    0.6750 0.6150 0.7010 0.6993 0.6992
        SAT   0.7350 0.6717 0.7103 0.7103 0.7082
        AMAT  0.6400 0.5800 0.7068 0.7027 0.7015
        DPAAT 0.8317 0.8150 0.7193 0.7195 0.7160
    """,
    ),
}

_ATTACK_NAME = re.compile(r"^(fgsm|ifgsm|pgd)(\d*)$")
# Display names of the attacks the paper does not use (config names of dpaat.attacks kinds).
OTHER_ATTACK_LABELS: dict[str, str] = {
    "apgd": "APGD",
    "autoattack": "AutoAttack",
    "square": "Square",
    "corrupted": "mean corruption",
}


def method_label(method: str) -> str:
    """Display name of a training method (the name itself when unknown)."""
    return METHOD_LABELS.get(method, method)


def arch_label(arch: str) -> str:
    """Display name of a torchvision architecture (the name itself when unknown)."""
    return ARCH_LABELS.get(arch, arch)


def attack_label(attack: str) -> str:
    """Display name of an attack in the paper's notation: pgd20 -> 20-PGD, clean -> Clean."""
    if attack == "clean":
        return "Clean"
    if attack in OTHER_ATTACK_LABELS:
        return OTHER_ATTACK_LABELS[attack]
    match = _ATTACK_NAME.match(attack)
    if match is None:
        return attack.upper()
    kind, steps = match.groups()
    return f"{steps}-{kind.upper()}" if steps else kind.upper()
