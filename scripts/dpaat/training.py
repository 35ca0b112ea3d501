"""The training loop shared by every method: warm-up, full training, early stopping, resume.

Schedule (SPEC "Training schedule"): `warmup_epochs` epochs in which only the head is
trainable (the body's parameters have requires_grad off and a separate Adam holds
only the head; BatchNorm layers of the body stay in train mode, so their running
statistics still adapt to the data), then `epochs` epochs with all layers and a fresh
Adam (the warm-up's moments are dropped when the body is released). Early stopping
(`dpaat.early_stopping`) counts only in the full phase. A checkpoint
(`dpaat.checkpoint`) is written atomically after every epoch; a run resumes from one
only when its fingerprint is this run's.

`train` reads the result settings from the method (`method.settings`, one
`TrainingSettings`) and the execution settings (threads, deterministic kernels) from an
`ExecutionSettings`, on the device the caller resolved.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from dpaat.attacks import eval_mode
from dpaat.augment import BatchAugmentation, build_augmentation
from dpaat.checkpoint import Checkpoint, fingerprint, restore, rng_state, set_rng_state
from dpaat.early_stopping import RunState
from dpaat.fast_paths import FastPaths, adam, as_layout, fast_paths, model_to
from dpaat.io import write_parquet
from dpaat.methods import Adversary, TrainingMethod
from dpaat.predict import as_float_images, device_images
from dpaat.runtime import set_deterministic, set_threads
from dpaat.settings import ExecutionSettings, TrainingSettings
from dpaat.trained import load_trained
from dpaat.work_count import WorkCounter, counted

logger = logging.getLogger(__name__)

HISTORY_SCHEMA = pa.schema(
    [
        ("epoch", pa.int64()),  # 1-based, warm-up epochs included
        ("phase", pa.string()),  # warmup | full
        ("train_loss", pa.float64()),  # the method's loss, mean over the epoch's samples
        ("val_loss", pa.float64()),  # adversarial CE for AT methods, clean CE for STD
        ("val_clean_acc", pa.float64()),  # fraction in [0, 1]
        ("val_adv_acc", pa.float64()),  # under the training adversary (fixed eps), every method
        ("eps_mean", pa.float64()),  # per-sample training eps (AMAT, DPAAT); NaN otherwise
        ("eps_std", pa.float64()),  # population std of the same
        ("seconds", pa.float64()),  # wall time of the epoch, validation included
    ]
)


@dataclass
class TrainResult:
    """What a finished `train` call reports; the model itself holds the best weights."""

    history: pd.DataFrame
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    resumed_from_epoch: int
    method: dict[str, Any]
    device: str


def write_history(history: pd.DataFrame, path: str | Path) -> None:
    """Write the history table to Parquet atomically with its fixed schema."""
    write_parquet(history, path, schema=HISTORY_SCHEMA)


def _autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast on `device` when `bf16` (train() asks for it on CUDA only); a no-op context otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def _batches(images: Tensor, labels: Tensor, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """uint8 images → float [0, 1] on `device` (`predict.device_images`), in order, one batch at a time."""
    for start in range(0, len(images), batch_size):
        x = device_images(images[start : start + batch_size], device)
        yield x, labels[start : start + batch_size].to(device, non_blocking=True)


def mean_clean_loss(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 64, device: torch.device | str = "cpu"
) -> float:
    """Mean clean cross-entropy of `model` (eval mode) on uint8 images: AMAT's ξ from the STD model."""
    _check_split("images", images, labels)
    device = torch.device(device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad(), eval_mode(model):
        for x, y in _batches(images, labels, batch_size, device):
            total += F.cross_entropy(model(x), y, reduction="sum").double()
    return float(total) / len(images)


def validate(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    adversary: Adversary,
    adversarial_loss: bool,
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Validation loss (adversarial or clean CE), clean and adversarial accuracy, in eval mode.

    Random starts, if the adversary uses them, draw from a generator seeded with `seed`
    afresh each call, so every epoch is validated against the same attack.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, clean correct, adv correct
    with eval_mode(model), _autocast(device, bf16):
        for x, y in _batches(images, labels, batch_size, device):
            x_adv = adversary.attack(model, x, y, generator=generator)
            with torch.no_grad():
                logits_clean, logits_adv = model(torch.cat([x, x_adv])).float().chunk(2)
                scored = logits_adv if adversarial_loss else logits_clean
                sums[0] += F.cross_entropy(scored, y, reduction="sum").double()
                sums[1] += (logits_clean.argmax(1) == y).sum()
                sums[2] += (logits_adv.argmax(1) == y).sum()
    loss, clean, adv = (sums / len(images)).tolist()
    return {"val_loss": loss, "val_clean_acc": clean, "val_adv_acc": adv}


def _check_split(name: str, images: Tensor, labels: Tensor) -> None:
    """Fail early, naming the problem, on images/labels the loop cannot use."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must be a uint8 tensor (N, 3, S, S), got {images.dtype} {tuple(images.shape)}")
    if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"{name} labels must be int64 of shape ({images.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
        )
    if len(images) == 0:
        raise ValueError(f"{name} is empty")
    if bool((labels < 0).any()):
        raise ValueError(f"{name} labels must be class indices >= 0")


def _phase(epoch: int, settings: TrainingSettings) -> str:
    """warmup for the first `warmup_epochs` epochs (0-based), full after."""
    return "warmup" if epoch < settings.warmup_epochs else "full"


def _optimizer_for(
    phase: str, trainable: list[nn.Parameter], head: list[nn.Parameter], lr: float, fused: bool = False
) -> torch.optim.Adam:
    """Make only the phase's parameters trainable and give them a fresh Adam (fused on CUDA)."""
    released = head if phase == "warmup" else trainable
    released_ids = {id(p) for p in released}
    for p in trainable:
        p.requires_grad_(id(p) in released_ids)
    return adam(released, lr, fused=fused)


def _train_epoch(
    model: nn.Module,
    method: TrainingMethod,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    batch_size: int,
    shuffle: torch.Generator,
    device: torch.device,
    bf16: bool,
    augmentation: BatchAugmentation | None = None,
    seed: int = 0,
    epoch: int = 0,
    memory_format: torch.memory_format | None = None,
) -> tuple[float, Tensor | None]:
    """One pass over the shuffled training set; mean loss and the per-sample eps used (if any).

    With `augmentation`, each uint8 batch is augmented before it becomes float, with
    draws seeded by (seed, epoch, batch index) alone. `bf16`: autocast on `device`;
    `memory_format`: the batches' layout (channels_last on CUDA).
    """
    model.train()
    order = torch.randperm(len(images), generator=shuffle).to(images.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=images.device)
    eps_used = []
    for batch, index in enumerate(order.split(batch_size)):
        raw = images[index]
        if augmentation is not None:
            raw = augmentation(raw, seed=seed, epoch=epoch, batch=batch)
        x = as_layout(as_float_images(raw), memory_format)
        y = labels[index]
        with _autocast(device, bf16):
            loss, stats = method.loss(model, x, y, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Accumulate on the device: no host sync per batch.
        loss_sum += loss.detach().double() * len(index)
        if "eps" in stats:
            eps_used.append(stats["eps"].detach().float())
    return float(loss_sum) / len(images), torch.cat(eps_used) if eps_used else None


def _check_inputs(
    model: nn.Module, settings: TrainingSettings, head_parameters: Iterable[nn.Parameter] | None, splits: tuple
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Check the data and the warm-up's head; the trainable parameters and the head's."""
    _check_split("train_images", *splits[:2])
    _check_split("val_images", *splits[2:])
    trainable = [p for p in model.parameters() if p.requires_grad]
    head = list(head_parameters) if head_parameters is not None else []
    if settings.warmup_epochs > 0:
        if not head:
            raise ValueError(
                "warmup_epochs > 0 needs head_parameters (e.g. Classifier.head_parameters()); "
                "pass them or set training.warmup_epochs to 0"
            )
        if not {id(p) for p in head} <= {id(p) for p in trainable}:
            raise ValueError("head_parameters must be trainable parameters of the model being trained")
    return trainable, head


@dataclass
class _Run:
    """One training run: what every epoch reads, and the state it carries from epoch to epoch."""

    model: nn.Module
    method: TrainingMethod
    device: torch.device
    fast: FastPaths
    splits: tuple[Tensor, Tensor, Tensor, Tensor]  # train images and labels (on the device), val images and labels
    seed: int
    trainable: list[nn.Parameter]
    head: list[nn.Parameter]
    checkpoint: Checkpoint | None
    state: RunState
    shuffle: torch.Generator
    optimizer_resume: tuple[dict[str, Any], str] | None = None  # a checkpoint's optimiser state and its phase
    work: WorkCounter | None = None  # counts the passes under 'train_warmup', 'train_full' and 'validation'

    @property
    def settings(self) -> TrainingSettings:
        """The method's settings."""
        return self.method.settings

    @property
    def bf16(self) -> bool:
        """bf16 autocast: when training.bf16 asks and the device has it."""
        return self.settings.bf16 and self.fast.bf16_training

    def epochs(self) -> Iterator[dict[str, Any]]:
        """Run the epochs left (from a resumed checkpoint's), yielding each history row once it is checkpointed."""
        end = self.state.epoch if self.state.stopped_early else self.settings.total_epochs
        augmentation = build_augmentation(self.settings.augmentation)
        optimizer, phase = None, None
        for epoch in range(self.state.epoch, end):
            if _phase(epoch, self.settings) != phase:
                phase = _phase(epoch, self.settings)
                optimizer = self.optimizer(phase)
            row = self.epoch(epoch, phase, optimizer, augmentation)
            self.state.record(row, self.model, self.settings.patience)
            finished = self.state.stopped_early or epoch + 1 == self.settings.total_epochs
            if finished:
                self.state.restore_best(self.model)
            if self.checkpoint is not None:
                self.checkpoint.save(
                    model=self.model, run_state=self.state, finished=finished, optimizer=optimizer, phase=phase,
                    method=self.method, rng=rng_state(self.shuffle, self.device),
                )  # fmt: skip
            _log_epoch(self.method.name, row)
            yield row
            if self.state.stopped_early:
                break

    def optimizer(self, phase: str) -> torch.optim.Adam:
        """The phase's fresh Adam, holding a resumed checkpoint's state when it was saved in this phase."""
        optimizer = _optimizer_for(phase, self.trainable, self.head, self.settings.lr, fused=self.fast.fused_adam)
        if self.optimizer_resume is not None and self.optimizer_resume[1] == phase:
            optimizer.load_state_dict(self.optimizer_resume[0])
        self.optimizer_resume = None
        return optimizer

    def epoch(
        self, epoch: int, phase: str, optimizer: torch.optim.Optimizer, augmentation: BatchAugmentation | None
    ) -> dict[str, Any]:
        """Train one epoch and validate: the epoch's history row (a non-finite loss is an error)."""
        started = time.perf_counter()
        train_images, train_labels, val_images, val_labels = self.splits
        with counted(self.work, f"train_{phase}"):
            train_loss, eps_used = _train_epoch(
                self.model, self.method, optimizer, train_images, train_labels, self.settings.batch_size,
                self.shuffle, self.device, self.bf16, augmentation=augmentation, seed=self.seed, epoch=epoch,
                memory_format=self.fast.memory_format,
            )  # fmt: skip
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"{self.method.name}: training loss is {train_loss} in epoch {epoch + 1}; lower training.lr "
                "or check the inputs"
            )
        with counted(self.work, "validation"):
            scores = validate(
                self.model, val_images, val_labels, adversary=self.method.adversary,
                adversarial_loss=self.method.adversarial, batch_size=self.settings.batch_size, device=self.device,
                bf16=self.bf16, seed=self.seed,
            )  # fmt: skip
        return {
            "epoch": epoch + 1,
            "phase": phase,
            "train_loss": train_loss,
            **scores,
            "eps_mean": float(eps_used.mean()) if eps_used is not None else math.nan,
            "eps_std": float(eps_used.std(correction=0)) if eps_used is not None else math.nan,
            "seconds": time.perf_counter() - started,
        }


def _start(
    model: nn.Module,
    method: TrainingMethod,
    splits: tuple[Tensor, Tensor, Tensor, Tensor],
    seed: int,
    device: torch.device,
    head_parameters: Iterable[nn.Parameter] | None,
    checkpoint_path: str | Path | None,
) -> _Run:
    """Check the inputs, move model and data to `device`, seed, and resume from a checkpoint of this run."""
    trainable, head = _check_inputs(model, method.settings, head_parameters, splits)
    fast = fast_paths(device)
    checkpoint = None
    if checkpoint_path is not None:
        checkpoint = Checkpoint(Path(checkpoint_path), fingerprint(method, seed, model, splits))
    blob = checkpoint.load() if checkpoint is not None else None
    model_to(model, device, fast.memory_format)
    method.prepare(len(splits[0]), device)
    on_device = (splits[0].to(device), splits[1].to(device), *splits[2:])
    run = _Run(
        model, method, device, fast, on_device, seed, trainable, head, checkpoint, RunState(),
        torch.Generator().manual_seed(seed),
    )  # fmt: skip
    torch.manual_seed(seed)
    if blob is not None:
        run.state = restore(blob, model, method)
        set_rng_state(blob["rng"], run.shuffle, device)
        run.optimizer_resume = (blob["optimizer"], blob["optimizer_phase"])
        logger.info("resuming %s from %s after epoch %d", method.name, checkpoint_path, run.state.epoch)
    return run


def _log_epoch(name: str, row: dict[str, Any]) -> None:
    logger.info(
        "%s epoch %d (%s): train_loss %.4f val_loss %.4f clean_acc %.3f adv_acc %.3f (%.1fs)",
        *(name, row["epoch"], row["phase"], row["train_loss"], row["val_loss"]),
        *(row["val_clean_acc"], row["val_adv_acc"], row["seconds"]),
    )


def train(
    model: nn.Module,
    method: TrainingMethod,
    train_images: Tensor,
    train_labels: Tensor,
    val_images: Tensor,
    val_labels: Tensor,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    execution: ExecutionSettings | None = None,
    head_parameters: Iterable[nn.Parameter] | None = None,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    work: WorkCounter | None = None,
) -> TrainResult:
    """Train `model` in place with `method` (and its settings); on return it holds the best full-phase weights.

    Images are uint8 (N, 3, S, S) and labels int64 (N,); a sample's dataset position (its
    row in `train_images`) is what the method sees as its index. Seeds torch's global RNG
    with `seed` (dropout, random starts) and shuffles with its own generator.
    `head_parameters` are the only trainable parameters in the warm-up (required when
    warmup_epochs > 0). With `checkpoint_path`, resumes from the checkpoint there when it
    belongs to this run, and rewrites it after every epoch. `callback(row)` is called
    with each epoch's history row once that epoch's checkpoint is written.
    `execution`: threads and deterministic kernels (default: one thread, deterministic). With `work`
    (a `WorkCounter` on `model`), passes are counted under 'train_warmup', 'train_full' and 'validation'.
    """
    execution, device = execution or ExecutionSettings(), torch.device(device)
    set_threads(execution.threads)
    splits = (train_images, train_labels, val_images, val_labels)
    run = _start(model, method, splits, seed, device, head_parameters, checkpoint_path)
    run.work = work
    resumed_from, total = run.state.epoch, method.settings.total_epochs
    bar = tqdm(total=total, initial=resumed_from, disable=not progress, desc=method.name, unit="epoch")
    restore_determinism = set_deterministic(execution.deterministic)
    try:
        for row in run.epochs():
            bar.set_postfix(phase=row["phase"], loss=f"{row['train_loss']:.3f}", val=f"{row['val_loss']:.3f}")
            bar.update()
            if callback is not None:
                callback(row)
    finally:
        bar.close()
        restore_determinism()
        for p in run.trainable:
            p.requires_grad_(True)
    return TrainResult(
        history=pd.DataFrame(run.state.history, columns=HISTORY_SCHEMA.names).astype({"epoch": "int64"}),
        best_epoch=run.state.best_epoch,
        best_val_loss=run.state.best_val_loss,
        stopped_early=run.state.stopped_early,
        resumed_from_epoch=resumed_from,
        method=method.describe(),
        device=str(device),
    )


def reference_xi(reference: str | Path, val: Any, batch_size: int, device: torch.device) -> float:
    """AMAT's ξ: the mean clean validation CE of the STD model at `reference` (the loss level of unseen images)."""
    model = load_trained(reference, device).model
    xi = mean_clean_loss(model, val.images, val.labels, batch_size, device)
    logger.info("AMAT xi = %.4f (mean clean validation CE of %s)", xi, reference)
    return xi


def run_record(
    result: TrainResult,
    settings: TrainingSettings,
    execution: ExecutionSettings,
    *,
    seed: int,
    arch: str,
    image_size: int,
    xi: float | None,
    fast_paths: list[str],
) -> dict[str, Any]:
    """The run's identity and outcome for its run.json."""
    return {
        "seed": seed,
        "method": settings.method,
        "arch": arch,
        "image_size": image_size,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "device": result.device,
        "deterministic": execution.deterministic,
        "fast_paths": fast_paths,
        "method_details": result.method,
        "amat_xi": xi,
    }
