"""Stage script: extract the acquired images and masks and index them with their metadata."""

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
