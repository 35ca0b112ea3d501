"""dpaat.metrics against hand-worked cases (AP by Eq. 18 computed by hand) and schema checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dpaat.metrics import (
    METRICS_COLUMNS,
    METRICS_SCHEMA,
    classification_metrics,
    metrics_frame,
    model_metrics,
    read_metrics,
    validate_metrics,
    write_metrics,
)

CLASSES = ["mel", "bkl", "nv"]
# Hand-worked case. Predictions (argmax): 0, 2, 2, 1, 2 for labels 0, 1, 2, 0, 2.
LABELS = np.array([0, 1, 2, 0, 2])
PROBS = np.array(
    [
        [0.60, 0.30, 0.10],
        [0.10, 0.40, 0.50],
        [0.30, 0.20, 0.50],
        [0.25, 0.60, 0.15],
        [0.10, 0.20, 0.70],
    ]
)
# AP = Σ (R_n − R_{n−1}) P_n over the distinct score thresholds, one-vs-rest:
#   mel: scores .6(+) .3(−) .25(+) ...      -> 0.5·1 + 0.5·2/3 = 5/6
#   bkl: scores .6(−) .4(+) ...             -> 1·1/2           = 1/2
#   nv:  scores .7(+), tie .5(−,+), ...     -> 0.5·1 + 0.5·2/3 = 5/6 (a tie is one threshold)
HAND_MAP = (5 / 6 + 1 / 2 + 5 / 6) / 3
# Per class precision 1, 0, 2/3; recall 1/2, 0, 1; F1 2/3, 0, 4/5.
HAND_PRECISION = (1 + 0 + 2 / 3) / 3
HAND_RECALL = (1 / 2 + 0 + 1) / 3
HAND_F1 = (2 / 3 + 0 + 4 / 5) / 3
HAND_CONFUSION = [[1, 1, 0], [0, 0, 1], [0, 0, 2]]


def test_hand_worked_case_from_probabilities() -> None:
    m = classification_metrics(LABELS, PROBS, CLASSES, scores_are="probs")
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["map"] == pytest.approx(HAND_MAP)
    assert m["precision"] == pytest.approx(HAND_PRECISION)
    assert m["recall"] == pytest.approx(HAND_RECALL)
    assert m["f1"] == pytest.approx(HAND_F1)
    # Every class is present, so balanced accuracy is macro recall; bkl is never recalled.
    assert m["balanced_accuracy"] == pytest.approx(HAND_RECALL)
    assert m["worst_recall"] == 0.0
    assert m["confusion"] == HAND_CONFUSION
    assert m["classes"] == CLASSES


def test_logits_are_softmaxed() -> None:
    # softmax(log p + c) = p for probability rows, whatever the per-row shift c.
    logits = torch.tensor(np.log(PROBS) + np.array([[3.0], [-2.0], [0.5], [10.0], [0.0]]))
    m = classification_metrics(torch.tensor(LABELS), logits, CLASSES)
    assert m["map"] == pytest.approx(HAND_MAP)
    assert m["accuracy"] == pytest.approx(3 / 5)


def test_never_predicted_class_scores_zero_precision() -> None:
    # Both predicted class 0: precision 1/2 and 0 (0/0 -> 0), recall 1 and 0, F1 2/3 and 0.
    m = classification_metrics([0, 1], [[0.9, 0.1], [0.8, 0.2]], ["a", "b"], scores_are="probs")
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((1 / 4, 1 / 2, 1 / 3))
    assert m["confusion"] == [[1, 0], [1, 0]]


@pytest.mark.parametrize(
    ("labels", "scores", "kwargs", "message"),
    [
        ([0, 3, 1], np.eye(3), {}, r"labels must lie in \[0, 3\)"),
        ([0, 1], np.eye(3), {}, "3 score rows for 2 labels"),
        ([0, 1, 1], np.eye(3), {}, r"no test images of class\(es\) \['nv'\]"),
        ([0, 1, 2], np.eye(3)[:, :2], {}, r"shape \(N, 3\)"),
        ([0.0, 1.0, 2.0], np.eye(3), {}, "integer class indices"),
        ([0, 1, 2], np.eye(3) * 2, {"scores_are": "probs"}, "not probability vectors"),
        ([0, 1, 2], np.full((3, 3), np.nan), {}, "NaN"),
    ],
)
def test_bad_input_is_a_clear_error(labels, scores, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(labels, scores, CLASSES, **kwargs)


def _frame() -> pd.DataFrame:
    return metrics_frame(
        model_metrics(
            LABELS, PROBS, CLASSES, method=method, arch="mobilenet_v2", seed=0, attack=attack, scores_are="probs"
        )
        for method in ("std", "dpaat")
        for attack in ("clean", "pgd20")
    )


def test_parquet_roundtrip_has_the_schema(tmp_path) -> None:
    df = _frame()
    path = tmp_path / "m" / "metrics.parquet"
    write_metrics(df, path)
    assert pq.read_schema(path).equals(METRICS_SCHEMA, check_metadata=False)
    back = read_metrics([path])
    assert list(back.columns) == list(METRICS_COLUMNS)
    assert back["map"].tolist() == pytest.approx([HAND_MAP] * 4)
    assert [np.stack(c).tolist() for c in back["confusion"]] == [HAND_CONFUSION] * 4
    assert list(tmp_path.joinpath("m").iterdir()) == [path]  # no temporary file left behind


def test_read_metrics_concatenates_and_rejects_duplicates(tmp_path) -> None:
    df = _frame()
    write_metrics(df.iloc[:2], tmp_path / "a.parquet")
    write_metrics(df.iloc[2:], tmp_path / "b.parquet")
    assert len(read_metrics([tmp_path / "a.parquet", tmp_path / "b.parquet"])) == 4
    with pytest.raises(ValueError, match="duplicate rows"):
        read_metrics([tmp_path / "a.parquet", tmp_path / "a.parquet"])


def test_missing_column_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"missing columns \['map'\]"):
        write_metrics(_frame().drop(columns="map"), tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_unexpected_column_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unexpected columns \['extra'\]"):
        validate_metrics(_frame().assign(extra=1))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("seed", "0", "'seed' has dtype"),
        ("accuracy", "high", "'accuracy' has dtype"),
        ("n", 1.5, "'n' has dtype"),
        ("confusion", "[[1]]", "does not convert"),
    ],
)
def test_wrong_type_is_a_clear_error(column, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate_metrics(_frame().assign(**{column: value}))


def test_foreign_parquet_is_rejected(tmp_path) -> None:
    pq.write_table(pa.table({"method": ["at"]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="does not have METRICS_SCHEMA"):
        read_metrics(tmp_path / "other.parquet")
