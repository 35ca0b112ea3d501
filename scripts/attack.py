"""Stage script: attack one trained model's test set and keep the float32 adversarial images."""

from dpaat.attacks import AttackSpec, run_attack
from dpaat.data import load_cache
from dpaat.io import save_torch
from dpaat.predict import as_float_images, predict_logits
from dpaat.runtime import select_device, set_threads, setup_logging
from dpaat.trained import load_trained

log = setup_logging(snakemake.log[0])
set_threads(snakemake.threads)
device = select_device(snakemake.params.device)
batch_size = snakemake.params.batch_size

trained = load_trained(snakemake.input.weights, device)
test = load_cache(snakemake.input.test)
spec = AttackSpec.from_config(snakemake.params.attack)
log.info("%s on %s: %d images on %s", spec, snakemake.input.weights, len(test.labels), device)

x_adv = run_attack(trained.model, as_float_images(test.images), test.labels, spec, batch_size=batch_size, device=device)
logits = predict_logits(trained.model, x_adv, batch_size=batch_size, device=device)
save_torch(
    {"x_adv": x_adv, "logits": logits, "labels": test.labels, "image_ids": list(test.image_ids)},
    snakemake.output.adversarial,
)
log.info("accuracy under %s: %.4f", snakemake.wildcards.attack, (logits.argmax(1) == test.labels).float().mean())
