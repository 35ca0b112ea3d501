"""Stage script: Grad-CAM localisation scores of every architecture in one table."""

import pandas as pd

from dpaat.io import write_parquet
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
scores = pd.concat([pd.read_parquet(path) for path in snakemake.input.scores], ignore_index=True)
write_parquet(scores, snakemake.output.scores)
log.info("%d Grad-CAM scores", len(scores))
