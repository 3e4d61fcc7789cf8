"""The `mediar3d` command: one subcommand per pipeline stage.

Each subcommand lives in `mediar3d/cli/<module>.py`, which defines `add_arguments(parser)` and
`run(args) -> int`, and declares its paths: `OUTPUTS` (argument -> `mediar3d.io.atomic.Kind`) and
`INPUTS` (argument names). Before a stage runs, every output is checked against its kind and
against every input (`check_paths`), so a bad output path stops it before any work. Only the chosen
subcommand's module is imported, so `mediar3d --help` is fast and a stage's heavy dependencies
(torch) load only when that stage runs.

Bad input, a bad configuration and a failing file system (disk full, no permission) are one line
`mediar3d STAGE: error: PATH: problem` and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from pathlib import Path

from mediar3d import __version__
from mediar3d.errors import ConfigError, InputError

#: subcommand -> (module under mediar3d.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("synth", "make a synthetic 3D+t dataset in Cell Tracking Challenge layout"),
    "info": ("info", "list the sequences, frames, GT and voxel sizes of a CTC dataset or OME-Zarr"),
    "to-omezarr": ("omezarr", "convert a CTC sequence (and its GT) to OME-Zarr"),
    "train": ("train", "train the 2D MEDIAR network on xy/xz/yz slices of annotated volumes"),
    "import-mediar": ("import_mediar", "convert MEDIAR's own weights (.pth) into a mediar3d checkpoint"),
    "average-weights": ("average", "average the weights of checkpoints fine-tuned from one initialization"),
    "resample": ("resample", "normalize a frame and resample it to isotropic voxels (zarr)"),
    "infer": ("infer", "run the 2D network on every xy, xz and yz slice (zarr)"),
    "fuse": ("fuse", "fuse the three views into one (dz, dy, dx, prob) flow field (zarr)"),
    "reconstruct": ("reconstruct", "follow the 3D flows to instance masks (dask-parallel)"),
    "segment": ("segment", "one-shot: segment a CTC sequence or OME-Zarr into CTC masks"),
    "track": ("track", "link the masks of a result folder over time into a valid CTC RES folder"),
    "evaluate": ("evaluate", "score CTC result masks against CTC ground truth"),
    "aggregate": ("aggregate", "tables, plots and an HTML report across timepoints"),
}


#: column of the subcommands' help in `mediar3d --help`
_NAME_WIDTH = max(map(len, COMMANDS))


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
        epilog="stages:\n" + "\n".join(f"  {n:<{_NAME_WIDTH}} {h}" for n, (_, h) in COMMANDS.items())
        + "\n\n'mediar3d STAGE --help' shows a stage's options.",
    )
    parser.add_argument("--version", action="version", version=f"mediar3d {__version__}")
    parser.add_argument("stage", choices=sorted(COMMANDS), metavar="STAGE", help="pipeline stage to run")
    return parser


def _paths(value) -> list[Path]:
    if value is None:
        return []
    return [Path(v) for v in value] if isinstance(value, (list, tuple)) else [Path(value)]


def check_paths(args: argparse.Namespace, module) -> None:
    """Refuse, before any work, an output that its kind may not replace or that collides with an
    input (`mediar3d.io.atomic.check_output`)."""
    from mediar3d.io.atomic import check_output

    inputs = [p for name in getattr(module, "INPUTS", ()) for p in _paths(getattr(args, name, None))]
    for name, kind in getattr(module, "OUTPUTS", {}).items():
        for path in _paths(getattr(args, name, None)):
            check_output(path, kind, inputs)


#: errno values that mean the disk is full
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def describe_os_error(err: OSError) -> str:
    """'PATH: what failed' for an error of the file system (disk full, no permission, ...)."""
    where = f"{err.filename}: " if err.filename else ""
    what = err.strerror or str(err)
    if err.errno in _DISK_FULL:
        what += " (disk full or file size limit: free space or write elsewhere; nothing was left half-written)"
    return where + what


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
        check_paths(args, module)
        return int(module.run(args) or 0)
    except (InputError, ConfigError) as err:
        print(f"mediar3d {argv[0]}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"mediar3d {argv[0]}: error: {describe_os_error(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
