"""Stage script: sanity checks against gradient masking for every model, their table and the robustness curves."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat.figures import robustness_curves_figure
from dpaat.io import write_parquet, write_text
from dpaat.metrics import read_metrics
from dpaat.paper_results import ARCH_LABELS, METHOD_LABELS
from dpaat.runtime import setup_logging
from dpaat.sanity import SanityPlan, chance_level, sanity_markdown, sanity_table

log = setup_logging(snakemake.log[0])
metrics = read_metrics(snakemake.input.metrics)
plan = SanityPlan.from_config(snakemake.params.sanity, snakemake.params.adversary, snakemake.params.attacks)
table = sanity_table(metrics, plan, snakemake.params.attacks)
write_parquet(table, snakemake.output.sanity)
write_text(table.to_csv(index=False, float_format="%.6g"), snakemake.output.table_csv)
write_text(sanity_markdown(table, {**METHOD_LABELS, **ARCH_LABELS}), snakemake.output.table_md)
clean = metrics[metrics["attack"] == "clean"]
robustness_curves_figure(
    metrics,
    plan.curve,
    snakemake.output.curves,
    training_eps=plan.training_eps,
    chance=chance_level(clean["confusion"].iloc[0]),
)
flags = table[table["passed"] == False]  # noqa: E712 (nullable boolean: NA is not a flag)
log.info("%d sanity checks on %d models, %d flags", len(table), clean.shape[0], len(flags))
for _, row in flags.iterrows():
    log.warning("FLAG %s %s seed %s: %s (%s)", row["method"], row["arch"], row["seed"], row["check"], row["detail"])
