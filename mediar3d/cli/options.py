"""The pipeline's options, declared once for every command that takes them (`resample`, `infer`,
`reconstruct`, `segment`): flags, help and defaults come from `mediar3d.pipeline.Settings`, so a
command's default is the setting's default and the workflow schema's (tests/test_pipeline.py)."""

from __future__ import annotations

import argparse
from dataclasses import fields, replace

from mediar3d.pipeline import BOUNDARIES, DEVICES, METHODS, PRECISIONS, Settings

_D = Settings()


def _spec(name: str) -> tuple[tuple, dict]:
    """(flags, argparse keywords) of one setting."""
    d = _D
    specs = {
        "method": (("--method",), dict(choices=METHODS, help=f"segmentation method (default {d.method})")),
        "percentiles": (("--percentiles",), dict(type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="normalization percentiles (default: the checkpoint's, else 1 99.8)")),
        "diameter": (("--diameter",), dict(metavar="UM|auto|none",
                     help="typical object diameter in um, rescaled to the model's training diameter; 'auto' "
                     f"estimates it per frame from the image and the network, 'none' does not rescale "
                     f"(default {d.diameter})")),
        "max_gib": (("--max-gib",), dict(type=float, metavar="GIB",
                    help=f"refuse an isotropic volume larger than this (GiB of float32; default {d.max_gib:g}): "
                    "an absurd voxel size stops here instead of filling the disk")),
        "tile": (("--tile",), dict(type=int, help=f"largest tile edge in pixels, a multiple of 32 (default {d.tile}); each slice axis takes the smallest edge that covers it with as many tiles")),
        "overlap": (("--overlap",), dict(type=float,
                    help=f"tile overlap as a fraction of the tile (default {d.overlap})")),
        "batch": (("--batch",), dict(type=int, help=f"tiles per network batch (default {d.batch})")),
        "tta": (("--tta",), dict(action="store_true", help="flip test-time augmentation (4x slower)")),
        "device": (("--device",), dict(choices=DEVICES, help="where the network runs (auto: CUDA when available)")),
        "precision": (("--precision",), dict(choices=PRECISIONS,
                      help="the network's arithmetic (default auto: fp16 on CUDA, bf16 on a CPU with native bf16 "
                      "units (AMX, AVX-512 BF16), else fp32)")),
        "prob_threshold": (("--prob-threshold",), dict(type=float,
                           help="foreground probability threshold (default: the model's calibrated one, else 0.5)")),
        "min_size": (("--min-size",), dict(type=int, metavar="N",
                     help="drop objects below N voxels of the iso grid (default: from the object diameter)")),
        "boundary": (("--boundary",), dict(choices=BOUNDARIES,
                     help="back on the original grid, object boundaries come from the interpolated probability "
                     "(default) or from the iso labels by nearest neighbour")),
        "block": (("--block",), dict(type=int, nargs=3, metavar=("Z", "Y", "X"),
                  help=f"dask block size in iso voxels (default {' '.join(map(str, d.block))})")),
        "workers": (("--workers",), dict(type=int, metavar="N",
                    help="parallel reconstruction workers (default: all cores)")),
    }
    return specs[name]


def add_settings(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the options of these `Settings` fields, with the dataclass's defaults."""
    for name in names:
        flags, kwargs = _spec(name)
        if kwargs.get("action") != "store_true":
            kwargs["default"] = getattr(_D, name)
        parser.add_argument(*flags, dest=name, **kwargs)


def settings_from_args(args: argparse.Namespace, **overrides) -> Settings:
    """`Settings` from the parsed options (settings a command does not take keep their defaults)."""
    from mediar3d.size import parse_diameter

    given = {f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)}
    if "diameter" in given:
        given["diameter"] = parse_diameter(given["diameter"])
    for name in ("percentiles", "block"):
        if given.get(name) is not None:
            given[name] = tuple(given[name])
    return replace(Settings(), **{**given, **overrides})


def add_voxel_size(parser: argparse.ArgumentParser) -> None:
    """--voxel-size Z Y X (um), overriding the files' metadata."""
    parser.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="voxel size in um (default: from the files' metadata or dataset.json)")


def add_threads(parser: argparse.ArgumentParser) -> None:
    """--threads N: torch CPU threads of the network."""
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")


def add_model(parser: argparse.ArgumentParser, required: bool, help_text: str) -> None:
    """--model SPEC, repeatable: a checkpoint or `cellpose:NAME|PATH`; given more than once, an ensemble
    that averages the networks' outputs (mediar3d.backends). `args.model` is a list of specs or None."""
    parser.add_argument("--model", action="append", metavar="CKPT|cellpose:NAME", required=required,
                        help=help_text + "; cellpose:NAME|PATH runs a Cellpose model (weights from PATH or the "
                        "Cellpose model folder); repeat --model for an ensemble that averages the networks' outputs")


def add_scheduler(parser: argparse.ArgumentParser) -> None:
    """--scheduler ADDRESS: the mediar3d method's flow following on a dask.distributed cluster."""
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="dask.distributed scheduler address (tcp://host:8786) whose workers follow the flows of "
                        "the mediar3d method, block by block; they must see the input at the same path. Labels are "
                        "identical to the default (dask threads in this process, --workers of them)")
