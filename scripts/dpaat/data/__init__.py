"""The data stage: acquire HAM10000-format files, extract and index them, split, cache tensors.

Modules: `ham10000` and `isic2018` (facts about the two distributions), `download`
(resumable verified HTTP), `acquire` (the four sources and the manifest), `layouts` (which
copy a local folder or zip holds), `dermoscopy` and `synthetic` (the generated twin),
`extract` (the one extract-and-index path), `split`, `cache`, `stage` (how the Snakemake
scripts run these).
"""

from .cache import CachedSplit, load_cache
from .errors import DataError

__all__ = ["CachedSplit", "DataError", "load_cache"]
