"""Stage script: Tables I and II, Fig. 3 and the training curves from the metrics."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from pathlib import Path

import pandas as pd

from dpaat.figures import ablation_figure, training_curves_figure
from dpaat.prediction_store import Predictions
from dpaat.metrics import read_metrics
from dpaat.report import OUT_KEYS, prediction_intervals, write_tables
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
attack = snakemake.params.attack
metrics = read_metrics(snakemake.input.metrics)

write_tables(
    metrics,
    {key: snakemake.output[key] for key in OUT_KEYS},
    paper_numbers=snakemake.params.paper_numbers,
    confusion_attack=attack,
    attacks=snakemake.params.attacks,
    interval_of=prediction_intervals(
        Predictions.read(snakemake.input.predictions), n_resamples=snakemake.params.resamples, seed=snakemake.params.seed
    ),
)
# Fig. 3 from the ablation's own models when it has its own schedule, else from the main ones.
ablation_metrics = read_metrics(snakemake.input.ablation_metrics)
ablation_figure(ablation_metrics, snakemake.params.ablation_archs, attack, snakemake.output.ablation)


def history_of(path: str) -> pd.DataFrame:
    """A run's history with its identity taken from results/models/{seed}/{method}/{arch}/."""
    seed, method, arch = Path(path).parts[-4:-1]
    return pd.read_parquet(path).assign(seed=int(seed), method=method, arch=arch)


training_curves_figure(pd.concat(map(history_of, snakemake.input.histories), ignore_index=True), snakemake.output.curves)
log.info("tables and figures written for %d metrics rows", len(metrics))
