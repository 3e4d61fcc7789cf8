"""mediar3d: 3D+t cell segmentation with a MEDIAR network on xy/xz/yz reslices fused into one 3D
Cellpose flow field, dask-parallel mask reconstruction, and Cell Tracking Challenge evaluation."""

__version__ = "0.1.0"
