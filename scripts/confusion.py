"""Stage script: Fig. 2, one CNN's confusion matrices (clean and under the confusion attack) from the metrics."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from dpaat.figures import confusion_figure
from dpaat.metrics import read_metrics
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
arch = snakemake.wildcards.arch
confusion_figure(read_metrics(snakemake.input.metrics), arch, snakemake.params.methods, snakemake.params.attack, snakemake.output.figure)
log.info("Fig. 2 of %s written", arch)
