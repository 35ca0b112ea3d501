"""Stage script: one results table's Markdown as the HTML page the report shows inline."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Like every stage script, before anything could import torch.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

from pathlib import Path

from dpaat.html_tables import markdown_page
from dpaat.io import write_text
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
write_text(markdown_page(Path(snakemake.input.markdown).read_text(), snakemake.params.title), snakemake.output.page)
log.info("%s written", snakemake.output.page)
