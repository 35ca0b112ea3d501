"""DPAAT: per-sample-eps attacks, adversarial training methods and the pipeline's library.

This package knows nothing of Snakemake: the stage scripts in `scripts/` call it.
"""
