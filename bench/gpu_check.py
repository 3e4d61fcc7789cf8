"""One timepoint end to end on a device, checked against the CPU (run by bench/gpu_check.sh).

A synthetic `zebrafish` frame (seed 0, anisotropy 4; default 100 x 512 x 512) goes through the
pipeline's own stages (`mediar3d.pipeline`: resample with the diameter estimate, infer, fuse,
reconstruct) on `--device`; the time of each stage and the device's peak memory are printed. Then the
same isotropic volume is inferred on the CPU, fused and reconstructed, and the largest difference of
the fields (flows and probability) and of the masks (voxels whose label differs after matching, SEG of
the device's masks against the CPU's) is printed. With `--device cpu` both runs are on the CPU: a dry
run of the script (differences 0). A report also goes to `OUT/gpu_check.md`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d import pipeline  # noqa: E402
from mediar3d.evaluate import evaluate_frame  # noqa: E402
from mediar3d.io.ctc import read_frame, resolve_voxel_size  # noqa: E402
from mediar3d.io.store import open_array, read  # noqa: E402
from mediar3d.resources import default_model  # noqa: E402
from mediar3d.synthetic import make_dataset  # noqa: E402


class StageClock:
    """Wall time (s) and peak device memory (MiB, CUDA only) of each stage."""

    def __init__(self, device) -> None:
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"
        self.rows: list[dict] = []

    def run(self, stage: str, fn):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn()
        if self.cuda:
            self.torch.cuda.synchronize()
        peak = f"{self.torch.cuda.max_memory_allocated() / 2**20:.0f}" if self.cuda else "n/a"
        self.rows.append({"stage": stage, "seconds": time.perf_counter() - t0, "peak device MiB": peak})
        print(f"{stage:12s} {self.rows[-1]['seconds']:8.2f} s   peak device memory {peak} MiB", flush=True)
        return out


def downstream(iso: Path, work: Path, settings, model, meta, clock: StageClock | None):
    """(field (4, Z', Y', X'), labels (Z, Y, X)) of an iso.zarr through infer, fuse and reconstruct."""
    def stage(name, fn):
        return clock.run(name, fn) if clock else fn()

    views = stage("infer", lambda: pipeline.infer(iso, work / "views.zarr", settings, model, meta=meta,
                                                   progress=False))
    field = stage("fuse", lambda: pipeline.fuse(views, work / "field.zarr"))
    labels = stage("reconstruct", lambda: pipeline.reconstruct(field, settings))
    return read(open_array(field)), labels


def mask_difference(labels: np.ndarray, reference: np.ndarray) -> dict:
    """Voxels labelled differently (foreground vs background, or matched to another object) and SEG."""
    fg_differs = int(np.count_nonzero((labels > 0) != (reference > 0)))
    scores = evaluate_frame(labels, reference)
    return {"foreground voxels differing": fg_differs,
            "foreground fraction differing": fg_differs / max(1, int(np.count_nonzero(reference))),
            "SEG vs CPU masks": float(scores["seg"]), "objects": int(labels.max()),
            "objects (CPU)": int(reference.max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shape", type=int, nargs=3, default=[100, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the reference run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpu_check")
    args = parser.parse_args()
    model_path = args.model or default_model()
    model, meta, device = pipeline.load_network(model_path, args.device, threads=args.threads)
    settings = replace(pipeline.Settings(), device=args.device)
    work = args.out
    data = make_dataset("zebrafish", 0, work / "data", frames=1, anisotropy=4, shape=tuple(args.shape))
    frame = data / "01" / "t000.tif"
    volume, voxel = read_frame(frame), tuple(resolve_voxel_size(frame))
    print(f"{frame}: {volume.shape} voxels {voxel} um, model {model_path}, device {device}", flush=True)
    clock = StageClock(device)
    dev_dir, cpu_dir = work / args.device, work / "cpu-reference"
    iso = clock.run("resample", lambda: pipeline.resample(volume, voxel, dev_dir / "iso.zarr", settings, meta=meta,
                                                          model=model, device=device, source=str(frame)))
    field, labels = downstream(iso, dev_dir, settings, model, meta, clock)
    cpu_model, _, _ = pipeline.load_network(model_path, "cpu", threads=args.threads)
    cpu_field, cpu_labels = downstream(iso, cpu_dir, replace(settings, device="cpu"), cpu_model, meta, None)
    field_diff = np.abs(field - cpu_field).reshape(field.shape[0], -1).max(axis=1)
    result = {"flows max |difference|": float(field_diff[:3].max()),
              "probability max |difference|": float(field_diff[3]), **mask_difference(labels, cpu_labels)}
    total = sum(r["seconds"] for r in clock.rows)
    for key, value in result.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"total {total:.1f} s for {np.prod(volume.shape) / 1e6:.2f} M voxels")
    lines = [f"# gpu_check on {device}", "", f"Frame {tuple(volume.shape)}, voxel {voxel} um, model `{model_path}`.", "",
             "| stage | seconds | share | peak device MiB |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['seconds']:.2f} | {r['seconds'] / total:.2f} | {r['peak device MiB']} |"
              for r in clock.rows]
    lines += ["", *[f"- {k}: {v}" for k, v in result.items()], ""]
    (work / "gpu_check.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
