"""`mediar3d aggregate`: tables per sequence and dataset, plots over time and one HTML report.

Writes into OUT_DIR: per_timepoint.csv, per_sequence.csv, per_dataset.csv, summary.csv,
plots/<dataset>_<sequence>_{metrics,counts}.png and report.html; prints the summary table and the
report path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mediar3d.errors import InputError
from mediar3d.io.atomic import INTO

OUTPUTS = {"out": INTO}
INPUTS = ("metrics", "config", "benchmarks", "model_card")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", required=True, nargs="+", type=Path, metavar="CSV",
                        help="per-timepoint metric CSVs written by `mediar3d evaluate --out`")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--config", type=Path, metavar="YAML", help="run configuration shown in the report")
    parser.add_argument("--benchmarks", type=Path, metavar="DIR",
                        help="Snakemake benchmark TSVs (DIR/<stage>/<job>.tsv) for the stage runtimes")
    parser.add_argument("--model-card", type=Path, metavar="MD", help="model card (markdown) shown in the report")
    parser.add_argument("--title", default="mediar3d report", help="report title")


def _read_text(path: Path | None) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise InputError(path, "file does not exist")
    return path.read_text(encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    from mediar3d.aggregate import aggregate, load_metrics, write_tables
    from mediar3d.report import plot_all, read_benchmarks, render_report, write_report

    config_text, card = _read_text(args.config), _read_text(args.model_card)
    runtimes = read_benchmarks(args.benchmarks) if args.benchmarks is not None else None
    agg = aggregate(load_metrics(args.metrics))
    write_tables(agg, args.out)
    plots = plot_all(agg.per_timepoint, args.out / "plots")
    report = write_report(args.out / "report.html",
                          render_report(agg, plots, config_text, card, runtimes, title=args.title))
    print(agg.summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"report: {report}")
    return 0
