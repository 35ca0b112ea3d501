"""Stage script: fetch, find or generate the raw HAM10000-format files of data.source."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from pathlib import Path

from dpaat.data.acquire import acquire
from dpaat.data.stage import run_stage

manifest = Path(snakemake.output.manifest)
run_stage(
    snakemake.log[0],
    lambda: acquire(snakemake.params.settings, manifest.parent, manifest, workers=snakemake.threads),
)
