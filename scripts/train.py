"""Stage script: train one method on one architecture with one seed."""

from dpaat.cpu_kernels import kernel_record, pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
CPU_KERNELS = pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from pathlib import Path

import torch

from dpaat.data import load_cache
from dpaat.fast_paths import TRAINING_PATHS, use_fast_paths
from dpaat.imagenet_weights import recorded_weights_file
from dpaat.io import write_json
from dpaat.methods import build_method
from dpaat.models import build_model
from dpaat.runtime import job_device, setup_logging
from dpaat.trained import load_trained, save_trained
from dpaat.training import TrainConfig, mean_clean_loss, train, write_history
from dpaat.work_count import WorkCounter

log = setup_logging(snakemake.log[0])
w = snakemake.wildcards
seed = int(w.seed)
# Execution settings come from the config and the scheduler, not params: changing them reruns nothing.
device = job_device(snakemake.config["training"]["device"], snakemake.config["gpu"])
execution = {"device": str(device), "threads": snakemake.threads}
config = TrainConfig.from_mapping({**snakemake.params.training, **execution})
fast = use_fast_paths(snakemake.config["gpu"]["fast_paths"], device, TRAINING_PATHS, bf16=config.bf16)
train_split = load_cache(snakemake.input.train)
val_split = load_cache(snakemake.input.val)
image_size = int(train_split.images.shape[-1])

xi = None
if snakemake.input.reference:
    # AMAT's threshold: the loss level a well-trained network reaches on unseen images.
    reference = load_trained(snakemake.input.reference, device)
    xi = mean_clean_loss(reference.model, val_split.images, val_split.labels, config.batch_size, device)
    log.info("AMAT xi = %.4f (mean clean validation CE of %s)", xi, snakemake.input.reference)

torch.manual_seed(seed)
# Where rule weights put the ImageNet checkpoint (its record is an input only when pretrained).
imagenet = recorded_weights_file(snakemake.input.imagenet, w.arch) if snakemake.params.pretrained else None
if imagenet is not None:
    log.info("starting from the ImageNet weights in %s", imagenet)
model = build_model(w.arch, len(train_split.classes), pretrained=snakemake.params.pretrained, weights_file=imagenet)
method = build_method(w.method, snakemake.params.training, num_samples=len(train_split.labels), xi=xi)
log.info(
    "training %s on %s, seed %d: %d train and %d val images at %d px",
    *(w.method, w.arch, seed, len(train_split.labels), len(val_split.labels), image_size),
)
result = train(
    model,
    method,
    config,
    train_split.images,
    train_split.labels,
    val_split.images,
    val_split.labels,
    seed=seed,
    head_parameters=model.head_parameters(),
    checkpoint_path=snakemake.params.checkpoint,
    work=(work := WorkCounter(model)),
)
save_trained(model, w.arch, train_split.classes, image_size, snakemake.output.weights)
write_history(result.history, snakemake.output.history)
write_json(
    {
        "seed": seed,
        "method": w.method,
        "arch": w.arch,
        "image_size": image_size,
        "classes": list(train_split.classes),
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "device": result.device,
        "deterministic": config.deterministic,
        "fast_paths": fast,
        "method_details": result.method,
        "amat_xi": xi,
        "training": snakemake.params.training,
        "pretrained": snakemake.params.pretrained,
        "cpu_kernels": kernel_record(CPU_KERNELS),
        # Counted by this process: a resumed job's record holds the epochs after its resume only.
        "work": work.record(),
    },
    snakemake.output.run,
)
log.info("best epoch %d, val loss %.4f", result.best_epoch, result.best_val_loss)
# Every output is written: the checkpoint (kept by a killed job, for its resume) has served.
Path(snakemake.params.checkpoint).unlink(missing_ok=True)
