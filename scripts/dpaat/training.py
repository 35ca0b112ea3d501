"""The training loop shared by every method: warm-up, full training, early stopping, resume.

Schedule (SPEC "Training schedule"): `warmup_epochs` epochs in which only the head is
trainable (the body's parameters have requires_grad off and a separate Adam holds
only the head; BatchNorm layers of the body stay in train mode, so their running
statistics still adapt to the data), then `epochs` epochs with all layers and a fresh
Adam (the warm-up's moments are dropped when the body is released). Early stopping
counts only in the full phase: the best full-phase epoch by validation loss
(adversarial CE under the training adversary for AT methods, clean CE for STD) is
kept, training stops after `patience` epochs without a strict improvement, and the
best weights are restored.

Checkpoints are written atomically at the end of every epoch and hold everything the
next epoch depends on (weights, optimiser, method state, RNG states, history, early
stopping state; the best weights only when they differ from the model's), so a run
killed at any point and resumed ends with exactly the weights of an uninterrupted run
on the CPU. A checkpoint that cannot be read, or
whose fingerprint (training settings except device/bf16/threads, method settings,
seed, data and initial weights) differs from the run's, is stale: it is ignored with
a warning and training starts afresh, overwriting it after the first epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from dpaat.attacks import eval_mode
from dpaat.augment import AugmentConfig, BatchAugmentation, build_augmentation
from dpaat.fast_paths import adam, as_layout, fast_paths, model_to
from dpaat.io import save_torch, write_parquet
from dpaat.methods import Adversary, MethodConfig, TrainingMethod, missing_key
from dpaat.predict import as_float_images, device_images
from dpaat.runtime import select_device, set_deterministic, set_threads
from dpaat.work_count import WorkCounter, counted

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1

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


@dataclass(frozen=True)
class TrainConfig:
    """The config's `training` mapping, typed (see config/schema/config.schema.yaml)."""

    warmup_epochs: int
    epochs: int
    batch_size: int
    lr: float
    patience: int
    method: MethodConfig
    device: str
    bf16: bool
    threads: int
    augmentation: AugmentConfig
    deterministic: bool

    def __post_init__(self) -> None:
        problems = []
        if self.warmup_epochs < 0:
            problems.append(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        for key in ("epochs", "batch_size", "patience", "threads"):
            if getattr(self, key) < 1:
                problems.append(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", self.device):
            problems.append(f"device must be auto, cpu, cuda or cuda:<index>, got {self.device!r}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, training: Mapping[str, Any]) -> TrainConfig:
        """Build from the config's `training` mapping (defaults filled by the schema)."""
        try:
            return cls(
                warmup_epochs=int(training["warmup_epochs"]),
                epochs=int(training["epochs"]),
                batch_size=int(training["batch_size"]),
                lr=float(training["lr"]),
                patience=int(training["patience"]),
                method=MethodConfig.from_mapping(training),
                device=str(training["device"]),
                bf16=bool(training["bf16"]),
                threads=int(training["threads"]),
                augmentation=AugmentConfig.from_mapping(training["augmentation"]),
                deterministic=bool(training["deterministic"]),
            )
        except KeyError as err:
            raise missing_key(err) from None

    @property
    def total_epochs(self) -> int:
        """Warm-up plus full epochs (the most the loop runs)."""
        return self.warmup_epochs + self.epochs


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


def _tensor_digest(hasher: Any, tensor: Tensor) -> None:
    """Feed a tensor's raw bytes to a hash (reinterpreted as bytes: no dtype conversion)."""
    hasher.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def _fingerprint(
    config: TrainConfig, method: TrainingMethod, seed: int, model: nn.Module, splits: Iterable[Tensor]
) -> str:
    """Identity of a run: a checkpoint from any other run must not be resumed."""
    settings = asdict(config)
    for execution_only in ("device", "bf16", "threads", "deterministic"):
        settings.pop(execution_only)
    hasher = hashlib.sha256(
        json.dumps(
            {"format": CHECKPOINT_FORMAT, "seed": seed, "config": settings, "method": method.describe()},
            sort_keys=True,
            default=str,
        ).encode()
    )
    for name, tensor in model.state_dict().items():
        hasher.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        _tensor_digest(hasher, tensor)
    for tensor in splits:
        hasher.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        _tensor_digest(hasher, tensor)
    return hasher.hexdigest()


def _load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at `path` if it belongs to this run, else None (with a warning why)."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is untrusted, whatever the reason
        logger.warning(
            "ignoring unreadable checkpoint %s (%s: %s); training from scratch", path, type(err).__name__, err
        )
        return None
    if not isinstance(blob, dict) or blob.get("fingerprint") != fingerprint:
        logger.warning(
            "ignoring checkpoint %s: it belongs to another run (settings, seed, data or initial weights differ); "
            "training from scratch",
            path,
        )
        return None
    return blob


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    """Detached CPU copy of a module's state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@dataclass
class _RunState:
    """The loop's bookkeeping: epochs done, history and early-stopping state (checkpointed as plain data)."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, Tensor] | None = None
    bad_epochs: int = 0
    stopped_early: bool = False

    def record(self, row: dict[str, Any], model: nn.Module, patience: int) -> None:
        """Append an epoch; in the full phase, track the best weights and the patience count."""
        self.epoch = row["epoch"]
        self.history.append(row)
        if row["phase"] != "full":
            return
        if row["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.bad_epochs = row["val_loss"], row["epoch"], 0
            self.best_state = _cpu_state(model)
        else:
            self.bad_epochs += 1
        self.stopped_early = self.bad_epochs >= patience


def _rng_state(shuffle: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """Every RNG the next epoch draws from (shuffling, dropout, random starts)."""
    state = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Tensor], shuffle: torch.Generator, device: torch.device) -> None:
    """Restore `_rng_state` output."""
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _phase(epoch: int, config: TrainConfig) -> str:
    """warmup for the first `warmup_epochs` epochs (0-based), full after."""
    return "warmup" if epoch < config.warmup_epochs else "full"


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


def train(
    model: nn.Module,
    method: TrainingMethod,
    config: TrainConfig,
    train_images: Tensor,
    train_labels: Tensor,
    val_images: Tensor,
    val_labels: Tensor,
    *,
    seed: int,
    head_parameters: Iterable[nn.Parameter] | None = None,
    checkpoint_path: str | Path | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    work: WorkCounter | None = None,
) -> TrainResult:
    """Train `model` in place with `method`; on return it holds the best full-phase weights.

    Images are uint8 (N, 3, S, S) and labels int64 (N,); a sample's dataset position
    (its row in `train_images`) is what the method sees as its index. Seeds torch's
    global RNG with `seed` (dropout, random starts) and shuffles with its own generator.
    `head_parameters` are the only trainable parameters in the warm-up (required when
    warmup_epochs > 0). With `checkpoint_path`, resumes from the checkpoint there when
    it belongs to this run, and rewrites it after every epoch. `callback(row)` is
    called with each epoch's history row once that epoch's checkpoint is written. With `work` (a
    `WorkCounter` on `model`), passes are counted under 'train_warmup', 'train_full' and 'validation'.
    """
    _check_split("train_images", train_images, train_labels)
    _check_split("val_images", val_images, val_labels)
    trainable = [p for p in model.parameters() if p.requires_grad]
    head = list(head_parameters) if head_parameters is not None else []
    if config.warmup_epochs > 0:
        if not head:
            raise ValueError(
                "warmup_epochs > 0 needs head_parameters (e.g. Classifier.head_parameters()); "
                "pass them or set training.warmup_epochs to 0"
            )
        if not {id(p) for p in head} <= {id(p) for p in trainable}:
            raise ValueError("head_parameters must be trainable parameters of the model being trained")

    device = select_device(config.device)
    set_threads(config.threads)
    fast = fast_paths(device)
    use_bf16 = config.bf16 and fast.bf16_training
    augmentation = build_augmentation(config.augmentation)

    path = Path(checkpoint_path) if checkpoint_path is not None else None
    fingerprint = (
        _fingerprint(config, method, seed, model, (train_images, train_labels, val_images, val_labels))
        if path is not None
        else ""
    )
    blob = _load_checkpoint(path, fingerprint) if path is not None else None

    model_to(model, device, fast.memory_format)
    method.prepare(len(train_images), device)
    train_images, train_labels = train_images.to(device), train_labels.to(device)
    shuffle = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    run_state = _RunState()
    optimizer_state, optimizer_phase = None, None
    if blob is not None:
        model.load_state_dict(blob["model"])
        method.load_state_dict(blob["method"])
        _set_rng_state(blob["rng"], shuffle, device)
        run_state = _RunState(**blob["run_state"])
        if blob.get("best_is_model"):  # saved once, as the model's weights
            run_state.best_state = blob["model"]
        optimizer_state, optimizer_phase = blob["optimizer"], blob["optimizer_phase"]
        logger.info("resuming %s from %s after epoch %d", method.name, path, run_state.epoch)
    resumed_from = run_state.epoch
    end = resumed_from if run_state.stopped_early else config.total_epochs

    optimizer, phase = None, None
    bar = tqdm(total=config.total_epochs, initial=resumed_from, disable=not progress, desc=method.name, unit="epoch")
    restore_determinism = set_deterministic(config.deterministic)
    try:
        for epoch in range(resumed_from, end):
            if _phase(epoch, config) != phase:
                phase = _phase(epoch, config)
                optimizer = _optimizer_for(phase, trainable, head, config.lr, fused=fast.fused_adam)
                if optimizer_state is not None and optimizer_phase == phase:
                    optimizer.load_state_dict(optimizer_state)
                optimizer_state = None
            started = time.perf_counter()
            with counted(work, f"train_{phase}"):
                train_loss, eps_used = _train_epoch(
                    model,
                    method,
                    optimizer,
                    train_images,
                    train_labels,
                    config.batch_size,
                    shuffle,
                    device,
                    use_bf16,
                    augmentation=augmentation,
                    seed=seed,
                    epoch=epoch,
                    memory_format=fast.memory_format,
                )
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"{method.name}: training loss is {train_loss} in epoch {epoch + 1}; lower training.lr "
                    "or check the inputs"
                )
            with counted(work, "validation"):
                scores = validate(
                    model,
                    val_images,
                    val_labels,
                    adversary=method.adversary,
                    adversarial_loss=method.adversarial,
                    batch_size=config.batch_size,
                    device=device,
                    bf16=use_bf16,
                    seed=seed,
                )
            row = {
                "epoch": epoch + 1,
                "phase": phase,
                "train_loss": train_loss,
                **scores,
                "eps_mean": float(eps_used.mean()) if eps_used is not None else math.nan,
                "eps_std": float(eps_used.std(correction=0)) if eps_used is not None else math.nan,
                "seconds": time.perf_counter() - started,
            }
            run_state.record(row, model, config.patience)
            finished = run_state.stopped_early or epoch + 1 == config.total_epochs
            if finished and run_state.best_state is not None:
                model.load_state_dict(run_state.best_state)
            if path is not None:
                # The best weights are the model's own when this epoch is the best or they were just restored.
                best_is_model = run_state.best_state is not None and (finished or run_state.best_epoch == row["epoch"])
                run_record = {**vars(run_state), "best_state": None if best_is_model else run_state.best_state}
                save_torch(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "fingerprint": fingerprint,
                        "run_state": run_record,
                        "best_is_model": best_is_model,
                        "model": _cpu_state(model),
                        "optimizer": optimizer.state_dict(),
                        "optimizer_phase": phase,
                        "method": method.state_dict(),
                        "rng": _rng_state(shuffle, device),
                    },
                    path,
                )
            logger.info(
                "%s epoch %d (%s): train_loss %.4f val_loss %.4f clean_acc %.3f adv_acc %.3f (%.1fs)",
                method.name,
                row["epoch"],
                phase,
                train_loss,
                row["val_loss"],
                row["val_clean_acc"],
                row["val_adv_acc"],
                row["seconds"],
            )
            bar.set_postfix(phase=phase, loss=f"{train_loss:.3f}", val=f"{row['val_loss']:.3f}")
            bar.update()
            if callback is not None:
                callback(row)
            if run_state.stopped_early:
                break
    finally:
        bar.close()
        restore_determinism()
        for p in trainable:
            p.requires_grad_(True)

    return TrainResult(
        history=pd.DataFrame(run_state.history, columns=HISTORY_SCHEMA.names).astype({"epoch": "int64"}),
        best_epoch=run_state.best_epoch,
        best_val_loss=run_state.best_val_loss,
        stopped_early=run_state.stopped_early,
        resumed_from_epoch=resumed_from,
        method=method.describe(),
        device=str(device),
    )
