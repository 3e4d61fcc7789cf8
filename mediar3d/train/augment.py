"""Augmentation of training crops: scale jitter, flips and 90 degree rotations (flow vectors
transformed with the image), anisotropic blur, intensity contrast, gamma and noise (with the "robust"
preset also camera saturation and illumination ramps), and for 2.5D input the mirror along the slice
normal (context planes swapped); `CropSampler` draws batches of (image (B, C, H, W), flows (B, 2, H, W),
foreground (B, 1, H, W)), C = 1 or 3 (2.5D)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mediar3d.model import FLOW_SCALE
from mediar3d.train.config import VIEWS, TrainConfig
from mediar3d.train.data import SliceSample


def flip_flows(flows: np.ndarray, axis: int) -> np.ndarray:
    """Flip a (2, H, W) (row, col) flow field along image axis 0 (rows) or 1 (cols)."""
    out = np.flip(flows, axis=axis + 1).copy()
    out[axis] *= -1
    return out


def rot90_flows(flows: np.ndarray, k: int) -> np.ndarray:
    """Rotate a (2, H, W) (row, col) flow field as `np.rot90(image, k)` rotates the image.

    One quarter turn maps pixel (r, c) to (W-1-c, r): a vector (dr, dc) becomes (-dc, dr)."""
    out = np.rot90(flows, k, axes=(1, 2))
    dr, dc = out[0], out[1]
    for _ in range(k % 4):
        dr, dc = -dc, dr
    return np.ascontiguousarray(np.stack([dr, dc]))


def anisotropic_blur(image: torch.Tensor, axis: int, factor: float) -> torch.Tensor:
    """Simulate a slice of upsampled anisotropic data: (H, W) or (C, H, W) image downsampled by
    `factor` along image `axis` (0 rows, 1 columns; area average) and linearly upsampled back."""
    h, w = image.shape[-2:]
    small = (max(1, round(h / factor)), w) if axis == 0 else (h, max(1, round(w / factor)))
    x = F.interpolate(image.reshape(1, -1, h, w), size=small, mode="area")
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).reshape(image.shape)


@dataclass(frozen=True)
class IntensityAugment:
    """Ranges of the intensity augmentation of one preset (`TrainConfig.augment`)."""

    gamma: tuple[float, float]       # gamma drawn log-uniformly in this range (half of the crops)
    ramp_prob: float = 0.0           # an illumination ramp: the image times 1 -> `ramp_floor` across the crop
    ramp_floor: tuple[float, float] = (0.15, 0.7)
    saturation_prob: float = 0.0     # camera saturation: clipped at a fraction of the crop's 99.5th percentile
    saturation_level: tuple[float, float] = (0.3, 0.9)


#: the presets of `TrainConfig.augment` ("standard" draws exactly the random numbers stages 1-5 drew; "robust" is
#: opt-in, see `mediar3d.train.config.AUGMENTS`)
INTENSITY_AUGMENTS = {
    "standard": IntensityAugment(gamma=(0.6, 1.6)),
    "robust": IntensityAugment(gamma=(0.4, 2.5), ramp_prob=0.25, saturation_prob=0.2),
}


def illumination_ramp(image: torch.Tensor, floor: float, axis: int, reverse: bool) -> torch.Tensor:
    """(C, H, W) image times a linear ramp from 1 to `floor` along image `axis` (0 rows, 1 columns):
    signal dimmed with depth (xz/yz slices) or across the field (xy); the normalized background (~0)
    stays where it is."""
    n = image.shape[1 + axis]
    ramp = torch.linspace(1.0, floor, n) if not reverse else torch.linspace(floor, 1.0, n)
    return image * (ramp[:, None] if axis == 0 else ramp[None, :])


def saturate(image: torch.Tensor, level: float) -> torch.Tensor:
    """(C, H, W) image clipped at `level` x its 99.5th percentile and stretched so the plateau is 1: a
    saturated camera normalized by the volume's percentiles, which then fall on the plateau."""
    top = float(torch.quantile(image.reshape(-1)[::7].float(), 0.995)) * level
    if top <= 0:
        return image
    return image.clamp(max=top) / top


def intensity_augment(image: torch.Tensor, rng: np.random.Generator,
                      preset: IntensityAugment = INTENSITY_AUGMENTS["standard"]) -> torch.Tensor:
    """Random contrast/brightness, gamma, blur and Gaussian noise of a normalized (C, H, W) image (the
    same contrast, gamma and blur on every channel, independent noise); with `preset`'s probabilities
    also an illumination ramp (first) and camera saturation (last, over the noise)."""
    if preset.ramp_prob and rng.random() < preset.ramp_prob:
        image = illumination_ramp(image, float(rng.uniform(*preset.ramp_floor)), int(rng.integers(2)),
                                  bool(rng.integers(2)))
    image = image * float(rng.uniform(0.7, 1.3)) + float(rng.uniform(-0.1, 0.1))
    if rng.random() < 0.5:
        lo, hi = preset.gamma
        gamma = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        image = torch.sign(image) * image.abs().pow(gamma)
    if rng.random() < 0.3:
        sigma = float(rng.uniform(0.3, 1.2))
        radius = max(1, int(2 * sigma + 0.5))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
        taps = taps / taps.sum()
        x = image[:, None]
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), taps.view(1, 1, -1, 1))
        image = x[:, 0]
    if rng.random() < 0.7:
        image = image + float(rng.uniform(0.0, 0.12)) * torch.randn(image.shape, generator=_torch_gen(rng))
    if preset.saturation_prob and rng.random() < preset.saturation_prob:
        image = saturate(image, float(rng.uniform(*preset.saturation_level)))
    return image


def _torch_gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


def _crop_window(sample: SliceSample, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a size x size window, centred on a random object pixel 80 % of the time."""
    h, w = sample.labels.shape
    if rng.random() < 0.8:
        rows, cols = np.nonzero(sample.labels)
        if rows.size:
            i = int(rng.integers(rows.size))
            cr, cc = int(rows[i]), int(cols[i])
        else:
            cr, cc = int(rng.integers(h)), int(rng.integers(w))
    else:
        cr, cc = int(rng.integers(h)), int(rng.integers(w))
    top = min(max(cr - size // 2, 0), max(h - size, 0))
    left = min(max(cc - size // 2, 0), max(w - size, 0))
    return top, left


def _window(array: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """array[..., top:top+size, left:left+size] as float32, zero-padded where it runs off the slice."""
    part = np.asarray(array[..., top:top + size, left:left + size], dtype=np.float32)
    pad_h, pad_w = size - part.shape[-2], size - part.shape[-1]
    if pad_h or pad_w:
        part = np.pad(part, [(0, 0)] * (part.ndim - 2) + [(0, pad_h), (0, pad_w)])
    return part


def augmented_crop(sample: SliceSample, config: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """One training example: image (C, c, c) (C = 1, or 3 with context planes), target flows x
    FLOW_SCALE (2, c, c), foreground (1, c, c)."""
    c = config.crop
    planes = sample.image if sample.image.ndim == 3 else sample.image[None]
    n = len(planes)
    lo, hi = config.scale_range
    scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # output px per slice px
    size = max(8, int(round(c / scale)))
    top, left = _crop_window(sample, size, rng)
    stack = np.concatenate([_window(planes, top, left, size),
                            _window(sample.flows, top, left, size),
                            (_window(sample.labels, top, left, size) > 0)[None].astype(np.float32)])
    if size != c:
        t = torch.from_numpy(stack)[None]
        stack = F.interpolate(t, size=(c, c), mode="bilinear", align_corners=False, antialias=size > c)[0].numpy()
    image, flows, fg = stack[:n], stack[n:n + 2], (stack[n + 2] > 0.5).astype(np.float32)
    for axis in (0, 1):
        if rng.random() < 0.5:
            image, fg, flows = np.flip(image, axis + 1), np.flip(fg, axis), flip_flows(flows, axis)
    k = int(rng.integers(4))
    if k:
        image, fg, flows = np.rot90(image, k, axes=(1, 2)), np.rot90(fg, k), rot90_flows(flows, k)
    if n > 1 and rng.random() < 0.5:
        image = image[::-1]  # mirrored along the slice normal: the in-plane targets do not change
    flows = flows * (fg[None] > 0)  # interpolation leaks flows past the object edge
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if rng.random() < config.aniso_blur_prob:
        img = anisotropic_blur(img, int(rng.integers(2)), float(rng.uniform(1.5, config.aniso_factor_max)))
    img = intensity_augment(img, rng, INTENSITY_AUGMENTS[config.augment])
    return (img.numpy().astype(np.float32), (flows * FLOW_SCALE).astype(np.float32),
            np.ascontiguousarray(fg[None], dtype=np.float32))


class CropSampler:
    """Random augmented batches from the slices of the three views (views drawn equally often)."""

    def __init__(self, samples: Sequence[SliceSample], config: TrainConfig, seed: int):
        self.config = config
        self.pools = {v: [s for s in samples if s.view == v] for v in VIEWS}
        self.views = [v for v in VIEWS if self.pools[v]]
        if not self.views:
            raise ValueError("no training slices")
        self.rng = np.random.default_rng(seed)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (B, C, c, c), target flows (B, 2, c, c) x FLOW_SCALE, foreground (B, 1, c, c))."""
        items = []
        for _ in range(self.config.batch):
            pool = self.pools[self.views[int(self.rng.integers(len(self.views)))]]
            items.append(augmented_crop(pool[int(self.rng.integers(len(pool)))], self.config, self.rng))
        return tuple(torch.from_numpy(np.stack(parts)) for parts in zip(*items))  # type: ignore[return-value]
