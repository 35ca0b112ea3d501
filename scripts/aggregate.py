"""Stage script: every model's metrics rows in one schema-checked Parquet table."""

import pandas as pd

from dpaat.metrics import write_metrics
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
metrics = pd.concat([pd.read_parquet(path) for path in snakemake.input.metrics], ignore_index=True)
write_metrics(metrics, snakemake.output.metrics)
log.info("%d metrics rows from %d models", len(metrics), len(snakemake.input.metrics))
