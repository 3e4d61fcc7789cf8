"""Three-view inference benchmark (CPU), in one run:

1. voxels/s of mediar3d's three-view inference (mit_b0 MEDIAR network, random weights) next to
   Cellpose's `do_3D` network pass (its default CP-SAM architecture with random weights: timing only,
   nothing downloaded) on the same volume;
2. peak resident memory of mediar3d inference for a volume and one 4x longer in z, each measured in
   a fresh subprocess (the larger must stay <= 1.5x the smaller's peak).

Run: .venv/bin/python bench/bench_infer.py [--speed-shape Z Y X] [--memory-shape Z Y X] [--threads N]
Writes bench/results/bench_infer.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import header, peak_rss_mib, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "bench_infer.md"
MEMORY_LIMIT_RATIO = 1.5


def synthetic_volume(shape, seed: int = 0) -> np.ndarray:
    """Normalized float32 (Z, Y, X) volume of bright blurred blobs on noise (content does not affect timing)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    n = max(4, int(np.prod(shape) / 4000))
    idx = tuple(rng.integers(0, s, n) for s in shape)
    vol[idx] = 1.0
    vol = ndi.gaussian_filter(vol, 3.0)
    vol /= vol.max() + 1e-6
    return (vol + 0.05 * rng.standard_normal(shape)).astype(np.float32)


def write_volume_slabwise(path: Path, shape, seed: int = 0) -> None:
    """Write a synthetic iso.zarr of `shape` 16 planes at a time (never whole in memory)."""
    from mediar3d.io import store

    arr = store.create_array(path, shape, np.float32, attrs={"original_shape": list(shape)})
    for z0 in range(0, shape[0], 16):
        z1 = min(shape[0], z0 + 16)
        arr[z0:z1] = synthetic_volume((z1 - z0, *shape[1:]), seed + z0)


# ---------------------------------------------------------------------------------------------
# speed


def time_mediar3d(shape, threads: int, workdir: Path) -> dict:
    import torch

    from mediar3d.infer import predict_views
    from mediar3d.io import store
    from mediar3d.model import build_model, count_parameters

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("mit_b0").eval()
    store.write_array(workdir / "iso.zarr", synthetic_volume(shape))
    predict_views(workdir / "iso.zarr", model, workdir / "warm.zarr", ["xy"], device="cpu", progress=False)
    start = time.perf_counter()
    predict_views(workdir / "iso.zarr", model, workdir / "views.zarr", device="cpu", progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "voxels_per_s": float(np.prod(shape)) / seconds,
            "slices": int(sum(shape)), "params_M": count_parameters(model) / 1e6}


def cellpose_random_model(threads: int):
    """A cellpose CellposeModel with its default CP-SAM network and random weights (no download)."""
    import torch
    from cellpose import models, vit

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = models.CellposeModel.__new__(models.CellposeModel)
    model.device, model.gpu = torch.device("cpu"), False
    model.backbone, model.pretrained_model = "sam_vitl", "random weights (benchmark)"
    # float32: faster than cellpose's default bfloat16 on this CPU (no bf16 matrix units), i.e. Cellpose's best case
    model.net = vit.CPSAM(dtype=torch.float32).to(model.device).eval()
    return model


def time_cellpose(shape, threads: int) -> dict:
    model = cellpose_random_model(threads)
    vol = synthetic_volume(shape)
    start = time.perf_counter()
    model.eval(vol, z_axis=0, channel_axis=None, do_3D=True, compute_masks=False, batch_size=8)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "voxels_per_s": float(np.prod(shape)) / seconds, "slices": int(sum(shape)),
            # all parameters, the frozen ones (e.g. W2) included: count_parameters counts only trainable ones
            "params_M": sum(p.numel() for p in model.net.parameters()) / 1e6}


# ---------------------------------------------------------------------------------------------
# memory (child processes)


def memory_child(shape, threads: int) -> dict:
    """Run inside a fresh process: write a volume slab-wise, run three-view inference, report peak RSS."""
    import torch

    from mediar3d.infer import predict_views
    from mediar3d.model import build_model

    torch.set_num_threads(threads)
    model = build_model("mit_b0").eval()
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        write_volume_slabwise(Path(tmp) / "iso.zarr", shape)
        start = time.perf_counter()
        predict_views(Path(tmp) / "iso.zarr", model, Path(tmp) / "views.zarr", device="cpu", progress=False)
        seconds = time.perf_counter() - start
    return {"shape": list(shape), "peak_mib": peak_rss_mib(), "seconds": seconds,
            "voxels_per_s": float(np.prod(shape)) / seconds}


def measure_memory(shape, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", *map(str, shape), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# report


def seconds_per_tile(cellpose: dict) -> float:
    """Measured Cellpose seconds per slice: one 256x256 CP-SAM tile per slice on a small volume."""
    return cellpose["seconds"] / cellpose["slices"]


def report(args, ours: dict, cellpose: dict, small: dict, large: dict) -> list[str]:
    import torch

    speed_ratio = ours["voxels_per_s"] / cellpose["voxels_per_s"]
    mem_ratio = large["peak_mib"] / small["peak_mib"]
    verdict = "PASS" if mem_ratio <= MEMORY_LIMIT_RATIO else "FAIL"
    shape = "x".join(map(str, args.speed_shape))
    return [
        *header("bench_infer: three-view inference on CPU",
                f"; torch {torch.__version__}, {args.threads} torch threads; "
                f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. The machine was shared with other jobs."),
        f"## Speed: network pass over every xy, xz and yz slice of a {shape} (z, y, x) volume",
        "",
        "| method | network | params (M) | slices | seconds | voxels/s |",
        "|---|---|---:|---:|---:|---:|",
        f"| mediar3d `infer` (3 views, tile 256, batch 8) | MEDIAR mit_b0 + MA-Net, random weights | {ours['params_M']:.1f} "
        f"| {ours['slices']} | {ours['seconds']:.2f} | {ours['voxels_per_s']:.0f} |",
        f"| Cellpose 4 `eval(do_3D=True, compute_masks=False)` | CP-SAM (ViT-L), random weights, float32 | {cellpose['params_M']:.1f} "
        f"| {cellpose['slices']} | {cellpose['seconds']:.2f} | {cellpose['voxels_per_s']:.0f} |",
        "",
        f"**mediar3d / Cellpose speed ratio: {speed_ratio:.1f}x.** Both run the network on every slice of the three "
        "views; Cellpose pads every slice to its fixed 256x256 tile (CP-SAM only supports bsize 256), so on a volume "
        "this small its cost is one ViT-L tile per slice, while mediar3d pads slices only to a multiple of 32. "
        f"The volume is small because CP-SAM costs ~{seconds_per_tile(cellpose):.1f} s per 256x256 tile on this "
        f"{os.cpu_count()}-core machine.",
        "",
        "## Peak memory: streamed inference, volume vs. a 4x longer one (fresh process each)",
        "",
        "| volume (z, y, x) | voxels | peak RSS (MiB) | seconds | voxels/s |",
        "|---|---:|---:|---:|---:|",
        *[f"| {'x'.join(map(str, r['shape']))} | {int(np.prod(r['shape']))} | {r['peak_mib']:.0f} | {r['seconds']:.1f} "
          f"| {r['voxels_per_s']:.0f} |" for r in (small, large)],
        "",
        f"**Peak ratio larger/smaller: {mem_ratio:.2f} (limit {MEMORY_LIMIT_RATIO}): {verdict}.** "
        "Peak = the process's maximum resident set (torch, model, one slab of slices and its predictions); "
        "the volumes and the three float32 (3, Z, Y, X) views live in zarr on disk.",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed-shape", type=int, nargs=3, default=[8, 32, 32], metavar=("Z", "Y", "X"))
    parser.add_argument("--memory-shape", type=int, nargs=3, default=[64, 256, 256], metavar=("Z", "Y", "X"),
                        help="smaller volume of the memory test; the larger is 4x longer in z")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--memory-child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.memory_child:
        print(json.dumps(memory_child(tuple(args.memory_child), args.threads)))
        return 0
    small_shape = tuple(args.memory_shape)
    large_shape = (4 * small_shape[0], *small_shape[1:])
    print(f"memory: {small_shape} and {large_shape} ...", flush=True)
    small, large = measure_memory(small_shape, args.threads), measure_memory(large_shape, args.threads)
    print(f"  peaks {small['peak_mib']:.0f} MiB and {large['peak_mib']:.0f} MiB", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        print(f"speed: mediar3d on {tuple(args.speed_shape)} ...", flush=True)
        ours = time_mediar3d(tuple(args.speed_shape), args.threads, Path(tmp))
    print(f"  {ours['voxels_per_s']:.0f} voxels/s; Cellpose do_3D (slow: one CP-SAM tile per slice) ...", flush=True)
    cellpose = time_cellpose(tuple(args.speed_shape), args.threads)
    print(f"  {cellpose['voxels_per_s']:.0f} voxels/s, {seconds_per_tile(cellpose):.1f} s per slice", flush=True)
    write_report(RESULTS, report(args, ours, cellpose, small, large))
    return 0 if large["peak_mib"] <= MEMORY_LIMIT_RATIO * small["peak_mib"] else 1


if __name__ == "__main__":
    sys.exit(main())
