"""`mediar3d info PATH [--json OUT]`: what a CTC dataset / sequence or an OME-Zarr image holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mediar3d.io.atomic import FILE

OUTPUTS = {"json": FILE}
INPUTS = ("path",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="CTC dataset folder, CTC sequence folder (<dataset>/01) or OME-Zarr image")
    parser.add_argument("--json", type=Path, help="also write the description as JSON here")
    parser.add_argument("--on-missing-frame", choices=["error", "skip"], default="error",
                        help="a gap in the frame numbering stops (error) or is skipped with a warning")


def run(args: argparse.Namespace) -> int:
    from mediar3d.io.frames import describe

    info = describe(args.path, args.on_missing_frame)
    if args.json:
        from mediar3d.io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(info, indent=1))
    print(f"{info['kind']}: {info['root']}")
    for name, seq in info["sequences"].items():
        tps = seq["timepoints"]
        gt = seq.get("gt_full", [])
        print(f"  sequence {name}: {len(tps)} frames ({tps[0]}..{tps[-1]}), voxel size (z,y,x) um: "
              f"{seq.get('voxel_size_zyx_um', info.get('voxel_size_zyx_um'))}, full 3D GT frames: {gt}, "
              f"single-slice GT frames: {sorted(seq.get('gt_slices', {}))}")
    return 0
