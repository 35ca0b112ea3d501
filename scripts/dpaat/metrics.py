"""Classification metrics of one model on one test set, and the metrics table they form.

Accuracy (GAcc on clean data, RAcc on adversarial data), mAP (macro one-vs-rest average
precision of the softmax scores, the paper's Eq. 18; mARP when the data are adversarial),
macro precision/recall/F1, balanced accuracy, the lowest per-class recall (worst_recall;
on a balanced test set macro recall equals accuracy, the worst class does not) and the
confusion matrix, all from scikit-learn.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pandas.api.types as ptypes
import pyarrow as pa
import pyarrow.parquet as pq

from dpaat.io import write_parquet

if TYPE_CHECKING:  # torch and scikit-learn are imported where used: aggregate and report need neither
    import torch

    ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]

METRICS_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("arch", pa.string()),
        ("seed", pa.int64()),
        ("attack", pa.string()),
        ("n", pa.int64()),
        ("accuracy", pa.float64()),
        ("map", pa.float64()),
        ("precision", pa.float64()),
        ("recall", pa.float64()),
        ("f1", pa.float64()),
        ("balanced_accuracy", pa.float64()),
        ("worst_recall", pa.float64()),
        ("confusion", pa.list_(pa.list_(pa.int64()))),
        ("classes", pa.list_(pa.string())),
    ]
)
METRICS_COLUMNS: tuple[str, ...] = tuple(METRICS_SCHEMA.names)
KEY_COLUMNS: tuple[str, ...] = ("seed", "method", "arch", "attack")

# Arrow would silently parse "0" into an int64 seed; the scalar columns are checked first.
_DTYPE_CHECKS = {
    pa.string(): ptypes.is_string_dtype,
    pa.int64(): ptypes.is_integer_dtype,
    pa.float64(): lambda s: ptypes.is_numeric_dtype(s) and not ptypes.is_bool_dtype(s),
}


def _as_numpy(a: ArrayLike) -> np.ndarray:
    """A detached CPU numpy view of a tensor, array or sequence."""
    torch = sys.modules.get("torch")  # without torch loaded, `a` cannot be a tensor
    if torch is not None and isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def softmax_scores(scores: ArrayLike, n_classes: int, scores_are: Literal["logits", "probs"] = "logits") -> np.ndarray:
    """Softmax probabilities (N, C) from logits, or validated probabilities passed through."""
    s = _as_numpy(scores).astype(np.float64)
    if s.ndim != 2 or s.shape[1] != n_classes:
        raise ValueError(f"scores must have shape (N, {n_classes}) for {n_classes} classes, got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values; check the model outputs that produced them")
    if scores_are == "logits":
        s = s - s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)
    if scores_are == "probs":
        if (s < 0).any() or not np.allclose(s.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError("scores_are='probs' but rows are not probability vectors; pass scores_are='logits'")
        return s
    raise ValueError(f"scores_are must be 'logits' or 'probs', got {scores_are!r}")


def classification_metrics(
    labels: ArrayLike,
    scores: ArrayLike,
    classes: Sequence[str],
    scores_are: Literal["logits", "probs"] = "logits",
) -> dict[str, Any]:
    """n, accuracy, map, macro precision/recall/f1, balanced_accuracy, worst_recall and confusion (row = true class)."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        recall_score,
    )

    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"need at least 2 class names, got {list(classes)}")
    y = _as_numpy(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}) for classes {list(classes)}, got {y.min()}..{y.max()}")
    probs = softmax_scores(scores, n_classes, scores_are)
    if probs.shape[0] != y.shape[0]:
        raise ValueError(f"{probs.shape[0]} score rows for {y.shape[0]} labels")
    absent = [classes[c] for c in range(n_classes) if not (y == c).any()]
    if absent:
        # sklearn would score such a class AP = 0 and silently drag mAP down.
        raise ValueError(f"mAP is undefined: no test images of class(es) {absent}; the test set must cover every class")

    pred = probs.argmax(axis=1)
    one_hot = np.eye(n_classes, dtype=np.int64)[y]
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, pred, labels=list(range(n_classes)), average="macro", zero_division=0
    )
    return {
        "n": int(y.shape[0]),
        "accuracy": float(accuracy_score(y, pred)),
        "map": float(average_precision_score(one_hot, probs, average="macro")),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "worst_recall": float(
            recall_score(y, pred, labels=list(range(n_classes)), average=None, zero_division=0).min()
        ),
        "confusion": confusion_matrix(y, pred, labels=list(range(n_classes))).tolist(),
        "classes": list(classes),
    }


def model_metrics(
    labels: ArrayLike,
    scores: ArrayLike,
    classes: Sequence[str],
    *,
    method: str,
    arch: str,
    seed: int,
    attack: str,
    scores_are: Literal["logits", "probs"] = "logits",
) -> dict[str, Any]:
    """One row of the metrics table: the metrics of one (seed, method, arch) model under one attack."""
    row = {"method": method, "arch": arch, "seed": int(seed), "attack": attack}
    row.update(classification_metrics(labels, scores, classes, scores_are))
    return row


def metrics_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A metrics DataFrame with the schema's column order from `model_metrics` rows."""
    df = pd.DataFrame(list(rows))
    validate_metrics(df)
    return df[list(METRICS_COLUMNS)]


def validate_metrics(df: pd.DataFrame) -> pa.Table:
    """Check a metrics frame against METRICS_SCHEMA and its key uniqueness; return it as an Arrow table."""
    missing = [c for c in METRICS_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in METRICS_COLUMNS]
    if missing or extra:
        raise ValueError(
            f"metrics frame does not match METRICS_SCHEMA: missing columns {missing}, unexpected columns {extra}; "
            "build rows with dpaat.metrics.model_metrics"
        )
    for column, field in zip(METRICS_COLUMNS, METRICS_SCHEMA):
        if not _DTYPE_CHECKS.get(field.type, lambda s: True)(df[column]):
            raise ValueError(
                f"metrics column {column!r} has dtype {df[column].dtype}, expected {field.type}; "
                "build rows with dpaat.metrics.model_metrics"
            )
    try:
        table = pa.Table.from_pandas(df[list(METRICS_COLUMNS)], schema=METRICS_SCHEMA, preserve_index=False)
    except (pa.ArrowException, TypeError) as err:
        raise ValueError(f"metrics frame does not convert to METRICS_SCHEMA: {err}") from err
    dup = df.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        keys = df.loc[dup, list(KEY_COLUMNS)].drop_duplicates().to_dict("records")
        raise ValueError(
            f"metrics frame has duplicate rows for {keys[:5]}; each (seed, method, arch, attack) must appear once"
        )
    return table


def write_metrics(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Validate a metrics frame against METRICS_SCHEMA and write it to Parquet atomically."""
    validate_metrics(df)
    write_parquet(df[list(METRICS_COLUMNS)], path, schema=METRICS_SCHEMA)


def read_metrics(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Read and concatenate metrics Parquet files, validated, keys unique across files."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("no metrics files given")
    frames = []
    for path in paths:
        table = pq.read_table(path)
        if not table.schema.equals(METRICS_SCHEMA, check_metadata=False):
            raise ValueError(f"{path} does not have METRICS_SCHEMA; rerun the evaluate step that wrote it")
        frames.append(table.to_pandas())
    df = pd.concat(frames, ignore_index=True)
    validate_metrics(df)
    return df
