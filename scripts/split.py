"""Stage script: split the configured classes into train/val/test, grouped by lesion."""

import pandas as pd

from dpaat.data.split import make_splits, write_splits
from dpaat.data.stage import run_stage


def main() -> None:
    p = snakemake.params
    splits = make_splits(
        pd.read_parquet(snakemake.input.index),
        p.classes,
        p.train_per_class,
        p.test_per_class,
        p.val_fraction,
        group_by_lesion=p.group_by_lesion,
        seed=p.seed,
    )
    write_splits(splits, snakemake.output.splits)


run_stage(snakemake.log[0], main)
