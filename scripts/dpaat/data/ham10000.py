"""Facts about the HAM10000 distribution (Harvard Dataverse, doi:10.7910/DVN/DBW86T)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Role = Literal["images", "metadata", "masks", "lesions"]


@dataclass(frozen=True)
class RemoteFile:
    """One published data file: its name on disk, Dataverse id (None: served by name), known size and md5 (None: unknown)."""

    name: str
    datafile_id: int | None
    role: Role
    size: int | None = None
    md5: str | None = None
    # Dataverse serves tabular files as a re-exported .tab unless asked for the original.
    query: str = ""

    def url(self, base_url: str) -> str:
        """The download URL under a prefix: Dataverse's .../api/access/datafile/ + id, or a bucket + name."""
        return f"{base_url}{self.name if self.datafile_id is None else self.datafile_id}{self.query}"


METADATA_NAME = "HAM10000_metadata.csv"
MASKS_NAME = "HAM10000_segmentations_lesion_tschandl.zip"
MASKS_FOLDER = "HAM10000_segmentations_lesion_tschandl"

HAM10000_FILES: tuple[RemoteFile, ...] = (
    RemoteFile("HAM10000_images_part_1.zip", 3172585, "images", 1366522108, "4639bfa73ab251610530a97c898e6e46"),
    RemoteFile("HAM10000_images_part_2.zip", 3172584, "images", 1403566547, "da43d6cc50f6613013be07e8986b384b"),
    RemoteFile(METADATA_NAME, 4338392, "metadata", 690218, "8f85fb1aa29d80a2797247e434deb79d", "?format=original"),
)

METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
DX_CODES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
DX_TYPES = ("histo", "follow_up", "consensus", "confocal")
FIRST_IMAGE_NUMBER = 24306
IMAGE_SIZE = (600, 450)  # width, height

# HAM10000's ids have 7 digits; other dermoscopy collections in this format may use more or fewer.
IMAGE_NAME = re.compile(r"^(ISIC_\d+)\.jpe?g$", re.IGNORECASE)
MASK_NAME = re.compile(r"^(ISIC_\d+)_segmentation\.png$", re.IGNORECASE)


def image_archive_name(part: int) -> str:
    """Name of the `part`-th image zip (1-based), as HAM10000 names its two parts."""
    return f"HAM10000_images_part_{part}.zip"


def image_id(number: int) -> str:
    """HAM10000 image id of an image number, e.g. 24306 -> ISIC_0024306."""
    return f"ISIC_{number:07d}"


def mask_member(image: str) -> str:
    """Member path of an image's lesion mask inside the segmentation zip."""
    return f"{MASKS_FOLDER}/{image}_segmentation.png"


def masks_file(datafile_id: int) -> RemoteFile:
    """The segmentation zip; Dataverse lists no md5 for it, so the manifest records the computed one."""
    return RemoteFile(MASKS_NAME, datafile_id, "masks")
