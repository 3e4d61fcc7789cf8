"""Benchmark: the codec of the zarr intermediates (iso volume, views, fused field) on one real frame.

The pipeline's stages make the three stores of one synthetic zebrafish frame (`mediar3d synth`,
`resample`, `infer` with the shipped model, `fuse`; cached under --work). Each array is then
written, in one run of this script, with zarr's default codec (Zstd level 0) and with the Blosc LZ4
codecs (with bench_reconstruct's oracle field when its cache exists), and for each the script reports the size on disk, the write time and the time to read the
first haloed reconstruction block ((Z, 128, 290, 290) minus the volume's edges: what
`mediar3d.blockread` reads), wall and process CPU, best of --repeat rounds that read the codecs in
turn, zarr decoding on one thread as `mediar3d reconstruct` sets it. Ratios are against Zstd. Writes bench/results/bench_codecs.md.

    .venv/bin/python bench/bench_codecs.py [--shape 32 512 512] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULT = ROOT / "bench" / "results" / "bench_codecs.md"
MODEL = ROOT / "models" / "mediar3d_default.pt"
BLOCK = (128, 290, 290)
ORACLE = ROOT / "bench" / "out" / "reconstruct" / "128x512x512" / "field.npy"


def codecs() -> dict:
    """name -> zarr compressors: the default, LZ4 with byte shuffle, and what `mediar3d.io.store` writes."""
    from zarr.codecs import BloscCodec, ZstdCodec

    from mediar3d.io import store

    return {"Zstd level 0 (zarr default)": (ZstdCodec(level=0),),
            "Blosc LZ4 + shuffle": (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),),
            "Blosc LZ4, no shuffle (store.COMPRESSORS)": store.COMPRESSORS}


def make_frame(work: Path, shape) -> dict[str, Path]:
    """{name: zarr array path} of one frame's iso volume, xy view and fused field (made once)."""
    stores = {"iso": work / "iso.zarr", "views (xy)": work / "views.zarr" / "xy", "field": work / "field.zarr"}
    if all(p.exists() for p in stores.values()):
        return stores
    work.mkdir(parents=True, exist_ok=True)
    mediar3d = [sys.executable, "-m", "mediar3d"]
    steps = [
        ["synth", "--preset", "zebrafish", "--seed", "3", "--frames", "1", "--shape", *map(str, shape),
         "--out", str(work / "data")],
        ["resample", "--input", str(work / "data" / "01" / "t000.tif"), "--model", str(MODEL),
         "--out", str(work / "iso.zarr")],
        ["infer", "--input", str(work / "iso.zarr"), "--model", str(MODEL), "--out", str(work / "views.zarr"),
         "--no-progress"],
        ["fuse", "--input", str(work / "views.zarr"), "--out", str(work / "field.zarr")],
    ]
    for step in steps:
        print("mediar3d", " ".join(step), flush=True)
        subprocess.run(mediar3d + step, check=True, cwd=ROOT)
    return stores


def write(array: np.ndarray, compressors, chunks, folder: Path) -> dict:
    """Store `array` with `compressors` in `folder`: {"mib": size on disk, "write": seconds}."""
    import zarr

    shutil.rmtree(folder, ignore_errors=True)
    out = zarr.create_array(str(folder), shape=array.shape, dtype=array.dtype, chunks=chunks,
                            compressors=compressors, fill_value=0)
    t0 = time.perf_counter()
    out[...] = array
    seconds = time.perf_counter() - t0
    return {"mib": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, "write": seconds}


def read_block_times(folders: dict[str, Path], repeat: int) -> dict[str, tuple[float, float]]:
    """{codec: (best wall s, best CPU s)} of reading the first haloed block of each store, the stores
    read in turn `repeat` times (after one untimed round), so the machine's drift falls on all alike."""
    import zarr

    from mediar3d.io import store

    arrays = {codec: zarr.open_array(str(folder)) for codec, folder in folders.items()}
    times: dict[str, list[tuple[float, float]]] = {codec: [] for codec in arrays}
    first = next(iter(arrays.values()))
    box = (slice(None),) * (first.ndim - 3) + tuple(slice(0, min(b, s)) for b, s in zip(BLOCK, first.shape[-3:]))
    # one buffer for all reads, as a reconstruction reuses its read buffers (fresh pages cost more here)
    out = np.empty(tuple(len(range(*b.indices(n))) for b, n in zip(box, first.shape)), first.dtype)
    for round_ in range(repeat + 1):
        for codec, stored in arrays.items():
            t0, c0 = time.perf_counter(), time.process_time()
            store.read_on_this_thread(stored, box, out)  # as a reconstruction reads a block
            if round_:
                times[codec].append((time.perf_counter() - t0, time.process_time() - c0))
    return {codec: (min(w for w, _ in t), min(c for _, c in t)) for codec, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 512, 512],
                        help="synthetic frame shape (z at the zebrafish anisotropy 4: 32 -> 128 iso planes)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "codecs")
    args = parser.parse_args()

    import zarr

    from mediar3d.io import store

    stores = make_frame(args.work, args.shape)
    if ORACLE.exists():  # bench_reconstruct's oracle field: sparse flows, prob 0 / 1
        stores["oracle field (bench_reconstruct)"] = ORACLE
    rows = []
    for name, path in stores.items():
        source = zarr.open_array(str(path)) if path.suffix != ".npy" else None
        array = source[...] if source is not None else np.load(path)
        chunks = source.chunks if source is not None else store.default_chunks(array.shape)
        folders = {codec: args.work / f"trial-{i}.zarr" for i, codec in enumerate(codecs())}
        results = {codec: write(array, compressors, chunks, folders[codec])
                   for codec, compressors in codecs().items()}
        for codec, (wall, cpu) in read_block_times(folders, args.repeat).items():
            results[codec].update(read=wall, read_cpu=cpu)
        for folder in folders.values():
            shutil.rmtree(folder)
        base = next(iter(results.values()))
        for codec, r in results.items():
            rows.append(f"| {name} {array.shape} {array.dtype} | {codec} | {r['mib']:.0f} ({r['mib'] / base['mib']:.2f}x) "
                        f"| {r['write']:.2f} ({base['write'] / r['write']:.1f}x faster) "
                        f"| {r['read']:.3f} / {r['read_cpu']:.3f} ({base['read_cpu'] / r['read_cpu']:.1f}x less CPU) |")
            print(rows[-1], flush=True)
    lines = [
        *header("bench_codecs: codecs of the zarr intermediates on one zebrafish frame"),
        f"Data: one `mediar3d synth --preset zebrafish --seed 3 --shape {' '.join(map(str, args.shape))}` frame "
        "through resample, infer (shipped model, CPU) and fuse. Each array is rewritten with the same chunks "
        f"((4|3,) 64^3) in each codec; read = the block {BLOCK} at the origin (all channels), best of "
        f"{args.repeat} rounds reading the codecs in turn, decoded on the reading thread as a reconstruction "
        "does (`store.read_on_this_thread`).",
        "",
        "| array | codec | size MiB (vs Zstd) | write s (one write) | read block s wall / CPU (best) |",
        "|---|---|---:|---:|---:|",
        *rows,
    ]
    write_report(RESULT, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
