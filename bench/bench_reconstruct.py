"""Benchmark: 3D mask reconstruction from one fused field (128x512x512, ~1,200 objects, ~1.7 M
foreground voxels), mediar3d against Cellpose.

The field holds the oracle unit flows of known labels (`mediar3d.flows.labels_to_flows_3d`) and prob
1 inside / 0 outside. The same field goes, in one run of this script, through
`cellpose.dynamics.compute_masks(dP=5*flows, cellprob=logit, do_3D=True)` (Cellpose's defaults:
niter 200, min_size 15) and through mediar3d (dask blocks, 1 and 2 workers; and the one-block
in-memory `masks_from_field`). Each method runs in its own subprocess, so its peak RSS
(VmHWM, imports included) is its own; times exclude imports, loading and a warm-up on a small
field (numba / torch start-up). The 2-vs-1-worker ratio comes from one more subprocess that runs
1 and 2 workers alternately (2 x --repeat pairs after a warm-up pair), so that the load of this
shared machine falls on both alike. Every mediar3d run decodes the zarr chunks on its worker threads
(`store.read_on_this_thread`), so n workers use n cores, reading included, and reuses its block-read
buffers from one call to the next, as a process reconstructing frame after frame does
(`blockread.READ_BUFFERS`); the warm-up call allocates them. Reported: seconds (best of --repeat), time ratios, AP@0.5 agreement
of the outputs (`mediar3d.evaluate.evaluate_frame`, Cellpose as reference) and against the labels.
Writes bench/results/bench_reconstruct.md.

    .venv/bin/python bench/bench_reconstruct.py [--shape 128 512 512] [--repeat 2]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from benchutil import best_of, header, peak_rss_mib, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out" / "reconstruct"
RESULT = ROOT / "bench" / "results" / "bench_reconstruct.md"
LOGIT = 8.0
DIAMETER = 14.0
BLOCK = (128, 256, 256)


# ---------------------------------------------------------------------------------------------
# data


def jittered_balls(shape, spacing=(32, 30, 30), radius=7.0, seed=0) -> np.ndarray:
    """uint32 labels: balls of radius ~`radius` (x0.85..1.2) on a grid of `spacing`, centres jittered
    by up to 5 voxels (so some neighbours touch)."""
    from mediar3d import synthetic

    return synthetic.jittered_balls(shape, spacing, radius, jitter=5.0, radius_range=(0.85, 1.2), seed=seed)


def _stored_as_fuse_writes(array, shape) -> bool:
    """Whether a cached field zarr has the chunks and codecs `mediar3d fuse` writes."""
    from mediar3d.io import store

    def codecs(compressors):
        return [(c.to_dict()["name"], c.to_dict()["configuration"].get("cname"), c.to_dict()["configuration"].get("shuffle"))
                for c in compressors]

    return array.chunks == store.default_chunks((4, *shape)) and codecs(array.compressors) == codecs(store.COMPRESSORS)


def make_field(shape) -> Path:
    """bench/out/reconstruct/{labels.npy, field.npy, field.zarr} for `shape` (cached); the zarr has the
    chunks and codec the pipeline's fused field has (`store.default_chunks`, `store.COMPRESSORS`)."""
    from mediar3d.flows import labels_to_flows_3d
    from mediar3d.io import store

    folder = OUT / "x".join(map(str, shape))
    if (folder / "field.zarr").exists() and (folder / "field.npy").exists():
        if _stored_as_fuse_writes(store.open_array(folder / "field.zarr"), shape):
            return folder
        # a cache from an older version of this script: rewrite it as the pipeline writes it
        store.write_array(folder / "field.zarr", np.load(folder / "field.npy"))
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    labels = jittered_balls(shape)
    flows = labels_to_flows_3d(labels)
    field = np.concatenate([flows, (labels > 0).astype(np.float32)[None]]).astype(np.float32)
    np.save(folder / "labels.npy", labels)
    np.save(folder / "field.npy", field)
    store.write_array(folder / "field.zarr", field)  # the chunks `mediar3d fuse` writes
    print(f"field {shape}: {labels.max()} objects, {(labels > 0).sum()} fg voxels, {time.perf_counter() - t0:.1f} s",
          flush=True)
    return folder


# ---------------------------------------------------------------------------------------------
# one method in a subprocess


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best_wall_cpu(fn, repeat: int) -> tuple[object, tuple[float, float, float]]:
    """(value, (wall s, CPU s, first call's wall s)) of the fastest of `repeat` calls of `fn` (no
    warm-up here: the callers warm up on a small field, so the first call is the first at full size)."""
    def with_cpu():
        c0 = _cpu_seconds()
        value = fn()
        return value, _cpu_seconds() - c0

    times: list[float] = []
    wall, (value, cpu) = best_of(with_cpu, repeat, warmup=False, times=times)
    return value, (wall, cpu, times[0])


def _warm_field() -> np.ndarray:
    labels = jittered_balls((32, 64, 64), spacing=(16, 16, 16), radius=5.0)
    from mediar3d.flows import labels_to_flows_3d

    return np.concatenate([labels_to_flows_3d(labels), (labels > 0).astype(np.float32)[None]]).astype(np.float32)


def run_cellpose(folder: Path, repeat: int) -> tuple[np.ndarray, float]:
    import torch
    from cellpose.dynamics import compute_masks

    torch.set_num_threads(os.cpu_count() or 1)

    def inputs(field):  # not timed
        return 5.0 * field[:3], np.where(field[3] > 0.5, LOGIT, -LOGIT).astype(np.float32)

    compute_masks(*inputs(_warm_field()), do_3D=True, min_size=15)
    field = np.load(folder / "field.npy")  # kept alive during the timed calls, as the memory figure assumes
    dp, cellprob = inputs(field)
    masks, best = best_wall_cpu(lambda: compute_masks(dp, cellprob, do_3D=True, min_size=15), repeat)
    return np.asarray(masks), best


def dask_masks(field, workers: int) -> np.ndarray:
    """The timed mediar3d call: masks_from_field_dask on BLOCKs with `workers` dask workers and as many
    numba threads (for the reduce)."""
    import numba

    from mediar3d.reconstruct import masks_from_field_dask

    numba.set_num_threads(workers)
    return masks_from_field_dask(field, block=BLOCK, workers=workers, diameter_px=DIAMETER)


def run_mediar3d(folder: Path, repeat: int, mode: str, workers: int) -> tuple[np.ndarray, float]:
    import numba

    from mediar3d.io import store
    from mediar3d.reconstruct import masks_from_field

    numba.set_num_threads(workers)

    def once(field):
        if mode == "single":
            return masks_from_field(np.asarray(field), diameter_px=DIAMETER)
        return dask_masks(field, workers)

    once(_warm_field())
    field = np.load(folder / "field.npy") if mode == "single" else store.open_array(folder / "field.zarr")
    return best_wall_cpu(lambda: once(field), repeat)


def run_worker_pairs(folder: Path, repeat: int) -> dict:
    """Wall seconds of `repeat` alternating runs of masks_from_field_dask with 1 and 2 workers (numba
    threads = workers) on the zarr field, in this one process: {"1": [...], "2": [...]}."""
    from mediar3d.io import store

    field = store.open_array(folder / "field.zarr")
    times: dict[str, list[float]] = {"1": [], "2": []}
    for rep in range(1 + repeat):  # pair 0 warms up at full size (the first runs are slower)
        for workers in (1, 2):
            t0 = time.perf_counter()
            dask_masks(field, workers)
            if rep:
                times[str(workers)].append(time.perf_counter() - t0)
    return times


def task_cpu_times(folder: Path) -> dict:
    """Process CPU seconds (all threads, zarr's decoding included) of each dask map task (one block:
    read + follow) and of the reduce, run one after the other: the load-independent input of the
    2-worker projection."""
    import numba

    from mediar3d.blockread import block_boxes
    from mediar3d.io import store
    from mediar3d.reconstruct import (_block_task, default_min_size, default_niter, flow_halo,
                                      labels_from_block_ends, masks_from_field_dask)

    # the defaults masks_from_field_dask runs with (read from its signature, so they cannot drift)
    defaults = inspect.signature(masks_from_field_dask).parameters
    step, prob_threshold = defaults["step"].default, defaults["prob_threshold"].default
    max_size_fraction = defaults["max_size_fraction"].default
    numba.set_num_threads(1)
    field = store.open_array(folder / "field.zarr")
    shape = field.shape[1:]
    niter = default_niter(DIAMETER)
    blocks, results = [], []
    for own in block_boxes(shape, BLOCK):
        t0 = _cpu_seconds()
        # threads=1: masks_from_field_dask gives each task one numba thread
        results.append(_block_task(field, own, flow_halo(niter, step), shape, niter, step, prob_threshold, 1))
        blocks.append(_cpu_seconds() - t0)
    t0 = _cpu_seconds()
    labels_from_block_ends(results, shape, default_min_size(DIAMETER), max_size_fraction)
    return {"blocks": blocks, "reduce": _cpu_seconds() - t0}


def projected_speedup(times: dict, workers: int) -> float:
    """T(1) / T(workers): each block's CPU time cut into the parts masks_from_field_dask hands out
    (PARTS_PER_WORKER x workers per block), scheduled longest first onto `workers` threads, then the reduce."""
    from mediar3d.reconstruct import PARTS_PER_WORKER

    parts = PARTS_PER_WORKER * workers
    loads = [0.0] * workers
    for t in sorted((t / parts for t in times["blocks"] for _ in range(parts)), reverse=True):
        loads[loads.index(min(loads))] += t
    return (sum(times["blocks"]) + times["reduce"]) / (max(loads) + times["reduce"])


def child(args) -> int:
    folder = Path(args.folder)
    if args.child == "pairs":
        print(json.dumps({"name": "pairs", "times": run_worker_pairs(folder, args.repeat)}), flush=True)
        return 0
    if args.child == "cellpose":
        masks, seconds = run_cellpose(folder, args.repeat)
    else:
        masks, seconds = run_mediar3d(folder, args.repeat, args.child, args.workers)
    name = f"{args.child}-{args.workers}"
    np.save(folder / f"masks-{name}.npy", masks.astype(np.uint32))
    result = {"name": name, "seconds": seconds[0], "cpu_seconds": seconds[1], "first_seconds": seconds[2],
              "peak_rss_mib": peak_rss_mib()}
    if args.child == "dask" and args.workers == 1:
        result["task_cpu"] = task_cpu_times(folder)
    print(json.dumps(result), flush=True)
    return 0


def spawn(folder: Path, method: str, workers: int, repeat: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--folder", str(folder), "--workers", str(workers),
           "--repeat", str(repeat)]
    env = {**os.environ, "OMP_NUM_THREADS": str(workers), "NUMBA_NUM_THREADS": str(os.cpu_count() or 1)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if method == "pairs":
        return result["times"]
    result["masks"] = np.load(folder / f"masks-{result['name']}.npy")
    print(f"{method:9s} workers {workers}: {result['seconds']:.2f} s ({result['cpu_seconds']:.2f} CPU s), "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB",
          flush=True)
    return result


# ---------------------------------------------------------------------------------------------
# report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 512, 512])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", choices=["cellpose", "single", "dask", "pairs"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from mediar3d.evaluate import evaluate_frame

    shape = tuple(args.shape)
    load_before = os.getloadavg()[0]
    folder = make_field(shape)
    labels = np.load(folder / "labels.npy")
    from mediar3d.io import store

    stored = store.open_array(folder / "field.zarr")
    chunks = stored.chunks
    codec = ", ".join(" ".join(str(v) for v in (c.to_dict()["name"], *(c.to_dict()["configuration"].get(k) for k in
                                                                        ("cname", "shuffle"))) if v)
                      for c in stored.compressors)
    n_fg = int((labels > 0).sum())
    cpus = os.cpu_count() or 1
    runs = {
        "cellpose": spawn(folder, "cellpose", cpus, args.repeat),
        "dask-1": spawn(folder, "dask", 1, args.repeat),
        "dask-2": spawn(folder, "dask", 2, args.repeat),
        "single-2": spawn(folder, "single", 2, args.repeat),
    }
    pairs = spawn(folder, "pairs", 2, 2 * args.repeat)
    one, two = np.asarray(pairs["1"]), np.asarray(pairs["2"])
    speed_2w = float(one.min() / two.min())
    print(f"alternating pairs: 1 worker {one.min():.2f} s, 2 workers {two.min():.2f} s (best); {speed_2w:.2f}x",
          flush=True)
    cp = runs["cellpose"]
    rows = []
    for key, label in [("cellpose", f"Cellpose compute_masks(do_3D=True), torch CPU, {cpus} threads"),
                       ("dask-1", "mediar3d masks_from_field_dask, zarr input, 1 worker"),
                       ("dask-2", "mediar3d masks_from_field_dask, zarr input, 2 workers"),
                       ("single-2", "mediar3d masks_from_field, in-memory numpy, 1 block, 2 numba threads")]:
        r = runs[key]
        vs_gt = evaluate_frame(r["masks"], labels)
        agree = evaluate_frame(r["masks"], cp["masks"])["ap50"] if key != "cellpose" else 1.0
        rows.append((label, r["seconds"], r["cpu_seconds"], r["first_seconds"], cp["seconds"] / r["seconds"], r["peak_rss_mib"],
                     int(r["masks"].max()), agree, vs_gt["ap50"], vs_gt["seg"]))
    identical = np.array_equal(runs["dask-1"]["masks"], runs["single-2"]["masks"]) and \
        np.array_equal(runs["dask-2"]["masks"], runs["single-2"]["masks"])
    separate_2w = runs["dask-1"]["seconds"] / runs["dask-2"]["seconds"]
    task_cpu = runs["dask-1"]["task_cpu"]
    projected_2w = projected_speedup(task_cpu, 2)
    best = runs["dask-2"]
    agree_best = evaluate_frame(best["masks"], cp["masks"])["ap50"]
    floors = [
        ("mediar3d (2 workers) >= 5x faster than Cellpose", cp["seconds"] / best["seconds"] >= 5,
         f"{cp['seconds'] / best['seconds']:.1f}x"),
        ("AP@0.5 agreement with Cellpose >= 0.98", agree_best >= 0.98, f"{agree_best:.4f}"),
        ("2 workers >= 1.7x faster than 1 worker (measured)", speed_2w >= 1.7,
         f"{speed_2w:.2f}x measured (best of {one.size} alternating pairs); projected {projected_2w:.2f}x "
         "from the tasks' CPU times"),
        ("peak memory below Cellpose's", best["peak_rss_mib"] < cp["peak_rss_mib"],
         f"{best['peak_rss_mib']:.0f} MiB vs {cp['peak_rss_mib']:.0f} MiB"),
    ]
    lines = [
        *header("bench_reconstruct: 3D masks from a fused flow field, mediar3d vs Cellpose"),
        f"Load average (1 min) when the run started: {load_before:.2f}, when it ended: {os.getloadavg()[0]:.2f} "
        f"on {cpus} cores; the machine is shared, so absolute times are noisy and the ratios come from "
        "one run of this script.",
        "",
        f"Data: oracle field (4, {', '.join(map(str, shape))}) float32 of {int(labels.max())} jittered balls "
        f"(diameter ~{DIAMETER:.0f} px), {n_fg} foreground voxels. Cellpose gets dP = 5 x flows and "
        f"cellprob = +-{LOGIT:.0f} (its defaults: niter 200, min_size 15); mediar3d gets diameter_px "
        f"{DIAMETER:.0f} (niter {int(2 * DIAMETER)}, min_size from the diameter), block {BLOCK} for dask "
        f"on a zarr field with the chunks and codec `mediar3d fuse` writes ({chunks}, {codec}). "
        f"Times exclude imports, loading and a warm-up on a small field; best of {args.repeat}. 'first call' "
        "is the first full-size call of each subprocess (for mediar3d: with fresh block-read buffers, as "
        "in a `mediar3d reconstruct` job of one frame; later calls reuse them). Peak RSS is each "
        "subprocess's VmHWM (imports included); CPU s = user + sys CPU time of the timed call (all threads).",
        "",
        "| method | wall s | CPU s | first call s | speed-up vs Cellpose (wall) | peak RSS MiB | objects | AP@0.5 vs Cellpose | AP@0.5 vs labels | SEG vs labels |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, sec, cpu, first, ratio, rss, n, agree, ap, seg in rows:
        lines.append(f"| {label} | {sec:.2f} | {cpu:.2f} | {first:.2f} | {ratio:.1f}x | {rss:.0f} | {n} | {agree:.4f} | {ap:.4f} | {seg:.4f} |")
    lines += [
        "",
        f"dask (1 and 2 workers) labels identical to the single-block labels: {identical}",
        "",
        f"2 workers vs 1 worker, measured (wall) on {one.size} alternating pairs in one process: best "
        f"{one.min():.2f} s vs {two.min():.2f} s = {speed_2w:.2f}x; medians {np.median(one):.2f} s vs "
        f"{np.median(two):.2f} s = {np.median(one) / np.median(two):.2f}x; median of the per-pair ratios "
        f"{np.median(one / two):.2f}x. From the separate runs in the table: {separate_2w:.2f}x. The runs used "
        f"{cp['cpu_seconds'] / cp['seconds']:.2f} (Cellpose, {cpus} threads), "
        f"{runs['dask-1']['cpu_seconds'] / runs['dask-1']['seconds']:.2f} (1 worker) and "
        f"{best['cpu_seconds'] / best['seconds']:.2f} (2 workers) cores on average (CPU s / wall s). "
        f"Load-independent projection from the CPU time of each map task run alone (blocks "
        f"{', '.join(f'{t:.2f}' for t in task_cpu['blocks'])} s) and of the reduce ({task_cpu['reduce']:.2f} s), "
        f"each block cut into the parts the 2-worker run hands out, longest first on 2 free cores: {projected_2w:.2f}x.",
        "",
        "Floors (issue 5):",
        "",
    ]
    lines += [f"- {name}: {'PASS' if ok else 'FAIL'} ({value})" for name, ok, value in floors]
    write_report(RESULT, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
