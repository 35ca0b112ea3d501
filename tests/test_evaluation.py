"""The per-model evaluation: same numbers as one job per attack, predictions that agree with the metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torchattacks

from dpaat.attacks import AttackSpec, run_attack
from dpaat.evaluation import attack_specs, evaluate_model, metrics_rows, predictions_frame
from dpaat.predictions import PREDICTION_COLUMNS, predictions_schema, read_predictions, write_predictions
from dpaat.metrics import metrics_frame, model_metrics
from dpaat.models import build_model
from dpaat.predict import as_float_images, predict_logits

CLASSES = ["mel", "bkl", "nv"]
ATTACKS = {
    "fgsm": {"kind": "fgsm", "eps": 8 / 255},
    "ifgsm3": {"kind": "ifgsm", "eps": 8 / 255, "steps": 3},
    "pgd3": {"kind": "pgd", "eps": 0.5, "steps": 3},
}
BATCH = 4


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model("mobilenet_v2", len(CLASSES))
    # A head whose logits depend on the image, and non-default BatchNorm statistics, so eval mode matters.
    with torch.no_grad():
        for param in net.head_parameters():
            param.normal_(0, 1)
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # running statistics = those of the batch below
        net.train()(torch.rand(16, 3, 32, 32))
    return net.eval()


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (10, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    return images, labels, [f"ISIC_{i:07d}" for i in range(10)]


@pytest.fixture(scope="module")
def logits(model, test_set) -> dict[str, torch.Tensor]:
    images, labels, _ = test_set
    return evaluate_model(model, images, labels, attack_specs(ATTACKS), batch_size=BATCH, device="cpu")


def test_logits_equal_the_one_job_per_attack_path(model, test_set, logits):
    """Bit for bit what the old attack jobs (run_attack, then predict the saved images) and evaluate job gave."""
    images, labels, _ = test_set
    assert list(logits) == ["clean", *ATTACKS]
    assert torch.equal(logits["clean"], predict_logits(model, images, batch_size=BATCH, device="cpu"))
    for name, entry in ATTACKS.items():
        x_adv = run_attack(
            model, as_float_images(images), labels, AttackSpec.from_config(entry), batch_size=BATCH, device="cpu"
        )
        assert torch.equal(logits[name], predict_logits(model, x_adv, batch_size=BATCH, device="cpu")), name
    old_rows = metrics_frame(
        model_metrics(labels, scores, CLASSES, method="std", arch="mobilenet_v2", seed=0, attack=attack)
        for attack, scores in logits.items()
    )
    pd.testing.assert_frame_equal(
        metrics_rows(logits, labels, CLASSES, method="std", arch="mobilenet_v2", seed=0), old_rows
    )


def test_fgsm_logits_match_torchattacks(model, test_set, logits):
    images, labels, _ = test_set
    x_adv = torchattacks.FGSM(model, eps=ATTACKS["fgsm"]["eps"])(as_float_images(images), labels)
    with torch.no_grad():
        theirs = model(x_adv)
    torch.testing.assert_close(logits["fgsm"], theirs, atol=1e-4, rtol=1e-4)


def test_attacks_change_the_predictions(logits):
    # A 0.5 L2 PGD against an untrained net moves its logits; a no-op dispatch would not.
    assert not torch.allclose(logits["pgd3"], logits["clean"])


def test_predictions_agree_with_the_metrics_rows(test_set, logits):
    images, labels, image_ids = test_set
    predictions = predictions_frame(logits, labels, image_ids)
    metrics = metrics_rows(logits, labels, CLASSES, method="std", arch="mobilenet_v2", seed=0)
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    assert len(predictions) == len(logits) * len(labels)
    assert list(predictions["attack"].unique()) == list(logits)
    for attack, rows in predictions.groupby("attack", sort=False):
        assert rows["image_id"].tolist() == image_ids, "test-set order"
        assert rows["label"].tolist() == labels.tolist()
        np.testing.assert_array_equal(np.stack(rows["logits"].to_list()), logits[attack].numpy())
        confusion = np.zeros((3, 3), dtype=np.int64)
        np.add.at(confusion, (rows["label"].to_numpy(), rows["prediction"].to_numpy()), 1)
        row = metrics.set_index("attack").loc[attack]
        assert confusion.tolist() == row["confusion"]
        assert (rows["prediction"] == rows["label"]).mean() == pytest.approx(row["accuracy"])


def test_predictions_file_has_the_contract_schema(tmp_path, test_set, logits):
    _, labels, image_ids = test_set
    path = tmp_path / "predictions" / "0" / "std" / "mobilenet_v2.parquet"
    write_predictions(predictions_frame(logits, labels, image_ids), path)
    schema = pq.read_schema(path)
    assert schema.equals(
        pa.schema(
            [
                ("attack", pa.string()),
                ("image_id", pa.string()),
                ("label", pa.int64()),
                ("prediction", pa.int64()),
                ("logits", pa.list_(pa.float32())),
            ]
        ),
        check_metadata=False,
    )
    back = read_predictions(path)
    assert back["logits"].iloc[0].dtype == np.float32
    np.testing.assert_array_equal(back["logits"].iloc[-1], logits["pgd3"][-1].numpy())
    assert [p.name for p in path.parent.iterdir()] == ["mobilenet_v2.parquet"], "no temporary file left behind"


def test_foreign_or_duplicated_predictions_are_rejected(tmp_path, test_set, logits):
    _, labels, image_ids = test_set
    frame = predictions_frame(logits, labels, image_ids)
    with pytest.raises(ValueError, match="more than one row"):
        write_predictions(pd.concat([frame, frame.head(1)], ignore_index=True), tmp_path / "dup.parquet")
    with pytest.raises(ValueError, match="columns must be"):
        write_predictions(frame.drop(columns="logits"), tmp_path / "short.parquet")
    pq.write_table(pa.table({"attack": ["clean"], "image_id": ["a"]}), tmp_path / "foreign.parquet")
    with pytest.raises(ValueError, match="predictions schema"):
        read_predictions(tmp_path / "foreign.parquet")
    assert predictions_schema().names == list(PREDICTION_COLUMNS)


def test_adversarial_images_are_kept_only_when_asked(tmp_path, model, test_set, logits):
    images, labels, image_ids = test_set
    specs = attack_specs({"fgsm": ATTACKS["fgsm"]})
    evaluate_model(model, images, labels, specs, batch_size=BATCH, device="cpu")
    assert not any(tmp_path.iterdir())
    kept = evaluate_model(
        model, images, labels, specs, batch_size=BATCH, device="cpu", image_ids=image_ids, adversarial_dir=tmp_path
    )
    blob = torch.load(tmp_path / "fgsm.pt", weights_only=True)
    assert blob["x_adv"].dtype == torch.float32 and blob["x_adv"].shape == images.shape
    assert blob["image_ids"] == image_ids and torch.equal(blob["labels"], labels)
    assert torch.equal(blob["logits"], kept["fgsm"]) and torch.equal(kept["fgsm"], logits["fgsm"])
    assert torch.equal(predict_logits(model, blob["x_adv"], batch_size=BATCH, device="cpu"), kept["fgsm"])


def test_an_attack_named_clean_is_rejected():
    with pytest.raises(ValueError, match="may not be named 'clean'"):
        attack_specs({"clean": {"kind": "fgsm", "eps": 0.1}})
