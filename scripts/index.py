"""Stage script: extract the acquired images and masks and index them with their metadata."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat.data.extract import build_index, write_index
from dpaat.data.stage import run_stage


def main() -> None:
    index = build_index(
        snakemake.input.manifest,
        snakemake.output.images,
        snakemake.output.masks,
        max_unreadable=snakemake.params.max_unreadable,
    )
    write_index(index, snakemake.output.index)


run_stage(snakemake.log[0], main)
