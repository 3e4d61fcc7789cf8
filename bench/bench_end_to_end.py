"""One timepoint end to end, stage by stage, as the workflow runs it: `mediar3d resample` (with the
diameter estimate), `infer` (three views), `fuse` and `reconstruct` (flow following and the labels back
on the original grid), each its own process, timed with its peak resident memory (`/usr/bin/time`).

Two volume sizes of the held-out synthetic `zebrafish` preset (seed 0, anisotropy 4; the larger has 4x
the voxels). Results (table and a stacked-bar plot of each stage's share): bench/results/bench_end_to_end.md.

    .venv/bin/python bench/bench_end_to_end.py [--shapes 32 128 128 32 256 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.resources import default_model  # noqa: E402

STAGES = ("resample", "infer", "fuse", "reconstruct")


def stage_commands(frame: Path, work: Path, model: Path, device: str, threads: int) -> dict[str, list[str]]:
    """{stage: mediar3d arguments} of one frame through the mediar3d method."""
    iso, views, field = work / "iso.zarr", work / "views.zarr", work / "field.zarr"
    return {
        "resample": ["resample", "--input", str(frame), "--model", str(model), "--out", str(iso),
                     "--device", device, "--threads", str(threads)],
        "infer": ["infer", "--input", str(iso), "--model", str(model), "--out", str(views), "--device", device,
                  "--threads", str(threads), "--no-progress"],
        "fuse": ["fuse", "--input", str(views), "--out", str(field)],
        "reconstruct": ["reconstruct", "--input", str(field), "--out", str(work / "mask000.tif"),
                        "--workers", str(threads)],
    }


def timed(args: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of `python -m mediar3d ARGS` in its own process."""
    out = log.with_suffix(".time")
    with open(log, "w") as stream:
        subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(out), sys.executable, "-m", "mediar3d", *args],
                       check=True, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
    seconds, kib = out.read_text().split()[-2:]
    return float(seconds), int(kib) / 1024.0


def run_volume(shape: tuple[int, int, int], work: Path, model: Path, device: str, threads: int) -> list[dict]:
    from mediar3d.synthetic import make_dataset

    data = make_dataset("zebrafish", 0, work / "data", frames=1, anisotropy=4, shape=shape)
    rows = []
    for stage, args in stage_commands(data / "01" / "t000.tif", work, model, device, threads).items():
        seconds, mib = timed(args, work / f"{stage}.log")
        rows.append({"volume": "x".join(map(str, shape)), "voxels (M)": round(shape[0] * shape[1] * shape[2] / 1e6, 2),
                     "stage": stage, "seconds": seconds, "peak RSS MiB": mib})
        print(rows[-1], flush=True)
    return rows


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = table.pivot(index="volume", columns="stage", values="seconds")[list(STAGES)]
    ax = wide.plot.bar(stacked=True, figsize=(6, 4), rot=0)
    ax.set_ylabel("seconds per timepoint")
    ax.set_title("One timepoint end to end, by stage")
    plt.tight_layout()
    plt.savefig(path, dpi=100)
    plt.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, nargs="+", default=[32, 128, 128, 32, 256, 256],
                        help="(Z Y X) per volume, flattened")
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_end_to_end.md")
    args = parser.parse_args()
    if len(args.shapes) % 3:
        parser.error("--shapes takes Z Y X per volume")
    shapes = [tuple(args.shapes[i:i + 3]) for i in range(0, len(args.shapes), 3)]
    model = args.model or default_model()
    rows = []
    for shape in shapes:
        with tempfile.TemporaryDirectory() as tmp:
            rows += run_volume(shape, Path(tmp), model, args.device, args.threads)
    table = pd.DataFrame(rows)
    table["share"] = table["seconds"] / table.groupby("volume")["seconds"].transform("sum")
    totals = table.groupby("volume", sort=False).agg(seconds=("seconds", "sum"), peak=("peak RSS MiB", "max"))
    png = args.out.with_suffix(".png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(table, png)
    lines = header("One timepoint end to end, by stage", f". Device {args.device}, {args.threads} threads, "
                   f"model `{Path(model).name}`; each stage its own process (wall time and peak RSS by /usr/bin/time).")
    lines += [table.to_markdown(index=False, floatfmt=".3f"), "", "Per volume:", "",
              totals.to_markdown(floatfmt=".1f"), "", f"![stages]({png.name})", ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
