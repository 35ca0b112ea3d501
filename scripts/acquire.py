"""Stage script: fetch, find or generate the raw HAM10000-format files of data.source."""

from pathlib import Path

from dpaat.data.acquire import acquire
from dpaat.data.stage import run_stage

manifest = Path(snakemake.output.manifest)
run_stage(
    snakemake.log[0],
    lambda: acquire(snakemake.params.settings, manifest.parent, manifest, workers=snakemake.threads),
)
