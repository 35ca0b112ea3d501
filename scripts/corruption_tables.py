"""Stage script: the corruption and calibration tables, accuracy against severity, reliability diagrams, the image panel."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat.corruption_report import (
    calibration_markdown,
    calibration_table,
    corruption_markdown,
    corruption_table,
    panel_figure,
    reliability_figure,
    severity_figure,
)
from dpaat.data import load_cache
from dpaat.figures import save_figure
from dpaat.io import write_text
from dpaat.prediction_store import Predictions
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
params, output = snakemake.params, snakemake.output
resampling = {"n_resamples": params.resamples, "seed": params.seed}
predictions = Predictions.read(snakemake.input.predictions)

table = corruption_table(predictions, params.methods, **resampling)
write_text(table.to_csv(index=False, float_format="%.6g"), output.table_csv)
write_text(corruption_markdown(table, len(predictions.corruptions())), output.table_md)
log.info("corruption table:\n%s", corruption_markdown(table, len(predictions.corruptions())))
save_figure(severity_figure(predictions, params.methods), output.severity)

calibration = calibration_table(predictions, params.methods, params.attacks, n_bins=params.bins, **resampling)
write_text(calibration.to_csv(index=False, float_format="%.6g"), output.calibration_csv)
write_text(calibration_markdown(calibration, params.bins), output.calibration_md)
reliability = reliability_figure(predictions, params.methods, params.reliability_attack, params.bins)
save_figure(reliability, output.reliability)

test = load_cache(snakemake.input.test)
image = test.images[0].permute(1, 2, 0).numpy()
panel = panel_figure(image, test.image_ids[0], params.corruptions, params.panel_severity, params.corruption_seed)
save_figure(panel, output.panel)
