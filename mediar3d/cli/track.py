"""`mediar3d track --res MASK_DIR [--out RES_DIR]`: make a folder of maskTTT.tif a valid CTC result
(track ids consistent over time, `res_track.txt` with lineage)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mediar3d.tracking import track_res_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--res", type=Path, required=True, help="folder of per-frame masks maskTTT.tif")
    parser.add_argument("--out", type=Path, help="CTC RES folder to write (default: relabel --res in place)")


def run(args: argparse.Namespace) -> int:
    tracks = track_res_folder(args.res, args.out)
    print(f"wrote {tracks}")
    return 0
