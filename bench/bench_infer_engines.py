"""How the network runs on the CPU: speed and 3D SEG of each engine, side by side in one run.

1. forward pass only (one batch of 8 256x256 tiles, the shipped model): fp32 eager (mediar3d <= 0.1's
   path), bf16 autocast, channels-last fp32, channels-last bf16, torch.compile (channels-last bf16;
   its compile time apart), ONNX Runtime fp32 and int8 (dynamic quantization) when onnxruntime is
   installed. Interleaved repeats, best time of each.
2. the `infer` stage (three views of one iso volume: a held-out synthetic frame, resampled as the
   pipeline does): the same engines as `InferenceNetwork`s, with the fixed 256 tiles of mediar3d <= 0.1
   and with balanced tiles (`infer.balanced_tile`: each axis takes the smallest tile that covers it with
   as many tiles), plus tile / batch sizes, plus the
   constant-tile skip on the same volume placed in a zero background (a fused light-sheet volume's
   surroundings). Ratios are to fp32 eager, measured in the same run.
3. 3D SEG of the whole pipeline (`segment_frame`, diameter estimated, as users run it) with each
   precision on held-out synthetic frames (zebrafish seed 0 at anisotropy 4 and 8, thin seed 0, and a
   larger zebrafish frame whose slices need several tiles) and the real BBBC050 volumes, plus the
   fastest larger tiling: the change from fp32 eager must stay within 0.005.

Run: .venv/bin/python bench/bench_infer_engines.py [--shape Z Y X] [--repeat N] [--no-compile]
Writes bench/results/bench_infer_engines.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mediar3d import infer, pipeline  # noqa: E402
from mediar3d.infer import InferenceNetwork, cpu_flags, predict_views, resolve_precision  # noqa: E402
from mediar3d.model import load_checkpoint  # noqa: E402

from bench_error_budget import BBBC050, load_case, synthetic_case  # noqa: E402
from bench_methods import TEST_SETS  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "bench_infer_engines.md"
MODEL = ROOT / "models" / "mediar3d_default.pt"
SEG_TOLERANCE = 0.005
#: (name, precision, channels_last) of the engines measured through the pipeline's own inference
ENGINES = [("fp32 eager (before)", "fp32", False), ("fp32 channels-last", "fp32", True),
           ("bf16", "bf16", False), ("bf16 channels-last", "bf16", True)]
#: (tile, batch) of the pipeline's default
DEFAULT_TILING = (pipeline.Settings().tile, pipeline.Settings().batch)
BEFORE = "fp32 eager, fixed tiles (before)"
#: (name, precision, channels_last, tile, batch, balanced tiles) of the infer stage: before (fp32 eager,
#: fixed 256 tiles), each engine with fixed tiles, then balanced tiles (the default) and other tilings
INFER_VARIANTS = [(BEFORE, "fp32", False, *DEFAULT_TILING, False)] + \
                 [(f"{name}, fixed tiles", p, cl, *DEFAULT_TILING, False) for name, p, cl in ENGINES[1:]] + \
                 [("fp32 eager", "fp32", False, *DEFAULT_TILING, True)] + \
                 [(f"{{fast}}{suffix}", "auto", True, tile, batch, True)
                  for suffix, tile, batch in (("", *DEFAULT_TILING), (", batch 16", 256, 16), (", tile 512 batch 4", 512, 4))]
#: the variants whose 3D SEG is measured: before, the fastest engine with fixed tiles, balanced tiles in
#: fp32, and the default (`--precision auto`, balanced tiles)
SEG_VARIANTS = [INFER_VARIANTS[0], INFER_VARIANTS[3], INFER_VARIANTS[4], INFER_VARIANTS[5]]
#: a held-out frame whose slices are larger than a default tile (tiling changes its result)
LARGE_CASE = ("zebrafish", 0, 4, (40, 320, 320))


def network(precision: str, channels_last: bool) -> InferenceNetwork:
    precision = _fastest_engine()[0] if precision == "auto" else precision
    net, _ = load_checkpoint(MODEL, torch.device("cpu"))
    net = net.eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return InferenceNetwork(net, precision, channels_last).eval()


@contextlib.contextmanager
def tiling(balanced: bool):
    """Balanced tiles (the pipeline's), or the fixed tiles of mediar3d <= 0.1: every axis longer than
    the tile cut into tiles of the full edge."""
    if balanced:
        yield
        return
    saved = infer.balanced_tile
    infer.balanced_tile = lambda length, tile, overlap: min(tile, infer.round_up(length))
    try:
        yield
    finally:
        infer.balanced_tile = saved


def variant_name(name: str) -> str:
    return name.format(fast=_fastest_name())


def best_interleaved(runners: dict, repeat: int) -> dict[str, float]:
    """{name: best seconds} over `repeat` rounds, each round running every runner once, the order
    reversed every other round (the machine is shared and drifts)."""
    times = {name: [] for name in runners}
    names = list(runners)
    for r in range(repeat):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


# ---------------------------------------------------------------------------------------------
# 1. forward pass


def onnx_runners(net: torch.nn.Module, x: torch.Tensor, work: Path) -> dict:
    """{name: (callable, output)} for ONNX Runtime fp32 and dynamic int8, or {} without onnxruntime."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        return {}
    fp32, int8 = work / "net.onnx", work / "net-int8.onnx"
    torch.onnx.export(net, (x,), fp32, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    runners = {}
    for name, path in (("ONNX Runtime fp32", fp32), ("ONNX Runtime int8 (dynamic)", int8)):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        runners[name] = lambda s=session: s.run(None, {"x": x.numpy()})[0]
    return runners


def forward_section(repeat: int, compile_net: bool, work: Path) -> tuple[list[dict], float | None]:
    plain, _ = load_checkpoint(MODEL, torch.device("cpu"))
    x = torch.randn(8, plain.in_channels, 256, 256, generator=torch.Generator().manual_seed(0))
    plain = plain.eval()
    runners, outputs = {}, {}
    for name, precision, channels_last in ENGINES:
        net = network(precision, channels_last)
        runners[name] = lambda n=net: _torch_forward(n, x)
    compile_seconds = None
    if compile_net:
        compiled = torch.compile(network("bf16", True))
        start = time.perf_counter()
        _torch_forward(compiled, x)
        compile_seconds = time.perf_counter() - start
        runners["torch.compile (bf16 channels-last)"] = lambda: _torch_forward(compiled, x)
    runners.update(onnx_runners(copy.deepcopy(plain), x, work))
    for name, run in runners.items():
        outputs[name] = np.asarray(run(), dtype=np.float32)
    best = best_interleaved(runners, repeat)
    reference = outputs[ENGINES[0][0]]
    return [{"engine": name, "seconds": best[name], "speedup": best[ENGINES[0][0]] / best[name],
             "max_abs_diff": float(np.abs(outputs[name] - reference).max())} for name in runners], compile_seconds


def _torch_forward(net, x):
    with torch.inference_mode():
        return net(x).float().numpy()


# ---------------------------------------------------------------------------------------------
# 2. the infer stage


def iso_volume(shape, work: Path) -> Path:
    """iso.zarr of a held-out synthetic zebrafish frame (seed 0, anisotropy 4) of raw `shape`, resampled
    by the pipeline with the diameter estimated."""
    _, folder = synthetic_case(work / "data", "zebrafish", 0, 4.0, tuple(shape))
    image, _, voxel_size = load_case(folder, 0)
    net = network("fp32", True)
    out = work / "iso.zarr"
    pipeline.resample(image, voxel_size, out, pipeline.Settings(), meta=_meta(), model=net, device="cpu")
    return out


def padded_iso(iso: Path, work: Path, core: int = 64, margin: int = 256, depth: int = 48) -> Path:
    """The first `depth` planes of a `core` x `core` (y, x) centre of the iso volume inside a background of its minimum value,
    `margin` voxels on each side of y and x (a tile or more: whole tiles and slices are background)."""
    from mediar3d.io import store

    vol = store.read(store.open_array(iso), (slice(None),) * 3)
    y0, x0 = (vol.shape[1] - core) // 2, (vol.shape[2] - core) // 2
    centre = vol[:, max(0, y0):y0 + core, max(0, x0):x0 + core]
    padded = np.pad(centre[:depth], ((0, 0), (margin, margin), (margin, margin)), constant_values=float(vol.min()))
    out = work / "iso-padded.zarr"
    store.write_array(out, padded.astype(np.float32))
    return out


def _meta() -> dict:
    return dict(load_checkpoint(MODEL, torch.device("cpu"))[1])


def infer_section(iso: Path, padded: Path, repeat: int, work: Path) -> tuple[list[dict], dict]:
    from mediar3d.io import store

    shape = store.open_array(iso).shape
    runners, rows = {}, {}
    for name, precision, channels_last, tile, batch, balanced in INFER_VARIANTS:
        name = variant_name(name)
        runners[name] = _infer_runner(iso, network(precision, channels_last), work / "v.zarr", tile, batch,
                                      balanced=balanced)
        rows[name] = {"variant": name, "tile": tile, "batch": batch, "balanced tiles": balanced}
    fast = network(*_fastest_engine())
    best = best_interleaved(runners, repeat)
    base = best[BEFORE]
    voxels = 3 * float(np.prod(shape))
    out = [{**rows[n], "seconds": best[n], "kvoxel_per_s": voxels / best[n] / 1e3, "speedup": base / best[n]}
           for n in runners]
    skip = {name: _infer_runner(padded, fast, work / "p.zarr", *DEFAULT_TILING, skip)
            for name, skip in (("constant tiles run", False), ("constant tiles skipped", True))}
    skip_best = best_interleaved(skip, repeat)
    padded_views = {}
    for name, run in skip.items():
        run()
        padded_views[name] = store.read(store.open_array(work / "p.zarr" / "xy"), (slice(None),) * 4)
    skip_report = {"shape": store.open_array(padded).shape, **skip_best,
                   "max_abs_diff": float(np.abs(padded_views["constant tiles run"]
                                                - padded_views["constant tiles skipped"]).max())}
    return out, skip_report


def _fastest_engine() -> tuple[str, bool]:
    return resolve_precision("auto", torch.device("cpu"))[0], True


def _fastest_name() -> str:
    precision, _ = _fastest_engine()
    return f"{precision} channels-last"


def _infer_runner(iso: Path, net, out: Path, tile: int, batch: int, skip_constant: bool = True,
                  balanced: bool = True):
    import shutil

    def run():
        shutil.rmtree(out, ignore_errors=True)
        with tiling(balanced):
            predict_views(iso, net, out, tile=tile, batch=batch, device="cpu", progress=False,
                          skip_constant=skip_constant)
    return run


# ---------------------------------------------------------------------------------------------
# 3. SEG


def seg_cases(work: Path) -> list[tuple[str, Path]]:
    chosen = [c for c in TEST_SETS if c[1] == 0]
    cases = [synthetic_case(work / "data", *c) for c in chosen + [LARGE_CASE]]
    if BBBC050.is_dir():
        cases.append(("bbbc050", BBBC050))
    return cases


def seg_section(work: Path) -> list[dict]:
    from mediar3d.evaluate import evaluate_frame_objects

    meta, rows = _meta(), []
    for case, folder in seg_cases(work):
        for t in _gt_frames(folder):
            image, gt, voxel_size = load_case(folder, t)
            for name, precision, channels_last, tile, batch, balanced in SEG_VARIANTS:
                name = variant_name(name)
                with tempfile.TemporaryDirectory(dir=work) as tmp, tiling(balanced):
                    settings = pipeline.Settings(tile=tile, batch=batch)
                    labels = pipeline.segment_frame(image, voxel_size, Path(tmp), settings,
                                                    model=network(precision, channels_last), meta=meta,
                                                    progress=False)
                metrics, _ = evaluate_frame_objects(labels, gt)
                rows.append({"case": f"{case} {'x'.join(map(str, image.shape))}", "t": t, "engine": name, "seg": metrics["seg"], "n_gt": metrics["n_gt"],
                             "n_pred": metrics["n_pred"]})
                print(rows[-1], flush=True)
    return rows


def _gt_frames(folder: Path) -> list[int]:
    return sorted(int(p.stem[-3:]) for p in (folder / "01_GT" / "SEG").glob("man_seg[0-9][0-9][0-9].tif"))


# ---------------------------------------------------------------------------------------------
# report


def report(args, forward, compile_seconds, infer_rows, skip, seg_rows, iso_shape) -> list[str]:
    import pandas as pd

    auto, why = resolve_precision("auto", torch.device("cpu"))
    seg = pd.DataFrame(seg_rows)
    wide = seg.pivot_table(index=["case", "t"], columns="engine", values="seg", sort=False)
    base = BEFORE
    change = wide.sub(wide[base], axis=0).drop(columns=base)
    shipped = [variant_name(SEG_VARIANTS[-1][0])]
    worst = float(change[shipped].abs().max().max())
    other = [name for name in change.columns if name not in shipped]
    default = [r for r in infer_rows if (r["tile"], r["batch"]) == DEFAULT_TILING]
    fastest = max(default, key=lambda r: r["speedup"])
    auto_row = next(r for r in infer_rows if r["variant"] == shipped[0])
    verdict = "PASS" if auto_row["speedup"] >= 2.0 and worst <= SEG_TOLERANCE else "FAIL"
    skip_ratio = skip["constant tiles run"] / skip["constant tiles skipped"]
    lines = [
        *header("bench_infer_engines: how the network runs on the CPU (speed and 3D SEG, one run)",
                f"; torch {torch.__version__}, {torch.get_num_threads()} torch threads; CPU flags: "
                f"amx_bf16={'amx_bf16' in cpu_flags()}, avx512_bf16={'avx512_bf16' in cpu_flags()}, "
                f"avx512f={'avx512f' in cpu_flags()}; `--precision auto` here: {auto} ({why}); "
                f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."),
        f"**Verdict: {verdict}.** The default (`--precision auto`: {_fastest_name()}; balanced tiles) runs the "
        f"infer stage {auto_row['speedup']:.2f}x as fast as fp32 eager with fixed tiles (the path before); the "
        "largest 3D SEG change of "
        f"{', '.join(shipped)} on any frame is {worst:.4f} (limit {SEG_TOLERANCE}). "
        + "".join(f"{name}: largest change {change[name].abs().max():.4f}, "
                  + ("kept out of the defaults. " if change[name].abs().max() > SEG_TOLERANCE else "within the limit. ")
                  for name in other),
        "",
        "## 1. Forward pass, batch 8 x 256 x 256, shipped model",
        "",
        pd.DataFrame(forward).round(4).to_markdown(index=False),
        "",
        (f"torch.compile's first call (compilation) took {compile_seconds:.0f} s, and it compiles again for every "
         "new input shape (three views, last batches): not worth it for one timepoint." if compile_seconds else
         "torch.compile not measured (--no-compile)."),
        "",
        f"## 2. The infer stage: three views of a {'x'.join(map(str, iso_shape))} iso volume",
        "",
        "Held-out synthetic zebrafish frame (seed 0, anisotropy 4, raw shape "
        f"{'x'.join(map(str, args.shape))}), resampled by the pipeline. Best of {args.repeat} interleaved runs. "
        "Fixed tiles: every axis longer than the tile edge cut into tiles of the full edge (mediar3d <= 0.1); "
        "balanced tiles: the smallest edge that covers the axis with as many tiles (`infer.balanced_tile`).",
        "",
        pd.DataFrame(infer_rows).round(3).to_markdown(index=False),
        "",
        f"Fastest at the default tile edge and batch: {fastest['variant']}.",
        "",
        f"Constant tiles: the centre of the same volume inside a background of one value ({'x'.join(map(str, skip['shape']))}): "
        f"{skip['constant tiles run']:.1f} s running every tile, {skip['constant tiles skipped']:.1f} s running "
        f"each constant tile once per value and shape ({skip_ratio:.2f}x); largest difference of the xy view "
        f"{skip['max_abs_diff']:.2e} (tests/test_infer_engines.py: identical masks).",
        "",
        "## 3. 3D SEG of the whole pipeline per engine (diameter estimated, as users run it)",
        "",
        wide.round(4).to_markdown(),
        "",
        f"Change from {base}:",
        "",
        change.round(4).to_markdown(),
        "",
    ]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[40, 320, 320], metavar=("Z", "Y", "X"),
                        help="raw shape of the synthetic frame of the speed test")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3],
                        help="run only these sections (the report needs all three)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "infer_engines")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="report path (e.g. bench/results/bench_infer_engines_amx.md for the other CPU kind)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    if 1 in args.sections:
        print("1. forward pass ...", flush=True)
        forward, compile_seconds = forward_section(args.repeat + 1, args.compile, args.work)
        print(forward, flush=True)
    if 2 in args.sections:
        print("2. infer stage ...", flush=True)
        iso = iso_volume(args.shape, args.work)
        from mediar3d.io import store

        iso_shape = store.open_array(iso).shape
        infer_rows, skip = infer_section(iso, padded_iso(iso, args.work), args.repeat, args.work)
        print(infer_rows, skip, flush=True)
    if 3 in args.sections:
        print("3. SEG ...", flush=True)
        seg_rows = seg_section(args.work)
    if set(args.sections) != {1, 2, 3}:
        return 0
    write_report(args.out, report(args, forward, compile_seconds, infer_rows, skip, seg_rows, iso_shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
