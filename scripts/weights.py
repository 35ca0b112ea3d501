"""Stage script: put each architecture's ImageNet checkpoint in the torch cache, verified, and record where."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat.data.stage import run_stage
from dpaat.imagenet_weights import fetch_weights
from dpaat.io import write_json


def main() -> None:
    params = snakemake.params
    records = fetch_weights(params.archs, base_url=params.base_url, files=params.files)
    write_json({"base_url": params.base_url, "checkpoints": records}, snakemake.output.record)


run_stage(snakemake.log[0], main)
