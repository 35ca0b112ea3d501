"""Stage script: the corruption table, accuracy against severity and the corrupted test image panel."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat.claims import Predictions
from dpaat.corruption_report import corruption_markdown, corruption_table, panel_figure, severity_figure
from dpaat.data import load_cache
from dpaat.figures import save_figure
from dpaat.io import write_text
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
params = snakemake.params
predictions = Predictions.read(snakemake.input.predictions)
table = corruption_table(predictions, params.methods, n_resamples=params.resamples, seed=params.seed)
write_text(table.to_csv(index=False, float_format="%.6g"), snakemake.output.table_csv)
write_text(corruption_markdown(table, len(predictions.corruptions())), snakemake.output.table_md)
save_figure(severity_figure(predictions, params.methods), snakemake.output.severity)
test = load_cache(snakemake.input.test)
image = test.images[0].permute(1, 2, 0).numpy()
panel = panel_figure(image, test.image_ids[0], params.corruptions, params.panel_severity, params.corruption_seed)
save_figure(panel, snakemake.output.panel)
log.info("corruption table:\n%s", corruption_markdown(table, len(predictions.corruptions())))
