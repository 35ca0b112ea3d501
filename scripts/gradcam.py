"""Stage script: Grad-CAM of several methods on one architecture (Fig. 4) and its lesion-mask scores."""

from dpaat.cpu_kernels import pin_cpu_kernels

# Before anything imports torch: the math libraries read their instruction set once.
pin_cpu_kernels(snakemake.config["reproducible_cpu_kernels"])

import pandas as pd

from dpaat.data import load_cache
from dpaat.fast_paths import GRADCAM_PATHS
from dpaat.gradcam import cam_mask_scores, compute_cams, gradcam_panel, select_correct
from dpaat.io import write_parquet
from dpaat.paper_results import arch_label
from dpaat.predict import as_float_images
from dpaat.runtime import evaluation_device, setup_logging
from dpaat.settings import ExecutionSettings
from dpaat.trained import load_trained

log = setup_logging(snakemake.log[0])
device = evaluation_device(ExecutionSettings.from_config(snakemake.config, threads=snakemake.threads), GRADCAM_PATHS)
methods = snakemake.params.methods
arch = snakemake.wildcards.arch

models = {method: load_trained(path, device) for method, path in zip(methods, snakemake.input.weights)}
test = load_cache(snakemake.input.test)
images = as_float_images(test.images)
picked = select_correct(
    [trained.model for trained in models.values()],
    images,
    test.labels,
    per_class=snakemake.params.per_class,
    seed=int(snakemake.params.seed),
)
log.info("%d test images predicted correctly by every one of %s", len(picked), methods)
image_size = images.shape[-1]
cams = {
    method: compute_cams(trained.model, trained.model.gradcam_target_layer(image_size), images[picked], test.labels[picked])
    for method, trained in models.items()
}
masks = None if test.masks is None else test.masks[picked]
gradcam_panel(images[picked], cams, test.labels[picked], test.classes, snakemake.output.figure, masks=masks, title=f"Grad-CAM, {arch_label(arch)}")

scores = []
if masks is not None:
    for method, method_cams in cams.items():
        per_image = cam_mask_scores(method_cams, masks)
        scores.append(per_image.assign(method=method, arch=arch, seed=int(snakemake.params.seed), image_id=[test.image_ids[i] for i in picked]))
columns = ["method", "arch", "seed", "image_id", "energy_in_mask", "pointing_hit", "mask_fraction"]
table = pd.concat(scores, ignore_index=True)[columns] if scores else pd.DataFrame(columns=columns)
write_parquet(table, snakemake.output.scores)
