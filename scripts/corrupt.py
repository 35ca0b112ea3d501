"""Stage script: the test images under each corruption and severity, at every model resolution."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

import time

from dpaat.corrupted_sets import condition_file, save_condition
from dpaat.corruptions import corrupt_split
from dpaat.data import load_cache
from dpaat.runtime import setup_logging

log = setup_logging(snakemake.log[0])
test = load_cache(snakemake.input.test)
params = snakemake.params
log.info(
    "%d conditions of the %s set on %d test images at %d px, resized to %s px, %d threads",
    *(len(params.conditions), params.corruption_set, len(test), test.images.shape[-1], params.sizes, snakemake.threads),
)
start = time.perf_counter()
for name, by_size in corrupt_split(
    test.images.numpy(),
    test.image_ids,
    params.conditions,
    seed=params.seed,
    sizes=params.sizes,
    corruption_set=params.corruption_set,
    workers=snakemake.threads,
):
    for size, images in by_size.items():
        save_condition(images, test.image_ids, condition_file(snakemake.output.corrupted, size, name))
log.info("done in %.1f s", time.perf_counter() - start)
