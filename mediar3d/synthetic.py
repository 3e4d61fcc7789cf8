"""Synthetic 3D+t nuclei datasets in Cell Tracking Challenge layout (`mediar3d synth`).

Nuclei are deformed, randomly oriented ellipsoids with texture (speckles, nucleoli), packed densely
in an embryo-shaped region. Geometry lives on a fine isotropic grid in xy pixels; each output z
plane samples that grid at depth `(z + 0.5) * anisotropy`, so the labels match the image exactly.
Touching nuclei are split by nearest-centre competition (normalized ellipsoid distance).
Optics: gaussian PSF wider along z, depth attenuation, background gradient, photobleaching,
Poisson + Gaussian noise. Ground truth follows the annotation convention of real data (see `annotate`):
a nucleus reaches as far as its blurred image does, to `annotation_level` of its contrast, as human
annotators draw it (along z too, where the PSF is wider). `randomize_optics` draws the optics and the
nucleus appearance of a preset from wide ranges, for training data (domain randomization). Time: smooth motion + jitter, divisions (parent in man_track.txt), cells
entering and leaving at the borders.

Arrays are (z, y, x); voxel sizes in um as (sz, sy, sx); positions in fine (xy) pixels.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from mediar3d.errors import ConfigError
from mediar3d.io.atomic import ENGINE_FILES, Kind, atomic_path
from mediar3d.io.ctc import write_frame, write_mask, write_tracks

log = logging.getLogger(__name__)

VERSION = 2  # 2: annotated GT (annotation_level), optics in dataset.json
MIN_CYCLE = 2  # frames a nucleus lives before it may divide


@dataclass(frozen=True)
class Preset:
    """Parameters of one synthetic dataset kind. Sizes in xy pixels unless stated."""

    name: str
    shape: tuple[int, int, int]          # (Z, Y, X) output voxels
    voxel_xy_um: float                   # xy pixel size; z spacing = voxel_xy_um * anisotropy
    anisotropy: float                    # z spacing / xy spacing
    frames: int
    n_start: int                         # nuclei in the first frame
    n_end: int                           # approximate nuclei in the last frame
    diameter: float                      # mean nucleus diameter (xy pixels)
    diameter_cv: float = 0.15            # relative spread of diameters
    min_dist: float = 0.85               # minimal centre distance, in mean diameters
    region: tuple[float, float, float] = (0.5, 0.45, 0.45)  # embryo semi-axes, fraction of extent
    deform: float = 0.12                 # amplitude of the low-frequency radial deformation
    speed: float = 1.5                   # drift per frame (pixels)
    jitter: float = 0.5                  # random displacement per frame (pixels)
    enter_rate: float = 0.01             # new cells entering per frame, fraction of count
    brightness: float = 60.0             # mean photons at the nucleus centre
    background: float = 8.0              # mean background photons
    psf_sigma_xy: float = 1.0            # PSF sigma in xy pixels
    psf_z_ratio: float = 3.0             # axial / lateral PSF sigma
    bleach: float = 0.02                 # photobleaching rate per frame (exp(-bleach * t))
    read_noise: float = 3.0              # gaussian read noise (counts)
    gain: float = 2.0                    # counts per photon
    offset: float = 100.0                # camera offset (counts)
    brightness_cv: float = 0.25          # spread (log-normal sigma) of nucleus brightness
    texture: float = 1.0                 # chromatin speckle amplitude, in units of 0.18 of the nucleus signal
    texture_scale: float = 1.0           # chromatin speckle wavelength, in units of 2.5-4 xy pixels
    annotation_level: float | None = 0.25  # GT edge at this level of the blurred nucleus (None: geometric)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return (self.voxel_xy_um * self.anisotropy, self.voxel_xy_um, self.voxel_xy_um)


PRESETS: dict[str, Preset] = {
    "zebrafish": Preset("zebrafish", (32, 512, 512), 0.5, 4.0, 10, 600, 1200, 14.0,
                        region=(0.45, 0.36, 0.36), min_dist=0.75),
    "celegans": Preset("celegans", (16, 256, 256), 0.5, 10.0, 10, 50, 200, 22.0,
                       region=(0.45, 0.42, 0.36), min_dist=0.75, speed=1.0, psf_sigma_xy=1.2),
    "sparse": Preset("sparse", (24, 128, 128), 0.5, 2.0, 5, 12, 16, 16.0, min_dist=1.6,
                     region=(0.4, 0.4, 0.4), brightness=90.0, deform=0.08, enter_rate=0.0),
    "tiny": Preset("tiny", (8, 48, 48), 0.5, 2.0, 3, 6, 8, 11.0, min_dist=1.0,
                   region=(0.42, 0.4, 0.4), brightness=80.0, enter_rate=0.0),
    # a thin stack (6 planes at anisotropy 5, 7.5 um deep) of 10 um nuclei, each cut by the top and
    # the bottom of the volume: a monolayer imaged in a few planes
    "thin": Preset("thin", (6, 256, 256), 0.25, 5.0, 4, 40, 48, 40.0, min_dist=0.8,
                   region=(0.5, 0.48, 0.48), speed=1.0, psf_sigma_xy=1.6, enter_rate=0.0),
}

#: ranges `randomize_optics` draws from: (low, high), log-uniform for the positive scale parameters
OPTICS_RANGES: dict[str, tuple[float, float]] = {
    "psf_sigma_xy": (0.6, 1.8), "psf_z_ratio": (1.5, 6.0), "brightness": (20.0, 250.0),
    "background": (1.0, 40.0), "brightness_cv": (0.1, 0.6), "read_noise": (1.0, 8.0),
    "diameter_cv": (0.08, 0.3), "deform": (0.04, 0.22),
}
_LOG_UNIFORM = {"psf_z_ratio", "brightness", "background", "read_noise"}
#: `randomize_optics` ranges by name. "standard": `OPTICS_RANGES` (what stages 4-6 trained on). "wide" adds what
#: bench/bench_realism.py found real nuclei to have beyond them: up to 2.4x brighter nuclei (contrast-to-noise
#: beyond the standard range's highest) and stronger, coarser chromatin texture (speckles up to 4x the presets'
#: amplitude and 3x their wavelength)
RANDOMIZATIONS: dict[str, dict[str, tuple[float, float]]] = {
    "standard": OPTICS_RANGES,
    "wide": {**OPTICS_RANGES, "brightness": (20.0, 600.0), "texture": (1.0, 4.0), "texture_scale": (1.0, 3.0)},
}


@dataclass
class Nucleus:
    """State of one nucleus (track). Positions in fine pixels (z in xy-pixel units)."""

    track_id: int
    centre: np.ndarray                   # (3,) z, y, x
    velocity: np.ndarray                 # (3,)
    axes: np.ndarray                     # (3,) semi-axes in pixels
    rotation: np.ndarray                 # (3, 3) local -> world
    brightness: float
    deform_vec: np.ndarray               # (3,) first-order deformation
    deform_mat: np.ndarray               # (3, 3) symmetric traceless second-order deformation
    waves: np.ndarray                    # (6, 4) speckle wave vectors (3) + phases
    nucleoli: np.ndarray                 # (k, 3) nucleolus centres in normalized local coordinates
    begin: int
    parent: int = 0
    end: int | None = None
    cycle_start: int = 0                 # frame its cell cycle began (earlier than begin at t=0)


@dataclass
class Frame:
    """One synthetic timepoint: image and labels (ids = track ids), both uint16 (Z, Y, X)."""

    t: int
    image: np.ndarray
    labels: np.ndarray


@dataclass
class Sequence:
    """A synthetic sequence: frames, CTC track rows (L, B, E, P) and the voxel size (sz, sy, sx) um."""

    preset: Preset
    seed: int
    frames: list[Frame]
    tracks: list[tuple[int, int, int, int]]
    voxel_size: tuple[float, float, float]


# ---------------------------------------------------------------------------------------------
# configuration


def resolve_preset(preset: str | Preset, frames: int | None = None, anisotropy: float | None = None,
                   shape: tuple[int, int, int] | None = None) -> Preset:
    """The preset with user overrides applied.

    `anisotropy` keeps the physical depth: Z becomes round(Z * old / new). `shape` scales the
    nucleus counts with the volume.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        preset = PRESETS[preset]
    p = preset
    changes: dict = {}
    if frames is not None:
        if frames < 1:
            raise ConfigError(f"frames must be >= 1, got {frames}")
        changes["frames"] = int(frames)
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"shape must be three positive sizes (Z, Y, X), got {shape}")
        scale = np.prod(shape) / np.prod(p.shape)
        changes.update(shape=shape, n_start=max(1, round(p.n_start * scale)), n_end=max(1, round(p.n_end * scale)))
    if anisotropy is not None:
        if not 0.1 <= anisotropy <= 50:
            raise ConfigError(f"anisotropy must lie in 0.1..50, got {anisotropy}")
        base = changes.get("shape", p.shape)
        nz = max(1, round(base[0] * p.anisotropy / anisotropy))
        changes.update(anisotropy=float(anisotropy), shape=(nz, base[1], base[2]))
    return dataclasses.replace(p, **changes)


def randomize_optics(p: Preset, rng: np.random.Generator, ranges: str = "standard") -> Preset:
    """`p` with its optics and nucleus appearance drawn from `RANDOMIZATIONS[ranges]` (PSF width and axial
    elongation, brightness and its spread, background, read noise, size spread, deformation; "wide": also
    the chromatin texture)."""
    changes = {}
    for name, (lo, hi) in RANDOMIZATIONS[randomization(ranges)].items():
        u = rng.uniform(np.log(lo), np.log(hi)) if name in _LOG_UNIFORM else rng.uniform(lo, hi)
        changes[name] = float(np.exp(u) if name in _LOG_UNIFORM else u)
    return dataclasses.replace(p, **changes)


def _extent(p: Preset) -> np.ndarray:
    """Physical extent (z, y, x) of the volume in fine pixels."""
    return np.array([p.shape[0] * p.anisotropy, p.shape[1], p.shape[2]], dtype=float)


# ---------------------------------------------------------------------------------------------
# nuclei


def _new_nucleus(rng: np.random.Generator, p: Preset, track_id: int, centre, begin: int,
                 parent: int = 0, scale: float = 1.0) -> Nucleus:
    diam = p.diameter * scale * np.exp(rng.normal(0, p.diameter_cv))
    axes = diam / 2 * rng.uniform(0.8, 1.2, 3)
    axes *= (diam / 2) / np.cbrt(np.prod(axes))
    mat = rng.normal(0, 1, (3, 3))
    mat = (mat + mat.T) / 2
    mat -= np.eye(3) * np.trace(mat) / 3
    waves = np.concatenate([rng.normal(0, 1, (6, 3)), rng.uniform(0, 2 * np.pi, (6, 1))], axis=1)
    waves[:, :3] *= (2 * np.pi / rng.uniform(2.5, 4.0, (6, 1))) / np.linalg.norm(waves[:, :3], axis=1, keepdims=True)
    k = int(rng.integers(1, 4))
    nucleoli = rng.normal(0, 1, (k, 3))
    nucleoli *= rng.uniform(0.0, 0.5, (k, 1)) / np.linalg.norm(nucleoli, axis=1, keepdims=True)
    return Nucleus(
        track_id=track_id, centre=np.asarray(centre, float), velocity=rng.normal(0, p.speed / np.sqrt(3), 3),
        axes=axes, rotation=Rotation.random(random_state=rng).as_matrix(),
        brightness=float(p.brightness * np.exp(rng.normal(0, p.brightness_cv))),
        deform_vec=rng.normal(0, p.deform / 2, 3), deform_mat=mat * p.deform / 2,
        waves=waves, nucleoli=nucleoli, begin=begin, parent=parent, cycle_start=begin)


def _in_region(points: np.ndarray, p: Preset) -> np.ndarray:
    ext = _extent(p)
    q = (points - ext / 2) / (ext * np.array(p.region))
    return (q ** 2).sum(axis=1) <= 1.0


def place_centres(rng: np.random.Generator, p: Preset, n: int, existing: np.ndarray | None = None,
                  max_tries: int = 40) -> np.ndarray:
    """Up to `n` centres (n, 3) inside the embryo region, at least min_dist diameters from each other
    and from `existing` (rejection sampling in batches)."""
    ext = _extent(p)
    dmin = p.min_dist * p.diameter
    accepted = [] if existing is None else [np.asarray(c) for c in existing]
    out: list[np.ndarray] = []
    for _ in range(max_tries):
        if len(out) >= n:
            break
        cand = rng.uniform(0, 1, (4 * (n - len(out)) + 8, 3)) * ext
        cand = cand[_in_region(cand, p)]
        tree = cKDTree(np.array(accepted)) if accepted else None
        for c in cand:
            if len(out) >= n:
                break
            if tree is not None and tree.query(c)[0] < dmin:
                continue
            if out and np.min(np.linalg.norm(np.array(out[-64:]) - c, axis=1)) < dmin:
                continue
            if len(out) > 64 and np.min(np.linalg.norm(np.array(out) - c, axis=1)) < dmin:
                continue
            out.append(c)
    return np.array(out).reshape(-1, 3)


# ---------------------------------------------------------------------------------------------
# rendering


def _render_nucleus(nuc: Nucleus, zf: np.ndarray, best: np.ndarray, labels: np.ndarray,
                    signal: np.ndarray, texture: float = 1.0, texture_scale: float = 1.0) -> None:
    """Draw one nucleus into labels/signal where it beats the current best normalized distance.

    zf: (Z,) fine-pixel depth of each output plane; texture, texture_scale: the speckles' amplitude and
    wavelength (`Preset.texture`, `Preset.texture_scale`).
    Works on the nucleus' bounding box only.
    """
    reach = float(nuc.axes.max() * (1 + 3 * (np.abs(nuc.deform_vec).sum() + np.abs(nuc.deform_mat).sum())))
    cz, cy, cx = nuc.centre
    zi = np.nonzero(np.abs(zf - cz) <= reach)[0]
    y0, y1 = max(0, int(np.floor(cy - reach))), min(labels.shape[1], int(np.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(np.floor(cx - reach))), min(labels.shape[2], int(np.ceil(cx + reach)) + 1)
    if zi.size == 0 or y0 >= y1 or x0 >= x1:
        return
    z0, z1 = zi[0], zi[-1] + 1
    dz = (zf[z0:z1] - cz)[:, None, None]
    dy = (np.arange(y0, y1) + 0.5 - cy)[None, :, None]
    dx = (np.arange(x0, x1) + 0.5 - cx)[None, None, :]
    r = nuc.rotation  # local = R^T d
    u = [r[0, i] * dz + r[1, i] * dy + r[2, i] * dx for i in range(3)]
    q = [u[i] / nuc.axes[i] for i in range(3)]
    rho = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
    inv = 1.0 / np.maximum(rho, 1e-6)
    n = [qi * inv for qi in q]
    shape_f = 1.0 + sum(nuc.deform_vec[i] * n[i] for i in range(3))
    shape_f = shape_f + sum(nuc.deform_mat[i, j] * n[i] * n[j] for i in range(3) for j in range(3))
    score = rho / np.maximum(shape_f, 0.3)
    box = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
    win = score < np.minimum(best[box], 1.0)
    if not win.any():
        return
    k = 1.0 / texture_scale
    speckle = sum(np.sin(k * (w[0] * u[0] + w[1] * u[1] + w[2] * u[2]) + w[3]) for w in nuc.waves) / np.sqrt(3.0)
    nucleoli = sum(np.exp(-((q[0] - c[0]) ** 2 + (q[1] - c[1]) ** 2 + (q[2] - c[2]) ** 2) / (2 * 0.16 ** 2))
                   for c in nuc.nucleoli)
    chromatin = np.maximum(1 + 0.18 * texture * speckle, 0.0)  # >= 0.38 at texture 1: unchanged there
    value = nuc.brightness * ((0.7 + 0.3 * (1 - score ** 2)) * chromatin + 0.9 * nucleoli)
    best[box][win] = score[win]
    labels[box][win] = nuc.track_id
    signal[box][win] = value[win]


def render_labels_signal(nuclei: list[Nucleus], p: Preset) -> tuple[np.ndarray, np.ndarray]:
    """Labels (uint16) and clean signal (float32, photons before optics), both (Z, Y, X)."""
    zf = (np.arange(p.shape[0]) + 0.5) * p.anisotropy
    best = np.full(p.shape, np.inf, np.float32)
    labels = np.zeros(p.shape, np.uint16)
    signal = np.zeros(p.shape, np.float32)
    for nuc in nuclei:
        _render_nucleus(nuc, zf, best, labels, signal, p.texture, p.texture_scale)
    return labels, signal


def apply_optics(signal: np.ndarray, p: Preset, t: int, rng: np.random.Generator) -> np.ndarray:
    """Microscope image (uint16) from clean signal: PSF blur (wider along z), depth attenuation,
    photobleaching, background gradient, Poisson + Gaussian noise, camera gain and offset."""
    nz, ny, nx = signal.shape
    img = ndimage.gaussian_filter(signal, psf_sigma(p), mode="constant")
    depth = (np.arange(nz) + 0.5) / nz
    img *= (np.exp(-0.6 * depth) * np.exp(-p.bleach * t)).astype(np.float32)[:, None, None]
    gy = np.linspace(-1, 1, ny, dtype=np.float32)[:, None]
    gx = np.linspace(-1, 1, nx, dtype=np.float32)[None, :]
    bg = p.background * (1 + 0.35 * gy + 0.25 * gx + 0.2 * gx * gy)
    img += bg[None] * (1 - 0.3 * depth.astype(np.float32))[:, None, None]
    photons = rng.poisson(np.maximum(img, 0)).astype(np.float32)
    counts = photons * p.gain + p.offset + rng.normal(0, p.read_noise, img.shape).astype(np.float32)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def psf_sigma(p: Preset) -> tuple[float, float, float]:
    """Gaussian PSF sigma (z, y, x) in output voxels."""
    return (p.psf_sigma_xy * p.psf_z_ratio / p.anisotropy, p.psf_sigma_xy, p.psf_sigma_xy)


def annotate(labels: np.ndarray, p: Preset) -> np.ndarray:
    """Ground truth as annotators draw it on the image: each nucleus (uint16 (Z, Y, X) labels of the
    true shapes) grown into the background as far as the PSF-blurred foreground reaches
    `p.annotation_level` (0.5 is the true edge of a flat face; lower levels lie outside it, more so
    along z where the PSF is wider). Grown voxels go to the nearest nucleus in physical distance;
    no voxel of a nucleus changes owner. `annotation_level` None returns `labels` unchanged."""
    if p.annotation_level is None or not labels.any():
        return labels
    from skimage.segmentation import expand_labels

    blurred = ndimage.gaussian_filter((labels > 0).astype(np.float32), psf_sigma(p), mode="constant")
    reach = 3.0 * p.psf_sigma_xy * max(p.psf_z_ratio, 1.0)  # xy pixels: past it the blur is negligible
    grown = expand_labels(labels, distance=reach, spacing=(p.anisotropy, 1.0, 1.0))
    return np.where((labels > 0) | (blurred >= p.annotation_level), grown, 0).astype(labels.dtype)


def synth_frame(nuclei: list[Nucleus], p: Preset, t: int, rng: np.random.Generator) -> Frame:
    """Render one timepoint of the given nuclei: the image and its annotated labels (`annotate`)."""
    labels, signal = render_labels_signal(nuclei, p)
    return Frame(t, apply_optics(signal, p, t, rng), annotate(labels, p))


# ---------------------------------------------------------------------------------------------
# time


def _repel(nuclei: list[Nucleus], dmin: float) -> None:
    """Push apart centres closer than dmin (half the overlap each), keeps packing plausible."""
    if len(nuclei) < 2:
        return
    pts = np.array([n.centre for n in nuclei])
    for i, j in cKDTree(pts).query_pairs(dmin):
        d = pts[j] - pts[i]
        dist = max(np.linalg.norm(d), 1e-3)
        push = 0.25 * (dmin - dist) * d / dist
        nuclei[i].centre -= push
        nuclei[j].centre += push


def _step(rng: np.random.Generator, p: Preset, alive: list[Nucleus], t: int, next_id: list[int],
          p_div: float) -> list[Nucleus]:
    """Advance the population to frame t: move, divide, leave, enter. Returns the new live list."""
    ext = _extent(p)
    margin = 0.3 * p.diameter
    out: list[Nucleus] = []
    for nuc in alive:
        nuc.velocity = 0.8 * nuc.velocity + rng.normal(0, p.speed / np.sqrt(3) * 0.6, 3)
        # weak pull back into the embryo region keeps the tissue compact
        q = (nuc.centre - ext / 2) / (ext * np.array(p.region))
        if (q ** 2).sum() > 1:
            nuc.velocity -= 0.3 * q * p.speed
        nuc.centre = nuc.centre + nuc.velocity + rng.normal(0, p.jitter, 3)
        nuc.rotation = nuc.rotation @ Rotation.from_rotvec(rng.normal(0, 0.05, 3)).as_matrix()
        if np.any(nuc.centre < -margin) or np.any(nuc.centre > ext + margin):
            nuc.end = t - 1           # left the field of view
            continue
        if t - nuc.cycle_start >= MIN_CYCLE and rng.random() < p_div and next_id[0] + 2 < 65535:
            nuc.end = t - 1
            direction = Rotation.random(random_state=rng).as_matrix()[:, 0]
            offset = direction * nuc.axes.mean() * 0.55
            for sign in (1, -1):
                child = _new_nucleus(rng, p, next_id[0], nuc.centre + sign * offset, t, parent=nuc.track_id,
                                     scale=0.85)
                child.brightness = nuc.brightness * rng.uniform(1.0, 1.2)
                child.velocity = nuc.velocity + sign * direction * 0.5
                next_id[0] += 1
                out.append(child)
            continue
        # daughters grow back to full size
        if np.cbrt(np.prod(nuc.axes)) * 2 < p.diameter:
            nuc.axes = nuc.axes * 1.03
        out.append(nuc)
    n_enter = rng.poisson(p.enter_rate * len(alive))
    for _ in range(n_enter):
        axis = int(rng.integers(1, 3))
        c = rng.uniform(0, 1, 3) * ext
        c[axis] = 0.0 if rng.random() < 0.5 else ext[axis]
        out.append(_new_nucleus(rng, p, next_id[0], c, t))
        next_id[0] += 1
    _repel(out, p.min_dist * p.diameter * 0.9)
    return out


def _division_rate(p: Preset) -> float:
    if p.frames < 2 or p.n_end <= p.n_start:
        return 0.0
    growth = (p.n_end / p.n_start) ** (1.0 / (p.frames - 1))
    return float(min(0.9, growth - 1.0 - p.enter_rate + 0.01))


def _finalise_tracks(nuclei: list[Nucleus], frames: list[Frame]) -> list[tuple[int, int, int, int]]:
    """CTC rows (L, B, E, P) from what is actually visible in the label volumes.

    A nucleus never visible is dropped; its daughters then have no parent (P = 0). A parent link is
    kept only when the parent's last frame is the daughter's first frame - 1.
    """
    present: dict[int, list[int]] = {}
    for fr in frames:
        for lab in np.unique(fr.labels):
            if lab:
                present.setdefault(int(lab), []).append(fr.t)
    spans = {lab: (min(ts), max(ts)) for lab, ts in present.items()}
    rows = []
    for nuc in sorted(nuclei, key=lambda n: n.track_id):
        if nuc.track_id not in spans:
            continue
        b, e = spans[nuc.track_id]
        parent = nuc.parent if nuc.parent in spans and spans[nuc.parent][1] == b - 1 else 0
        rows.append((nuc.track_id, b, e, parent))
    return rows


def _cut_gaps(frames: list[Frame]) -> None:
    """CTC tracks are continuous: a label that vanishes (e.g. between sampled z planes) and comes
    back is removed from the later frames (rare), so every track is one unbroken span."""
    seen_until: dict[int, int] = {}
    ended: set[int] = set()
    for fr in frames:
        ids = {int(v) for v in np.unique(fr.labels) if v}
        for lab in list(seen_until):
            if lab not in ids and lab not in ended:
                ended.add(lab)
        bad = sorted(ids & ended)
        if bad:
            fr.labels[np.isin(fr.labels, bad)] = 0
        for lab in ids - ended:
            seen_until[lab] = fr.t


def randomization(randomize: bool | str | None) -> str | None:
    """The `RANDOMIZATIONS` name a `randomize` argument asks for: True = "standard", False / None = none."""
    if randomize is None or randomize is False:
        return None
    name = "standard" if randomize is True else str(randomize)
    if name not in RANDOMIZATIONS:
        raise ValueError(f"randomization must be one of {tuple(RANDOMIZATIONS)}, got {randomize!r}")
    return name


def synth_sequence(preset: str | Preset, seed: int, frames: int | None = None, anisotropy: float | None = None,
                   shape: tuple[int, int, int] | None = None, randomize: bool | str = False) -> Sequence:
    """A whole synthetic sequence (deterministic for `seed`): frames, track rows and voxel size.
    With `randomize` (True = "standard", or a `RANDOMIZATIONS` name) the optics are drawn by
    `randomize_optics` (from the same seed)."""
    p = resolve_preset(preset, frames, anisotropy, shape)
    rng = np.random.default_rng(seed)
    ranges = randomization(randomize)
    if ranges:
        p = randomize_optics(p, rng, ranges)
    centres = place_centres(rng, p, p.n_start)
    next_id = [1]
    alive = []
    for c in centres:
        alive.append(_new_nucleus(rng, p, next_id[0], c, 0))
        alive[-1].cycle_start = -int(rng.integers(1, MIN_CYCLE + 1))  # initial cells: mid-cycle
        next_id[0] += 1
    everyone = list(alive)
    p_div = _division_rate(p)
    out: list[Frame] = []
    for t in range(p.frames):
        if t > 0:
            alive = _step(rng, p, alive, t, next_id, p_div)
            known = {n.track_id for n in everyone}
            everyone.extend(n for n in alive if n.track_id not in known)
        out.append(synth_frame(alive, p, t, rng))
        log.info("synth %s t=%d: %d nuclei", p.name, t, len(alive))
    _cut_gaps(out)
    return Sequence(p, seed, out, _finalise_tracks(everyone, out), p.voxel_size)


# ---------------------------------------------------------------------------------------------
# writing


def gt_slice_indices(nz: int) -> list[int]:
    """The 2-3 z planes that get single-slice GT on odd frames."""
    return sorted({max(0, min(nz - 1, int(round(f * (nz - 1))))) for f in (0.25, 0.5, 0.75)})


def write_preview(path: Path, frame: Frame, anisotropy: float) -> Path:
    """PNG with an xy slice (middle z) and an xz slice (middle y) of the image, GT outlines in colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    img, lab = frame.image.astype(np.float32), frame.labels
    lo = np.percentile(img, 1)
    hi = np.percentile(img[lab > 0], 99.0) if (lab > 0).any() else np.percentile(img, 99.9)
    z, y = img.shape[0] // 2, img.shape[1] // 2
    views = [(img[z], lab[z], 1.0, f"xy  z={z}"), (img[:, y], lab[:, y], anisotropy, f"xz  y={y}")]
    heights = [v[0].shape[0] * v[2] for v in views]
    fig, axs = plt.subplots(2, 1, figsize=(8, 8 * sum(heights) / img.shape[2] + 0.6),
                            gridspec_kw={"height_ratios": heights})
    for ax, (im, lb, aspect, title) in zip(axs, views):
        ax.imshow(im, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        edge = np.ma.masked_where(~find_boundaries(lb, mode="inner"), lb % 7 + 1)
        ax.imshow(edge, cmap="tab10", alpha=0.6, aspect=aspect, vmin=0, vmax=9, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


#: what `make_dataset` writes into a dataset folder
DATASET_ENTRIES = frozenset({"01", "01_GT", "dataset.json", "preview"})


def is_synth_dataset(path: str | os.PathLike) -> bool:
    """True for a folder `make_dataset` wrote: a dataset.json naming preset, seed and version, and
    nothing besides `DATASET_ENTRIES` (and `ENGINE_FILES`)."""
    path = Path(path)
    try:
        info = json.loads((path / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(info, dict) and {"preset", "seed", "version"} <= set(info)
            and {p.name for p in path.iterdir()} <= DATASET_ENTRIES | ENGINE_FILES)


#: a synthetic dataset folder: replaced whole, and only where `make_dataset` wrote it
DATASET_KIND = Kind("a synthetic dataset written by mediar3d synth (dataset.json, 01/, 01_GT/, preview/ only)",
                    folder=True, owns=is_synth_dataset)


def make_dataset(preset: str | Preset, seed: int, out: str | os.PathLike, frames: int | None = None,
                 anisotropy: float | None = None, shape: tuple[int, int, int] | None = None,
                 preview: bool = False, randomize: bool | str = False) -> Path:
    """Write a synthetic CTC dataset to `out` and return `out`.

    Layout: `01/tTTT.tif`; `01_GT/SEG/man_segTTT.tif` (full 3D GT, even frames) and
    `man_seg_TTT_ZZZ.tif` (single-slice GT, odd frames); `01_GT/TRA/man_trackTTT.tif` + `man_track.txt`;
    `dataset.json`; with `preview`, `preview/tTTT.png`. `randomize`: optics drawn by `randomize_optics`
    (True = "standard", or a `RANDOMIZATIONS` name).
    The dataset is written into a temporary folder that then replaces `out` whole (`DATASET_KIND`:
    `out` may be absent, empty or an earlier synthetic dataset; anything else is refused), so old and
    new frames never mix.
    """
    out = Path(out)
    with atomic_path(out, DATASET_KIND) as tmp:
        _write_dataset(synth_sequence(preset, seed, frames, anisotropy, shape, randomize), seed, tmp, out.name,
                       preview, randomize)
    return out


def _write_dataset(seq: Sequence, seed: int, folder: Path, name: str, preview: bool, randomize: bool | str) -> None:
    """The files of `make_dataset` for a synthesized sequence, written into `folder`."""
    p, ranges = seq.preset, randomization(randomize)
    raw, seg, tra = folder / "01", folder / "01_GT" / "SEG", folder / "01_GT" / "TRA"
    for d in (raw, seg, tra):
        d.mkdir(parents=True, exist_ok=True)
    for fr in seq.frames:
        write_frame(raw / f"t{fr.t:03d}.tif", fr.image, seq.voxel_size)
        write_mask(tra / f"man_track{fr.t:03d}.tif", fr.labels, seq.voxel_size)
        if fr.t % 2 == 0:
            write_mask(seg / f"man_seg{fr.t:03d}.tif", fr.labels, seq.voxel_size)
        else:
            for z in gt_slice_indices(fr.labels.shape[0]):
                write_mask(seg / f"man_seg_{fr.t:03d}_{z:03d}.tif", fr.labels[z])
        if preview:
            write_preview(folder / "preview" / f"t{fr.t:03d}.png", fr, p.anisotropy)
    write_tracks(tra / "man_track.txt", seq.tracks)
    info = {
        "name": name, "preset": p.name, "seed": int(seed), "voxel_size_zyx_um": list(seq.voxel_size),
        "shape_zyx": list(p.shape), "n_frames": len(seq.frames),
        "objects_per_frame": [int(len(np.unique(fr.labels)) - (fr.labels == 0).any()) for fr in seq.frames],
        "anisotropy": p.anisotropy, "n_tracks": len(seq.tracks),
        "n_divisions": len({r[3] for r in seq.tracks if r[3]}), "version": VERSION,
        "optics": {k: getattr(p, k) for k in (*dict.fromkeys(k for r in RANDOMIZATIONS.values() for k in r),
                                              "annotation_level")},
        "randomized": ranges is not None, "randomization": ranges,
    }
    (folder / "dataset.json").write_text(json.dumps(info, indent=1) + "\n")


def jittered_balls(shape: tuple[int, ...], spacing: int | tuple[int, ...] = 10, radius: float = 4.0,
                   jitter: float = 1.0, radius_range: tuple[float, float] = (0.85, 1.15),
                   seed: int = 0) -> np.ndarray:
    """Simple dense labels for tests and benchmarks: uint32 (Z, Y, X) balls on a grid.

    Centres sit every `spacing` voxels (per axis or one value), jittered by up to `jitter` voxels
    along axes longer than 1 (an axis of length 1 holds one layer at 0, for 2D planes); radii are
    `radius` times a factor drawn from `radius_range`. Later balls overwrite earlier ones where they
    touch. Ids 1..N in grid order; deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    spacing = (spacing,) * len(shape) if np.isscalar(spacing) else tuple(spacing)
    labels = np.zeros(shape, np.uint32)
    movable = np.array(shape) > 1
    grids = [range(sp // 2, s - sp // 2 + 1, sp) if s > 1 else [0] for s, sp in zip(shape, spacing)]
    count = 0
    for cz in grids[0]:
        for cy in grids[1]:
            for cx in grids[2]:
                centre = np.array([cz, cy, cx]) + rng.uniform(-jitter, jitter, 3) * movable
                r = radius * rng.uniform(*radius_range)
                box = tuple(slice(max(0, int(c - r - 1)), min(s, int(c + r + 2))) for c, s in zip(centre, shape))
                inside = sum((g - c) ** 2 for g, c in zip(np.ogrid[box], centre)) <= r * r
                count += 1
                labels[box][inside] = count
    return labels


def rescaled(image: np.ndarray, labels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, float]:
    """A (Z, Y, X) volume and its labels as if imaged at `scale` times the sampling, for checks of the
    diameter estimate: (image float32 trilinear, labels nearest, zoom). The field of view is kept (grid
    mode: output shape round(n * scale), voxel centres mapped by n_out / n_in), so objects grow by the
    zoom: the cube root of the product of the per-axis n_out / n_in, the factor their true diameter
    takes. The corner-aligned default of `ndimage.zoom` would zoom each axis by (n_out - 1) / (n_in - 1)
    instead (8 planes to 4: 0.43x, not 0.5x); and the zoomed labels of nuclei one or two planes deep do
    not follow the image (8 planes zoomed 1.41x: their diameter 1.26x), so truths come from the zoom."""
    if scale == 1:
        return image, labels, 1.0
    img = ndimage.zoom(image.astype(np.float32), scale, order=1, grid_mode=True, mode="nearest")
    lab = ndimage.zoom(labels, scale, order=0, grid_mode=True, mode="nearest")
    return img, lab, float(np.cbrt(np.prod(np.divide(img.shape, image.shape))))
