"""validate_ngff: the NGFF 0.5 check (ome-zarr-models) every test applies to the OME-Zarr it writes."""

from __future__ import annotations

import os


def validate_ngff(path: str | os.PathLike) -> None:
    """Validate an OME-Zarr image and each of its label images with ome-zarr-models (NGFF 0.5);
    raises pydantic's ValidationError naming what is wrong."""
    import zarr
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel
    from ome_zarr_models.v05.labels import Labels

    group = zarr.open_group(str(path), mode="r")
    Image.from_zarr(group)
    if "labels" in group:
        labels = Labels.from_zarr(group["labels"])
        for name in labels.attributes.ome.labels:
            ImageLabel.from_zarr(group["labels"][name])
