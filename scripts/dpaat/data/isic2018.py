"""Facts about the ISIC 2018 Task 3 training data (the same 10015 images as HAM10000) and its csvs.

The challenge ships the images as `ISIC2018_Task3_Training_Input.zip` (a folder of that
name), the labels as `ISIC2018_Task3_Training_GroundTruth.csv` (one-hot columns MEL, NV,
BCC, AKIEC, BKL, DF, VASC; inside a zip of that name) and, separately, which images show
the same lesion (`ISIC2018_Task3_Training_LesionGroupings.csv`). No md5 is published.
"""

from __future__ import annotations

import io
import re

import pandas as pd

from .errors import DataError
from .ham10000 import METADATA_COLUMNS, RemoteFile

BASE_URL = "https://isic-challenge-data.s3.amazonaws.com/2018/"
INPUT_FOLDER = "ISIC2018_Task3_Training_Input"
GROUND_TRUTH_NAME = "ISIC2018_Task3_Training_GroundTruth.csv"
GROUND_TRUTH_ZIP = "ISIC2018_Task3_Training_GroundTruth.zip"
LESIONS_NAME = "ISIC2018_Task3_Training_LesionGroupings.csv"

ISIC2018_FILES: tuple[RemoteFile, ...] = (
    RemoteFile(f"{INPUT_FOLDER}.zip", None, "images"),
    RemoteFile(GROUND_TRUTH_ZIP, None, "metadata"),
    RemoteFile(LESIONS_NAME, None, "lesions"),
)

# The ground truth's one-hot columns and the HAM10000 dx code each stands for.
DX_COLUMNS = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"}
# LesionGroupings' diagnosis_confirm_type phrases, matched in this order, and HAM10000's dx_type codes.
_CONFIRM_TYPES = (("histo", "histo"), ("confocal", "confocal"), ("serial", "follow_up"), ("follow", "follow_up"))
_CONSENSUS = "consensus"
NO_GROUPING = "impossible: no ISIC2018_Task3_Training_LesionGroupings.csv, so each image is its own lesion"


def is_ground_truth(columns: list[str]) -> bool:
    """Whether a csv header is the ISIC 2018 Task 3 ground truth's (image + the seven one-hot columns)."""
    return "image" in columns and set(DX_COLUMNS) <= set(columns)


def read_ground_truth(
    data: bytes, name: str, lesions: bytes | None = None, lesions_name: str = LESIONS_NAME
) -> tuple[pd.DataFrame, str]:
    """HAM10000-format metadata (METADATA_COLUMNS) from the ground truth and, when given, the lesion groupings.

    Returns (metadata, how lesions were grouped). Without groupings each image is its own
    lesion (lesion_id = image_id); age, sex and site are not in ISIC 2018's files.
    """
    truth = _read_csv(data, name)
    if not is_ground_truth(list(truth.columns)):
        raise DataError(
            f"{name}: expected the columns image, {', '.join(DX_COLUMNS)} (ISIC 2018 Task 3 ground truth), "
            f"found {list(truth.columns)}: use the Task 3 training ground truth csv"
        )
    onehot = truth[list(DX_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = onehot.isna().any(axis=1) | ~onehot.isin([0, 1]).all(axis=1) | (onehot.sum(axis=1) != 1)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(
            f"{name} row {row + 2} ({truth['image'].iat[row]}): expected exactly one of {list(DX_COLUMNS)} "
            f"to be 1 and the others 0, found {onehot.iloc[row].tolist()}: use the original ground truth csv"
        )
    metadata = pd.DataFrame(
        {
            "image_id": truth["image"].str.strip(),
            "dx": onehot.idxmax(axis=1).map(DX_COLUMNS),
            "lesion_id": truth["image"].str.strip(),
            "dx_type": "",
            "age": "",
            "sex": "unknown",
            "localization": "unknown",
        }
    )
    grouping = NO_GROUPING
    if lesions is not None:
        groups = _read_csv(lesions, lesions_name)
        image_column = "image" if "image" in groups.columns else "image_id"
        if image_column not in groups.columns or "lesion_id" not in groups.columns:
            raise DataError(
                f"{lesions_name}: expected the columns image, lesion_id (ISIC 2018 Task 3 lesion groupings), "
                f"found {list(groups.columns)}: use the original LesionGroupings csv or remove it"
            )
        groups = groups.drop_duplicates(image_column).set_index(image_column)
        ungrouped = sorted(set(metadata["image_id"]) - set(groups.index))
        if ungrouped:
            raise DataError(
                f"{lesions_name} has no lesion_id for {len(ungrouped)} images of {name}, e.g. {ungrouped[:5]}: "
                "use the LesionGroupings csv of the same release, or remove it to treat each image as its own lesion"
            )
        metadata["lesion_id"] = metadata["image_id"].map(groups["lesion_id"])
        if "diagnosis_confirm_type" in groups.columns:
            metadata["dx_type"] = metadata["image_id"].map(groups["diagnosis_confirm_type"]).map(dx_type)
        grouping = f"lesion_id from {lesions_name}"
    return metadata[list(METADATA_COLUMNS)], grouping


def dx_type(confirm_type: str) -> str:
    """HAM10000's dx_type code for a LesionGroupings diagnosis_confirm_type phrase (unknown phrases kept)."""
    text = str(confirm_type).strip().lower()
    for word, code in _CONFIRM_TYPES:
        if word in text:
            return code
    return "consensus" if _CONSENSUS in text else re.sub(r"\s+", "_", text)


def _read_csv(data: bytes, name: str) -> pd.DataFrame:
    try:
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{name} is not a readable csv ({err}): download it again") from None
