"""Stage script: one trained model's clean and adversarial evaluation into its metrics and predictions."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat.corrupted_sets import corrupted_test_sets
from dpaat.data import load_cache
from dpaat.evaluation import attack_specs, evaluate_model, metrics_rows, predictions_frame
from dpaat.fast_paths import EVALUATION_PATHS, evaluation_batch_size
from dpaat.io import write_json
from dpaat.metrics import write_metrics
from dpaat.predictions import write_predictions
from dpaat.runtime import evaluation_device, setup_logging
from dpaat.settings import ExecutionSettings
from dpaat.trained import load_trained
from dpaat.work_count import WorkCounter

log = setup_logging(snakemake.log[0])
execution = ExecutionSettings.from_config(snakemake.config, threads=snakemake.threads)
device = evaluation_device(execution, EVALUATION_PATHS)
w = snakemake.wildcards
# An execution setting, like the device: a GPU takes larger batches (Square syncs with the host once per batch and query).
batch_size = evaluation_batch_size(device, snakemake.params.batch_size, execution.gpu_batch_size)

trained = load_trained(snakemake.input.weights, device)
test = load_cache(snakemake.input.test)
specs = attack_specs(snakemake.params.attacks)
log.info(
    "%s %s seed %s: clean, %d attacks and %d corrupted test sets of %d images on %s, batches of %d",
    *(w.method, w.arch, w.seed, len(specs), len(snakemake.params.corruptions), len(test.labels), device, batch_size),
)
corrupted = (
    corrupted_test_sets(snakemake.input.corrupted, snakemake.params.corruptions, test.images.shape[-1], test.image_ids)
    if snakemake.params.corruptions
    else ()
)

logits = evaluate_model(
    trained.model, test.images, test.labels, specs, batch_size=batch_size, device=device,
    image_ids=list(test.image_ids), adversarial_dir=snakemake.params.adversarial_dir, corrupted=corrupted,
    work=(work := WorkCounter(trained.model)),
)  # fmt: skip
write_metrics(
    metrics_rows(logits, test.labels, trained.classes, method=w.method, arch=w.arch, seed=int(w.seed)),
    snakemake.output.metrics,
)
write_predictions(predictions_frame(logits, test.labels, list(test.image_ids)), snakemake.output.predictions)
write_json(
    {"seed": int(w.seed), "method": w.method, "arch": w.arch, "device": str(device), "batch_size": batch_size,
     "test_images": len(test.labels), "work": work.record()},
    snakemake.output.run,
)  # fmt: skip
