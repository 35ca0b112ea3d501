"""Stage script: expected calibration error on clean, attacked and corrupted predictions, and the reliability diagrams."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat.claims import Predictions
from dpaat.corruption_report import calibration_markdown, calibration_table, reliability_figure
from dpaat.figures import save_figure
from dpaat.io import write_text
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
params = snakemake.params
predictions = Predictions.read(snakemake.input.predictions)
table = calibration_table(
    predictions, params.methods, params.attacks, n_bins=params.bins, n_resamples=params.resamples, seed=params.seed
)
write_text(table.to_csv(index=False, float_format="%.6g"), snakemake.output.table_csv)
write_text(calibration_markdown(table, params.bins), snakemake.output.table_md)
save_figure(reliability_figure(predictions, params.methods, params.attack, params.bins), snakemake.output.reliability)
