"""Stage script: resize one split's images (and masks) into a uint8 tensor cache."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

import pandas as pd

from dpaat.data.cache import build_cache, write_cache
from dpaat.data.stage import run_stage


def main() -> None:
    cache = build_cache(
        pd.read_parquet(snakemake.input.splits),
        pd.read_parquet(snakemake.input.index),
        snakemake.wildcards.split,
        int(snakemake.wildcards.size),
        snakemake.params.classes,
        centre_crop=snakemake.params.centre_crop,
        workers=snakemake.threads,
    )
    write_cache(cache, snakemake.output.cache)


run_stage(snakemake.log[0], main)
