"""`mediar3d average-weights CKPT CKPT [...] --out CKPT`: one checkpoint whose weights are the mean of
several fine-tuned from the same initialization (a "model soup"; see mediar3d.train.average). It runs
at the cost of one network; choose its probability threshold on validation volumes afterwards
(`bench/tune_postprocess.py --model OUT --write`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mediar3d.io.atomic import FILE

OUTPUTS = {"out": FILE}
INPUTS = ("checkpoints",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", type=Path, nargs="+", metavar="CKPT",
                        help="two or more mediar3d checkpoints of one network (same encoder, decoder, input planes, "
                        "normalization, training diameter), fine-tuned from the same weights")
    parser.add_argument("--out", required=True, type=Path, metavar="CKPT", help="checkpoint to write (.pt)")


def run(args: argparse.Namespace) -> int:
    from mediar3d.train.average import average_checkpoints

    average_checkpoints(args.checkpoints, args.out)
    return 0
