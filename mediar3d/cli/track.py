"""`mediar3d track (--res MASK_DIR | --masks MASK ...) [--out RES_DIR]`: make per-frame masks a valid CTC
result (track ids consistent over time, `res_track.txt` with lineage). All or nothing: on any error no
mask is changed and no result folder is left."""

from __future__ import annotations

import argparse
from pathlib import Path

from mediar3d.io.ctc import RESULT_FOLDER

OUTPUTS = {"out": RESULT_FOLDER}
INPUTS = ("res", "masks")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--res", type=Path, help="folder of per-frame masks maskTTT.tif (all of them are linked)")
    source.add_argument("--masks", type=Path, nargs="+", metavar="MASK",
                        help="the per-frame masks maskTTT.tif to link (exactly these; the workflow passes them)")
    parser.add_argument("--out", type=Path, help="CTC RES folder to write (default: relabel the masks in place)")
    parser.add_argument("--on-missing-frame", choices=["error", "skip"], default="error",
                        help="frames missing between the first and last mask stop (error) or are skipped: no "
                        "track spans them (skip)")


def run(args: argparse.Namespace) -> int:
    from mediar3d.io.ctc import masks_by_timepoint
    from mediar3d.tracking import track_masks, track_res_folder

    allow_gaps = args.on_missing_frame == "skip"
    if args.masks is not None:
        tracks = track_masks(masks_by_timepoint(args.masks), args.out, allow_gaps)
    else:
        tracks = track_res_folder(args.res, args.out, allow_gaps)
    print(f"wrote {tracks}")
    return 0
