"""Stage script: Grad-CAM localisation scores of every architecture in one table, and its summary table."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

import pandas as pd

from dpaat.io import write_parquet, write_text
from dpaat.report import add_intervals, gradcam_intervals, gradcam_table, write_table
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
scores = pd.concat([pd.read_parquet(path) for path in snakemake.input.scores], ignore_index=True)
write_parquet(scores, snakemake.output.scores)
if scores.empty:
    # Data without lesion masks (e.g. HAM10000 without data.download_masks): say so in place of numbers.
    note = "No lesion masks in this data set, so Grad-CAM localisation was not scored (HAM10000: set data.download_masks).\n"
    for fmt in ("csv", "md", "tex"):
        write_text(("# " if fmt == "csv" else "% " if fmt == "tex" else "") + note, snakemake.output[f"table_{fmt}"])
else:
    intervals = gradcam_intervals(scores, n_resamples=snakemake.params.resamples, seed=snakemake.params.seed)
    table = add_intervals(gradcam_table(scores), intervals)
    for fmt in ("csv", "md", "tex"):
        write_table(table, fmt, snakemake.output[f"table_{fmt}"])
log.info("%d Grad-CAM scores", len(scores))
