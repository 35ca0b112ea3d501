"""Stage script: clean and adversarial predictions of one model into its metrics rows."""

from pathlib import Path

import torch

from dpaat.data import load_cache
from dpaat.metrics import metrics_frame, model_metrics, write_metrics
from dpaat.predict import predict_logits
from dpaat.runtime import select_device, setup_logging
from dpaat.trained import load_trained

log = setup_logging(snakemake.log[0])
device = select_device(snakemake.params.device)
w = snakemake.wildcards

trained = load_trained(snakemake.input.weights, device)
test = load_cache(snakemake.input.test)
identity = {"method": w.method, "arch": w.arch, "seed": int(w.seed)}

logits_by_attack = {"clean": predict_logits(trained.model, test.images, batch_size=snakemake.params.batch_size, device=device)}
for path in snakemake.input.adversarial:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob["image_ids"] != list(test.image_ids):
        raise ValueError(f"{path} was made from another test set than {snakemake.input.test}; delete it and rerun")
    logits_by_attack[Path(path).stem] = blob["logits"]

rows = [
    model_metrics(test.labels, logits, trained.classes, attack=attack, **identity)
    for attack, logits in logits_by_attack.items()
]
for row in rows:
    log.info("%s %s %s: accuracy %.4f", w.method, w.arch, row["attack"], row["accuracy"])
write_metrics(metrics_frame(rows), snakemake.output.metrics)
