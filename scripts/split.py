"""Stage script: split the configured classes into train/val/test, grouped by lesion; tabulate the counts."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat import io as atomic
from dpaat.data.extract import METADATA_KEY, read_index
from dpaat.data.split import (
    count_markdown,
    count_table,
    make_splits,
    predefined_description,
    requested_counts,
    split_metadata,
    write_splits,
)
from dpaat.data.stage import run_stage


def main() -> None:
    p = snakemake.params
    index = read_index(snakemake.input.index)
    splits = make_splits(
        index,
        p.classes,
        p.train_per_class,
        p.test_per_class,
        p.val_fraction,
        group_by_lesion=p.group_by_lesion,
        exact_counts=p.exact_counts,
        seed=p.seed,
        predefined=p.predefined,
    )
    table = count_table(splits, p.classes, requested_counts(p.train_per_class, p.test_per_class, p.val_fraction))
    metadata = split_metadata(
        table,
        group_by_lesion=p.group_by_lesion,
        exact_counts=p.exact_counts,
        index_info=index.attrs[METADATA_KEY],
        predefined=predefined_description(index, p.classes) if p.predefined else None,
    )
    write_splits(splits, snakemake.output.splits, metadata)
    atomic.write_text(table.to_csv(index=False), snakemake.output.counts_csv)
    atomic.write_text(count_markdown(table), snakemake.output.counts_md)


run_stage(snakemake.log[0], main)
