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
from dpaat.settings import ExecutionSettings, TrainingSettings
from dpaat.trained import save_trained
from dpaat.training import reference_xi, run_record, train, write_history
from dpaat.work_count import WorkCounter

log = setup_logging(snakemake.log[0])
w = snakemake.wildcards
seed = int(w.seed)
# The result settings are the params; the execution settings come from the config and the scheduler.
settings = TrainingSettings.from_mapping(w.method, snakemake.params.training)
execution = ExecutionSettings.from_config(snakemake.config, threads=snakemake.threads)
device = job_device(execution.device, execution.gpu)
fast = use_fast_paths(execution.fast_paths, device, TRAINING_PATHS, bf16=settings.bf16)
train_split, val_split = load_cache(snakemake.input.train), load_cache(snakemake.input.val)
# AMAT's ξ from the STD model, when training.amat.xi does not fix it (the plan then gives its weights as input).
xi = reference_xi(snakemake.input.reference[0], val_split, settings.batch_size, device) if snakemake.input.reference else None
settings = settings.with_amat_xi(xi)
torch.manual_seed(seed)
# Where rule weights put the ImageNet checkpoint (its record is an input only when pretrained).
imagenet = recorded_weights_file(snakemake.input.imagenet, w.arch) if snakemake.params.pretrained else None
model = build_model(w.arch, len(train_split.classes), pretrained=snakemake.params.pretrained, weights_file=imagenet)
log.info("training %s on %s, seed %d (ImageNet weights: %s)", w.method, w.arch, seed, imagenet)
result = train(
    model, build_method(settings), train_split.images, train_split.labels, val_split.images, val_split.labels,
    seed=seed, device=device, execution=execution, head_parameters=model.head_parameters(),
    checkpoint_path=snakemake.params.checkpoint, work=(work := WorkCounter(model)),
)  # fmt: skip
image_size = int(train_split.images.shape[-1])
save_trained(model, w.arch, train_split.classes, image_size, snakemake.output.weights)
write_history(result.history, snakemake.output.history)
record = run_record(result, settings, execution, seed=seed, arch=w.arch, image_size=image_size, xi=xi, fast_paths=fast)
write_json(
    # work: counted by this process, so a resumed job's record holds the epochs after its resume only.
    {**record, "classes": list(train_split.classes), "training": snakemake.params.training,
     "pretrained": snakemake.params.pretrained, "cpu_kernels": kernel_record(CPU_KERNELS), "work": work.record()},
    snakemake.output.run,
)  # fmt: skip
log.info("best epoch %d, val loss %.4f", result.best_epoch, result.best_val_loss)
# Every output is written: the checkpoint (kept by a killed job, for its resume) has served.
Path(snakemake.params.checkpoint).unlink(missing_ok=True)
