"""Every evaluated model's per-image softmax scores, read from the predictions files once, for the statistics.

No torch: the report jobs never import it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dpaat.corruptions import MEAN_CORRUPTION, parse_condition
from dpaat.predictions import read_predictions


class Predictions:
    """Per-image softmax scores of every evaluated model, indexed by (seed, method, arch, attack)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        needed = {"seed", "method", "arch", "attack", "image_id", "label", "logits"}
        missing = needed - set(frame.columns)
        if missing:
            raise ValueError(f"predictions lack columns {sorted(missing)}")
        self._probs: dict[tuple[int, str, str, str], np.ndarray] = {}
        self._labels: dict[str, np.ndarray] = {}
        self._ids: dict[str, list[str]] = {}
        for (seed, method, arch, attack), rows in frame.groupby(["seed", "method", "arch", "attack"], sort=False):
            logits = np.stack(rows["logits"].to_numpy()).astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            ids = rows["image_id"].tolist()
            if arch in self._ids and self._ids[arch] != ids:
                raise ValueError(f"predictions of {arch} cover different test images; rerun their evaluation")
            self._ids[arch] = ids
            self._labels[arch] = rows["label"].to_numpy(dtype=np.int64)
            self._probs[(int(seed), method, arch, attack)] = probs / probs.sum(axis=1, keepdims=True)
        self.seeds = sorted({k[0] for k in self._probs})

    @classmethod
    def read(cls, paths: Iterable[str | os.PathLike]) -> Predictions:
        """Load results/predictions/{seed}/{method}/{arch}.parquet files (identity from the path)."""
        frames = []
        for path in paths:
            seed, method, arch = Path(path).with_suffix("").parts[-3:]
            frames.append(read_predictions(path).assign(seed=int(seed), method=method, arch=arch))
        if not frames:
            raise ValueError("no predictions files given")
        return cls(pd.concat(frames, ignore_index=True))

    def corruptions(self) -> list[str]:
        """The corrupted test sets ('<corruption>@<severity>') the predictions hold, in their order."""
        return list(dict.fromkeys(k[3] for k in self._probs if parse_condition(k[3]) is not None))

    def has(self, method: str, arch: str, attack: str) -> bool:
        """Whether every seed has predictions of this arm on this arch (for MEAN_CORRUPTION: under every corruption)."""
        if attack == MEAN_CORRUPTION:
            conditions = self.corruptions()
            return bool(conditions) and all(self.has(method, arch, c) for c in conditions)
        return all((s, method, arch, attack) in self._probs for s in self.seeds)

    def archs(self) -> list[str]:
        return list(self._ids)

    def labels(self, archs: Sequence[str]) -> np.ndarray:
        """Labels of the test images shared by `archs` (the same split at each arch's resolution)."""
        labels = self._labels[archs[0]]
        for arch in archs[1:]:
            if self._ids[arch] != self._ids[archs[0]] or not np.array_equal(self._labels[arch], labels):
                raise ValueError(
                    f"{arch} and {archs[0]} were evaluated on different test images; a group needs one test set"
                )
        return labels

    def probs(self, method: str, attack: str, archs: Sequence[str]) -> np.ndarray:
        """Scores (archs, seeds, images, classes) of one arm.

        MEAN_CORRUPTION stacks every corrupted test set of each arch along the first axis, so
        that a cell (its mean over that axis) is the mean corruption accuracy and a paired test
        sums each image's differences over CNNs, seeds and corruptions.
        """
        if attack == MEAN_CORRUPTION:
            return np.concatenate([self.probs(method, c, archs) for c in self.corruptions()])
        return np.stack([np.stack([self._probs[(s, method, a, attack)] for s in self.seeds]) for a in archs])
