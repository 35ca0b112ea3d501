"""One trained model's whole evaluation: the clean pass and every test attack, in one process.

`evaluate_model` loads nothing itself: it takes the rebuilt model and the test split,
predicts the clean images, then runs each configured attack through
`dpaat.attacks.run_attack` (dispatching on `AttackSpec.kind`) and predicts the
adversarial images. The logits of every attack give the model's metrics rows
(`dpaat.metrics`) and its predictions table (`dpaat.predictions`, one row per attack
and test image, in test-set order), which the statistics build on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from dpaat.attack_kinds import stages_of
from dpaat.attacks import AttackSpec, run_attack
from dpaat.io import save_torch
from dpaat.predict import predict_logits
from dpaat.predictions import PREDICTION_COLUMNS
from dpaat.work_count import WorkCounter, counted

if TYPE_CHECKING:  # imported where used: the model jobs' start-up stays short
    import pandas as pd

CLEAN = "clean"

log = logging.getLogger("dpaat.evaluation")


def attack_specs(attacks: Mapping[str, Mapping[str, Any]]) -> dict[str, AttackSpec]:
    """Resolve the config's attacks ({name: entry}) into specs, in config order; 'clean' is reserved."""
    if CLEAN in attacks:
        raise ValueError(f"an attack may not be named {CLEAN!r}: that name labels the unattacked test set")
    return {name: AttackSpec.from_config(entry) for name, entry in attacks.items()}


def evaluate_model(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Mapping[str, AttackSpec],
    *,
    batch_size: int,
    device: torch.device | str,
    image_ids: list[str] | None = None,
    adversarial_dir: str | os.PathLike | None = None,
    corrupted: Iterable[tuple[str, Tensor]] = (),
    work: WorkCounter | None = None,
) -> dict[str, Tensor]:
    """Logits (N, C) on the CPU of the clean test set, each attack and each corrupted test set, keyed 'clean',
    then by attack name, then by condition name (`dpaat.corruptions.condition_name`).

    `corrupted` yields (condition, images) pairs of the same test images, corrupted
    (`dpaat.corruptions.corrupted_test_sets`); they are predicted only, after every attack.

    `model` must already be on `device`. With `adversarial_dir`, each attack's float32
    adversarial images are also saved to `<adversarial_dir>/<attack>.pt` (x_adv, logits,
    labels, image_ids); they are dropped from memory before the next attack either way.
    With `work` (a `WorkCounter` on `model`), each pass is counted under 'clean' or its attack's name.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} test images but {len(labels)} labels")
    if adversarial_dir is not None and image_ids is None:
        raise ValueError("saving adversarial images needs the test set's image_ids")
    with counted(work, CLEAN):
        logits = {CLEAN: predict_logits(model, images, batch_size=batch_size, device=device)}
    log.info("%s: accuracy %.4f", CLEAN, _accuracy(logits[CLEAN], labels))
    # Entries read off another attack's run (a PGD's first random start off its best-of-k run,
    # AutoAttack's APGD-CE and white-box stages off the whole AutoAttack): one attack, several rows.
    runs = stages_of({n: asdict(a) for n, a in attacks.items()})
    source = {entry: whole for whole, stages in runs.items() for entry in stages.values()}
    for name in attacks:
        if name in logits:
            continue
        run = source.get(name, name)
        with counted(work, run):
            if run not in runs:
                adversarial = {run: run_attack(model, images, labels, attacks[run], batch_size=batch_size, device=device)}
            else:
                staged, final = run_attack(
                    model, images, labels, attacks[run], batch_size=batch_size, device=device, stages=tuple(runs[run])
                )
                adversarial = {**{runs[run][stage]: staged[stage] for stage in runs[run]}, run: final}
        for done, x_adv in adversarial.items():
            with counted(work, done):
                logits[done] = predict_logits(model, x_adv, batch_size=batch_size, device=device)
            if adversarial_dir is not None:
                blob = {"x_adv": x_adv, "logits": logits[done], "labels": labels, "image_ids": list(image_ids)}
                save_torch(blob, Path(adversarial_dir) / f"{done}.pt")
            log.info("%s (%s): accuracy %.4f", done, attacks[done], _accuracy(logits[done], labels))
        del adversarial, x_adv
    # In config order, whichever run gave them.
    logits = {CLEAN: logits[CLEAN], **{name: logits[name] for name in attacks}}
    for name, corrupted_images in corrupted:
        if name in logits:
            raise ValueError(f"corrupted test set {name!r} has the name of an attack or of the clean test set")
        if corrupted_images.shape != images.shape:
            raise ValueError(
                f"corrupted test set {name}: {tuple(corrupted_images.shape)} images, the test set has {tuple(images.shape)}"
            )
        with counted(work, name):
            logits[name] = predict_logits(model, corrupted_images, batch_size=batch_size, device=device)
        log.info("%s: accuracy %.4f", name, _accuracy(logits[name], labels))
    return logits


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")


def metrics_rows(
    logits: Mapping[str, Tensor], labels: Tensor, classes: list[str], *, method: str, arch: str, seed: int
) -> pd.DataFrame:
    """The model's metrics table (`dpaat.metrics.METRICS_SCHEMA`), one row per attack in `logits` order."""
    from dpaat.metrics import metrics_frame, model_metrics

    identity = {"method": method, "arch": arch, "seed": int(seed)}
    return metrics_frame(
        model_metrics(labels, attack_logits, classes, attack=attack, **identity)
        for attack, attack_logits in logits.items()
    )


def predictions_frame(logits: Mapping[str, Tensor], labels: Tensor, image_ids: list[str]) -> pd.DataFrame:
    """Per-image predictions: attack blocks in `logits` order, test-set order within each; prediction = argmax logit."""
    import numpy as np
    import pandas as pd

    n = len(image_ids)
    ids, label_values = list(image_ids), labels.cpu().numpy().astype(np.int64)
    frames = []
    for attack, attack_logits in logits.items():
        if attack_logits.ndim != 2 or len(attack_logits) != n or len(labels) != n:
            raise ValueError(
                f"{attack}: logits {tuple(attack_logits.shape)} and {len(labels)} labels do not match {n} image ids"
            )
        values = attack_logits.detach().float().cpu().numpy()
        frames.append(
            pd.DataFrame(
                {
                    "attack": attack,
                    "image_id": ids,
                    "label": label_values,
                    "prediction": values.argmax(axis=1).astype(np.int64),
                    "logits": list(values),
                }
            )
        )
    if not frames:
        return pd.DataFrame({column: [] for column in PREDICTION_COLUMNS})
    return pd.concat(frames, ignore_index=True)
