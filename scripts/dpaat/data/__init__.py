"""The data stage: acquire HAM10000 (or an ImageFolder tree, a MedMNIST set), index, split, cache tensors.

Modules: `ham10000` and `isic2018` (facts about the two distributions), `download`
(resumable verified HTTP), `acquire` (the sources and the manifest), `layouts` (which
copy a local folder or zip holds), `imagefolder` and `medmnist` (datasets beyond
HAM10000), `classes` (the configured classes, resolved when the workflow is planned),
`dermoscopy` and `synthetic` (the generated twin), `extract` (the one extract-and-index
path), `split`, `cache`, `stage` (how the Snakemake scripts run these).
"""

from .errors import DataError

__all__ = ["CachedSplit", "DataError", "load_cache"]


def __getattr__(name: str):
    # The cache needs torch; planning the workflow imports this package for `classes` and must not pay for it.
    if name in ("CachedSplit", "load_cache"):
        from . import cache

        return getattr(cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
