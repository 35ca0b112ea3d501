"""The per-image predictions file of an evaluated model: one row per attack and test image, written by the
evaluate job and read, schema-checked, by the statistics (`dpaat.prediction_store`). No torch."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dpaat.io import write_parquet

PREDICTION_COLUMNS: tuple[str, ...] = ("attack", "image_id", "label", "prediction", "logits")


def predictions_schema() -> pa.Schema:
    """Arrow schema of the predictions table: one row per (attack, test image)."""
    return pa.schema(
        [
            ("attack", pa.string()),
            ("image_id", pa.string()),
            ("label", pa.int64()),
            ("prediction", pa.int64()),
            ("logits", pa.list_(pa.float32())),
        ]
    )


def write_predictions(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a predictions table atomically, checked against the predictions schema."""
    if list(df.columns) != list(PREDICTION_COLUMNS):
        raise ValueError(f"predictions columns must be {list(PREDICTION_COLUMNS)}, got {list(df.columns)}")
    duplicated = df.duplicated(["attack", "image_id"])
    if duplicated.any():
        first = df.loc[duplicated, ["attack", "image_id"]].iloc[0].to_dict()
        raise ValueError(f"predictions have more than one row for {first}; each (attack, image_id) must appear once")
    write_parquet(df, path, schema=predictions_schema())


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a predictions file, rejecting one that does not have the predictions schema."""
    table = pq.read_table(path)
    if not table.schema.equals(predictions_schema(), check_metadata=False):
        raise ValueError(f"{path} does not have the predictions schema; rerun the evaluate step that wrote it")
    return table.to_pandas()
