"""Stage script: a verdict on each claim of the paper, and DPAAT's paired comparisons with AT, SAT and AMAT."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat.claims import for_dataset, load_claims
from dpaat.comparisons import comparisons_markdown, method_comparisons
from dpaat.io import write_text
from dpaat.prediction_store import Predictions
from dpaat.runtime import setup_logging
from dpaat.tables import csv_text
from dpaat.verdicts import evaluate_claims, write_claims

log = setup_logging(snakemake.log[0])
predictions = Predictions.read(snakemake.input.predictions)
ablation = Predictions.read(snakemake.input.ablation_predictions) if snakemake.input.ablation_predictions else None
resamples, seed = snakemake.params.resamples, snakemake.params.seed
claims, _ = evaluate_claims(
    predictions,
    for_dataset(load_claims(), snakemake.params.paper_dataset),
    n_resamples=resamples,
    n_permutations=snakemake.params.permutations,
    seed=seed,
    ablation=ablation,
)
write_claims(claims, snakemake.output.claims_csv, snakemake.output.claims_md)
for _, row in claims.iterrows():
    log.info("%s: %s (%s)", row["id"], row["verdict"], row["reason"])
comparisons = method_comparisons(predictions, snakemake.params.attacks)
write_text(csv_text(comparisons), snakemake.output.comparisons_csv)
write_text(comparisons_markdown(comparisons), snakemake.output.comparisons_md)
