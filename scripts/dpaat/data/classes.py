"""The classes a configuration trains on, known when the workflow is planned, and whether they are the paper's."""

from __future__ import annotations

from typing import Any, Mapping

from .errors import DataError

# The paper's three HAM10000 classes; its numbers and dataset-specific claims apply to these alone.
PAPER_CLASSES = ("mel", "bkl", "nv")
HAM10000_SOURCES = ("synthetic", "ham10000", "isic2018", "local")


def dataset_classes(data: Mapping[str, Any]) -> list[str]:
    """`data.classes`, or for null every class of the dataset: an ImageFolder's class folders, MedMNIST's labels."""
    classes = data.get("classes")
    source = data.get("source")
    if classes is None:
        if source == "imagefolder":
            from .imagefolder import find_classes

            if not data.get("local_dir"):
                raise DataError("data.source is imagefolder but data.local_dir is not set: point it at the tree")
            classes = find_classes(data["local_dir"])
        elif source == "medmnist":
            from .medmnist import dataset_info

            options = data.get("medmnist") or {}
            classes = dataset_info(options.get("flag"), options.get("size"))["classes"]
        else:
            raise DataError(
                f"data.classes is null (every class) but data.source {source} is HAM10000, whose classes are dx "
                "codes: name them, e.g. [mel, bkl, nv]"
            )
    classes = [str(c) for c in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"data.classes {classes}: expected at least two distinct classes")
    return classes


def is_paper_dataset(data: Mapping[str, Any], classes: list[str]) -> bool:
    """True for HAM10000 (or its synthetic twin) with the paper's three classes: its numbers and claims apply."""
    return data.get("source") in HAM10000_SOURCES and sorted(classes) == sorted(PAPER_CLASSES)
