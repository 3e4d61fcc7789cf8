"""The `mediar3d` command: one subcommand per pipeline stage.

Each subcommand lives in `mediar3d/cli/<module>.py`, which defines `add_arguments(parser)` and
`run(args) -> int`. Only the chosen subcommand's module is imported, so `mediar3d --help` is fast
and a stage's heavy dependencies (torch) load only when that stage runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mediar3d import __version__
from mediar3d.errors import ConfigError, InputError

#: subcommand -> (module under mediar3d.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("synth", "make a synthetic 3D+t dataset in Cell Tracking Challenge layout"),
    "info": ("info", "list the sequences, frames, GT and voxel sizes of a CTC dataset or OME-Zarr"),
    "to-omezarr": ("omezarr", "convert a CTC sequence (and its GT) to OME-Zarr"),
    "train": ("train", "train the 2D MEDIAR network on xy/xz/yz slices of annotated volumes"),
    "resample": ("resample", "normalize a frame and resample it to isotropic voxels (zarr)"),
    "infer": ("infer", "run the 2D network on every xy, xz and yz slice (zarr)"),
    "fuse": ("fuse", "fuse the three views into one (dz, dy, dx, prob) flow field (zarr)"),
    "reconstruct": ("reconstruct", "follow the 3D flows to instance masks (dask-parallel)"),
    "segment": ("segment", "one-shot: segment a CTC sequence or OME-Zarr into CTC masks"),
    "track": ("track", "link the masks of a result folder over time into a valid CTC RES folder"),
    "evaluate": ("evaluate", "score CTC result masks against CTC ground truth"),
    "aggregate": ("aggregate", "tables, plots and an HTML report across timepoints"),
}


def _parser_for(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(f"mediar3d.cli.{module_name}")
    parser = argparse.ArgumentParser(prog=f"mediar3d {name}", description=help_text)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.add_arguments(parser)
    return parser, module


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediar3d",
        description="3D+t cell segmentation with MEDIAR on three reslice views.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="stages:\n" + "\n".join(f"  {n:<12} {h}" for n, (_, h) in COMMANDS.items())
        + "\n\n'mediar3d STAGE --help' shows a stage's options.",
    )
    parser.add_argument("--version", action="version", version=f"mediar3d {__version__}")
    parser.add_argument("stage", choices=sorted(COMMANDS), metavar="STAGE", help="pipeline stage to run")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mediar3d` console command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv or ["--help"])
        return 2
    parser, module = _parser_for(argv[0])
    args = parser.parse_args(argv[1:])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(module.run(args) or 0)
    except (InputError, ConfigError) as err:
        print(f"mediar3d {argv[0]}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
