"""Stage script: every model's metrics rows in one schema-checked Parquet table."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

import pandas as pd

from dpaat.metrics import write_metrics
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
metrics = pd.concat([pd.read_parquet(path) for path in snakemake.input.metrics], ignore_index=True)
write_metrics(metrics, snakemake.output.metrics)
log.info("%d metrics rows from %d models", len(metrics), len(snakemake.input.metrics))
