"""Bring-your-own-weights benchmark: a Cellpose network inside mediar3d's streamed three-view
pipeline vs Cellpose's own `eval(do_3D=True)`, same network and weights, a volume and one 4x larger.

Network: Cellpose's own CP-SAM class (cellpose.vit.CPSAM) with random weights, reduced to `--blocks`
transformer blocks (default 0: patch embedding, neck and readout only) so that the CPU run takes
minutes; the weights file is loaded by both sides (mediar3d through `--model cellpose:PATH`).

- mediar3d: resample (Cellpose's normalization, percentiles 1 / 99 of the whole volume, streamed from
  a zarr on disk) -> infer (xy, xz, yz views, 256 tiles, overlap 0.1) -> fuse, zarr to zarr;
- Cellpose: the volume in memory -> `CellposeModel.eval(do_3D=True, compute_masks=False)` (its
  normalization, 256 tiles, tile_overlap 0.1).

Each run is a fresh subprocess; its peak resident memory is measured from after the network is
loaded (the kernel's peak counter is reset then: /proc/self/clear_refs), so it is what the run adds
on top of torch and the weights, plus what was resident then. Needs the cellpose extra.

Run: .venv/bin/python bench/bench_byow.py [--shape Z Y X] [--blocks N] [--threads N]
Writes bench/results/bench_byow.md.
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
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "bench_byow.md"
MEMORY_LIMIT_RATIO = 1.5


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak() -> float:
    """Return freed heap to the system (building Cellpose's full network before reducing it leaves
    ~1 GiB free in the allocator, kept or not at random), then reset this process's peak resident set
    (VmHWM) to the current one; returns the current RSS (MiB)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mib("VmRSS")


def make_weights(path: Path, blocks: int) -> None:
    """Cellpose CP-SAM with random weights and `blocks` transformer blocks, saved as Cellpose saves models."""
    import torch
    from cellpose import vit

    torch.manual_seed(0)
    net = vit.CPSAM(dtype=torch.float32)
    net.encoder.blocks = net.encoder.blocks[:blocks]
    torch.save(net.state_dict(), path)


def write_raw(path: Path, shape, seed: int = 0) -> None:
    """A uint16 raw volume of blurred blobs on noise in a zarr, written 16 planes at a time."""
    from mediar3d.io import store

    arr = store.create_array(path, shape, np.uint16)
    for z0 in range(0, shape[0], 16):
        arr[z0:min(shape[0], z0 + 16)] = raw_planes((min(shape[0], z0 + 16) - z0, *shape[1:]), seed + z0)


def raw_planes(shape, seed: int) -> np.ndarray:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    n = max(4, int(np.prod(shape) / 4000))
    vol[tuple(rng.integers(0, s, n) for s in shape)] = 1.0
    vol = ndi.gaussian_filter(vol, 3.0)
    vol = vol / (vol.max() + 1e-6) + 0.05 * rng.random(shape)
    return (1000 * vol).astype(np.uint16)


def child_mediar3d(shape, weights: Path, threads: int) -> dict:
    from mediar3d import pipeline
    from mediar3d.io import store

    with tempfile.TemporaryDirectory(prefix="bench-byow-") as tmp:
        tmp = Path(tmp)
        write_raw(tmp / "raw.zarr", shape)
        spec = f"cellpose:{weights}"
        model, meta, _ = pipeline.load_network(spec, "cpu", threads, "fp32")
        settings = pipeline.Settings(diameter=None, tile=256, overlap=0.1, device="cpu", precision="fp32")
        raw = store.open_array(tmp / "raw.zarr")
        base = reset_peak()
        start = time.perf_counter()
        pipeline.resample(raw, (1.0, 1.0, 1.0), tmp / "iso.zarr", settings, meta=meta)
        pipeline.infer(tmp / "iso.zarr", tmp / "views.zarr", settings, model, meta=meta, progress=False)
        pipeline.fuse(tmp / "views.zarr", tmp / "field.zarr")
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "base_mib": base, "peak_mib": _status_mib("VmHWM")}


def child_cellpose(shape, weights: Path, threads: int) -> dict:
    import torch
    from cellpose import models, vit

    torch.set_num_threads(threads)
    model = models.CellposeModel.__new__(models.CellposeModel)
    model.device, model.gpu = torch.device("cpu"), False
    model.backbone, model.pretrained_model = "sam_vitl", str(weights)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net = vit.CPSAM(dtype=torch.float32)
    net.encoder.blocks = net.encoder.blocks[:len({k.split(".")[2] for k in state if k.startswith("encoder.blocks.")})]
    net.load_model(weights, device=model.device, strict=True)  # Cellpose's own loader
    model.net = net.eval()
    volume = np.concatenate([raw_planes((min(shape[0], z0 + 16) - z0, *shape[1:]), z0)
                             for z0 in range(0, shape[0], 16)])
    base = reset_peak()
    start = time.perf_counter()
    model.eval(volume, z_axis=0, channel_axis=None, do_3D=True, compute_masks=False, batch_size=8, bsize=256,
               tile_overlap=0.1)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "base_mib": base, "peak_mib": _status_mib("VmHWM")}


def measure(method: str, shape, weights: Path, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--shape", *map(str, shape), "--weights", str(weights),
           "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"{method} {shape} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(method=method, shape=list(shape), added_mib=result["peak_mib"] - result["base_mib"])
    return result


def report(args, rows: dict) -> list[str]:
    lines = header("Bring your own weights: a Cellpose network in mediar3d's streamed pipeline vs Cellpose's do_3D")
    lines += [
        f"Network: Cellpose's CP-SAM class, random weights, {args.blocks} transformer block(s) (reduced so the CPU "
        "run takes minutes; the same weights file for both). mediar3d: resample (streamed from zarr) + infer + "
        "fuse, zarr to zarr, 256 tiles, overlap 0.1. Cellpose: `eval(do_3D=True, compute_masks=False)`, the "
        "volume in memory, bsize 256, tile_overlap 0.1. Peak = maximum resident set after the network was "
        "loaded; added = peak minus the resident set then.",
        "",
        "| pipeline | volume (z, y, x) | voxels | seconds | peak RSS (MiB) | added (MiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for method in ("mediar3d", "cellpose"):
        for r in rows[method]:
            lines.append(f"| {method} | {'x'.join(map(str, r['shape']))} | {int(np.prod(r['shape']))} | "
                         f"{r['seconds']:.1f} | {r['peak_mib']:.0f} | {r['added_mib']:.0f} |")
    lines.append("")
    for method in ("mediar3d", "cellpose"):
        small, large = rows[method]
        lines.append(f"- {method}: 4x the voxels -> peak x{large['peak_mib'] / small['peak_mib']:.2f}, added "
                     f"x{large['added_mib'] / max(small['added_mib'], 1e-6):.2f}, time "
                     f"x{large['seconds'] / small['seconds']:.2f}")
    ours = rows["mediar3d"]
    ok = ours[1]["peak_mib"] <= MEMORY_LIMIT_RATIO * ours[0]["peak_mib"]
    lines += ["", f"**mediar3d peak ratio {ours[1]['peak_mib'] / ours[0]['peak_mib']:.2f} (limit "
                  f"{MEMORY_LIMIT_RATIO}): {'pass' if ok else 'FAIL'}.** mediar3d streams slabs of at most "
                  "4 Mi voxels (mediar3d.resample.SLAB_VOXELS), so what a run adds grows far less than the volume once the "
                  "smaller volume already fills a slab; Cellpose holds the volume, each view's output and the "
                  "summed 4-channel field in memory, so what it adds grows with the volume."]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 256, 256], metavar=("Z", "Y", "X"),
                        help="the smaller volume; the larger is 2x in z and 2x in y (4x the voxels)")
    parser.add_argument("--blocks", type=int, default=0, help="transformer blocks of the CP-SAM network (24 in Cellpose's)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--child", choices=("mediar3d", "cellpose"), help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.child:
        run = child_mediar3d if args.child == "mediar3d" else child_cellpose
        print(json.dumps(run(tuple(args.shape), args.weights, args.threads)))
        return 0
    try:
        import cellpose  # noqa: F401
    except ImportError:
        print("bench_byow needs the cellpose extra: pip install -e '.[cellpose]'", file=sys.stderr)
        return 1
    small = tuple(args.shape)
    large = (2 * small[0], 2 * small[1], small[2])
    rows: dict = {"mediar3d": [], "cellpose": []}
    with tempfile.TemporaryDirectory(prefix="bench-byow-") as tmp:
        weights = Path(tmp) / "cpsam_bench"
        make_weights(weights, args.blocks)
        for shape in (small, large):
            for method in ("mediar3d", "cellpose"):
                print(f"{method} {shape} ...", flush=True)
                rows[method].append(measure(method, shape, weights, args.threads))
                print(f"  {rows[method][-1]}", flush=True)
    write_report(RESULTS, report(args, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
