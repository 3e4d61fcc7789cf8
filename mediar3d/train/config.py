"""The settings of a training run (`TrainConfig`, stored in the checkpoint metadata) and the views
slices are cut along."""

from __future__ import annotations

from dataclasses import dataclass

from mediar3d.pipeline import DEFAULT_PERCENTILES, VIEWS

__all__ = ["AUGMENTS", "FLOW_LOSS_WEIGHT", "SELECT_BY", "TrainConfig", "VIEWS"]

#: weight of the flow MSE relative to the BCE (Cellpose halves the flow loss)
FLOW_LOSS_WEIGHT = 0.5
#: how the output checkpoint's epoch is chosen (`TrainConfig.select_by`)
SELECT_BY = ("last", "seg")
#: intensity augmentation (`TrainConfig.augment`): "standard" is what the shipped model trained with
#: (contrast, gamma 0.6-1.6, blur, noise); "robust" adds acquisition artefacts (camera saturation, gamma
#: 0.4-2.5, a smooth illumination ramp), see `mediar3d.train.augment.INTENSITY_AUGMENTS`. "robust" is opt-in:
#: it made the model sturdier against those artefacts on synthetic volumes but drew real BBBC050 nuclei
#: 1.5x too large (bench/results/stage6_robust_augment.md)
AUGMENTS = ("standard", "robust")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint metadata)."""

    encoder: str = "mit_b0"
    decoder: str = "small"
    crop: int = 128
    batch: int = 8
    epochs: int = 20
    steps_per_epoch: int = 100
    lr: float = 6e-4
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    min_lr_fraction: float = 0.02
    train_diameter_px: float = 17.0
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    max_slices_per_view: int = 32
    scale_range: tuple[float, float] = (0.75, 1.33)
    aniso_blur_prob: float = 0.5
    aniso_factor_max: float = 5.0
    val_slices_per_view: int = 4
    val_size: int = 256
    seed: int = 0
    half_weights: bool = True
    max_minutes: float | None = None
    init_checkpoint: str | None = None
    stop_epoch: int | None = None
    #: 2.5D input: neighbour planes this many iso voxels below and above each slice (0: 1-channel 2D input)
    context_px: int = 0
    #: which epoch the output checkpoint holds: "last", or "seg": the best mean 3D SEG of the validation
    #: volumes through the pipeline (the --init weights count as epoch 0: kept unless an epoch beats them)
    select_by: str = "last"
    #: intensity augmentation preset, one of AUGMENTS
    augment: str = "standard"

    def __post_init__(self):
        if self.crop % 32:
            raise ValueError(f"crop must be a multiple of 32, got {self.crop}")
        if self.batch < 1 or self.epochs < 1 or self.steps_per_epoch < 1 or self.val_slices_per_view < 1:
            raise ValueError("batch, epochs, steps_per_epoch and val_slices_per_view must be >= 1")
        if self.context_px < 0:
            raise ValueError(f"context_px must be >= 0, got {self.context_px}")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {SELECT_BY}, got {self.select_by!r}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        self.percentiles = tuple(float(p) for p in self.percentiles)
        self.scale_range = tuple(float(s) for s in self.scale_range)
