"""Stage script: the paper's five methods and the baselines TRADES and MART in one table, with intervals."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat.prediction_store import Predictions
from dpaat.metrics import read_metrics
from dpaat.report import add_intervals, baselines_table, prediction_intervals, write_table
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
metrics = read_metrics(snakemake.input.metrics)
intervals = prediction_intervals(
    Predictions.read(snakemake.input.predictions), n_resamples=snakemake.params.resamples, seed=snakemake.params.seed
)
table = add_intervals(baselines_table(metrics, snakemake.params.attacks), intervals)
for fmt in ("csv", "md", "tex"):
    write_table(table, fmt, snakemake.output[f"table_{fmt}"])
log.info("baselines table written: %d methods", table.cells["method"].nunique())
