"""Dry-run DAG build time of the workflow for a long time series (floor: 1,000 timepoints < 30 s).

Makes fake CTC datasets (tiny 2x4x4 frames, every frame with SEG GT, so every per-timepoint rule
is in the DAG: resample, infer, fuse, reconstruct, evaluate), runs the `info` checkpoint once for
real, then times `snakemake -n` (the complete DAG, about 5 jobs per timepoint) for 100 and 1,000
timepoints side by side, and writes bench/results/bench_dag.md.

    .venv/bin/python bench/bench_dag.py [--timepoints 100 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from benchutil import best_of, header, write_report  # noqa: E402  (bench/ is the script's folder)

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "out" / "dag"
RESULT = REPO / "bench" / "results" / "bench_dag.md"
FLOOR_S = 30.0
FLOOR_TIMEPOINTS = 1000


def snakemake_cmd() -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def make_dataset(root: Path, n: int) -> Path:
    """A CTC dataset with n frames t0000..  (4 digits) and full-3D GT for every frame."""
    from mediar3d.io.ctc import write_frame, write_mask

    if (root / "01").is_dir() and len(list((root / "01").glob("t*.tif"))) == n:
        return root
    shutil.rmtree(root, ignore_errors=True)
    frame = np.arange(32, dtype=np.uint16).reshape(2, 4, 4)
    labels = (frame > 16).astype(np.uint16)
    for t in range(n):
        write_frame(root / "01" / f"t{t:04d}.tif", frame, (2.0, 1.0, 1.0))
        write_mask(root / "01_GT" / "SEG" / f"man_seg{t:04d}.tif", labels)
    return root


def write_config(work: Path, dataset: Path, name: str) -> Path:
    model = work / "model.pt"  # never read in a dry run; the workflow checks only that it exists
    model.write_bytes(b"")
    config = work / f"{name}.yaml"
    config.write_text(f"out: {work / ('out_' + name)}\nmodel: {model}\ndatasets:\n  {name}:\n    path: {dataset}\n")
    return config


def run(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout + proc.stderr


def job_count(output: str) -> int:
    match = re.search(r"^total\s+(\d+)\s*$", output, re.MULTILINE)
    if not match:
        raise SystemExit(f"no job count in the dry-run output:\n{output[-2000:]}")
    return int(match.group(1))


def bench(n: int, repeats: int) -> dict:
    work = WORK
    work.mkdir(parents=True, exist_ok=True)
    name = f"ds{n}"
    t0 = time.perf_counter()
    dataset = make_dataset(work / name, n)
    make_s = time.perf_counter() - t0
    config = write_config(work, dataset, name)
    base = [*snakemake_cmd(), "--configfile", str(config)]
    info = work / f"out_{name}" / name / "info.json"
    info_s, _ = run([*base, "--cores", "1", str(info)], work)
    times: list[float] = []
    dry_run_s, output = best_of(lambda: run([*base, "-n", "--quiet", "rules"], work)[1], repeats, warmup=False,
                                times=times)
    return {"timepoints": n, "jobs": job_count(output), "make_s": make_s, "info_s": info_s,
            "dry_run_s": dry_run_s, "dry_run_all": times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timepoints", type=int, nargs="+", default=[100, FLOOR_TIMEPOINTS])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [bench(n, args.repeats) for n in args.timepoints]
    small, large = rows[0], rows[-1]
    import snakemake

    lines = [
        *header("bench_dag: dry-run DAG build time for long time series", f", snakemake {snakemake.__version__}"),
        "One CTC sequence, every frame with full-3D SEG GT (so each timepoint has resample, infer, fuse,",
        "reconstruct and evaluate jobs). `info` (the checkpoint) ran once for real; the time is the best",
        f"of {args.repeats} runs of `snakemake -n --quiet rules` (whole process: start-up, parsing, DAG).",
        "",
        "| timepoints | jobs in DAG | dry run (s) | all runs (s) | ms per job | info checkpoint (s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['timepoints']} | {r['jobs']} | {r['dry_run_s']:.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in r['dry_run_all'])} | {1000 * r['dry_run_s'] / r['jobs']:.2f} | "
                     f"{r['info_s']:.2f} |")
    ratio_t = large["timepoints"] / small["timepoints"]
    ratio_s = large["dry_run_s"] / small["dry_run_s"]
    verdict = "PASS" if large["timepoints"] >= FLOOR_TIMEPOINTS and large["dry_run_s"] < FLOOR_S else "FAIL"
    lines += [
        "",
        f"Scaling: {ratio_t:.0f}x the timepoints takes {ratio_s:.2f}x the time.",
        "",
        f"Floor: {FLOOR_TIMEPOINTS} timepoints < {FLOOR_S:.0f} s -> {large['dry_run_s']:.2f} s for "
        f"{large['timepoints']} timepoints: **{verdict}**",
    ]
    write_report(RESULT, lines)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
