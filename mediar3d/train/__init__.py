"""Training of the 2D MEDIAR network on xy, xz and yz slices of annotated 3D volumes.

Data: every full-3D GT frame (`man_segTTT.tif`) of the given CTC datasets. Each volume is
normalized (percentiles), rescaled so that objects are `train_diameter_px` voxels wide on an
isotropic grid (`mediar3d.resample`, as inference does), and cut into 2D slices along the three
views: xy = vol[z] (rows y, cols x), xz = vol[:, y] (rows z, cols x), yz = vol[:, :, x] (rows z,
cols y). The flow targets of each kept slice are computed once (`mediar3d.flows.labels_to_flows_2d`)
and cached in memory (and on disk with `cache_dir`).

Samples: a random slice of a random view, a random crop (mostly centred on an object) with scale
jitter, flips and 90 degree rotations (flow vectors transformed with the image), the blur of
upsampled anisotropic data (downsample then linearly upsample along one axis), intensity contrast,
gamma and noise. Targets: foreground and unit flows x FLOW_SCALE.

Loss: BCE(logit, foreground) + 0.5 * MSE(flows, 5 x unit flows) (Cellpose's scaling). AdamW,
linear warm-up then cosine decay, mixed precision on CUDA, validation (loss and per-slice AP@0.5
after 2D mask reconstruction) every epoch, resumable training state, CSV/JSON log and loss curve.
With `select_by="seg"` the validation volumes are also segmented by the pipeline itself every epoch
and the checkpoint keeps the epoch (or the --init weights) with the best mean 3D SEG.

The modules, by job: `config` (TrainConfig), `data` (volumes -> cached slices), `augment` (crops and
their augmentation), `loop` (loss, validation, logs, the loop, checkpoint evaluation).
"""

from mediar3d.train.augment import (CropSampler, anisotropic_blur, augmented_crop, flip_flows,
                                    intensity_augment, rot90_flows)
from mediar3d.train.config import FLOW_LOSS_WEIGHT, SELECT_BY, VIEWS, TrainConfig
from mediar3d.train.data import (SliceSample, VolumeRecord, find_volumes, prepare_slices,
                                 prepare_volume, slice_view, volume_slices)
from mediar3d.train.loop import (_init_weights, evaluate_checkpoint, lr_factor, read_validation_volumes,
                                 segmentation_loss, train, validate, validation_slices, volume_seg)

__all__ = ["CropSampler", "FLOW_LOSS_WEIGHT", "SELECT_BY", "SliceSample", "TrainConfig", "VIEWS", "VolumeRecord", "_init_weights",
           "anisotropic_blur", "augmented_crop", "evaluate_checkpoint", "find_volumes", "flip_flows",
           "intensity_augment", "lr_factor", "prepare_slices", "prepare_volume", "read_validation_volumes", "rot90_flows",
           "segmentation_loss", "slice_view", "train", "validate", "validation_slices", "volume_seg", "volume_slices"]
