"""Aggregate per-timepoint metric rows (from `mediar3d evaluate --out`) across time series.

Input rows: one per GT file with the columns dataset, sequence, timepoint, method and the metrics of
`mediar3d.evaluate.METRIC_KEYS` (a `z` column marks single-slice GT). Several rows of one timepoint
(several annotated slices) are first combined into one: ratios averaged, counts summed.

Outputs (pandas DataFrames, written as CSV by `write_tables`):

- per_timepoint: one row per (dataset, sequence, method, timepoint);
- per_sequence / per_dataset: long tables, one row per (group, metric) with n, mean, median, std, min,
  max and the worst timepoints (lowest for scores, highest for error counts);
- summary: one row per (dataset, method): the means of the main metrics and the SEG pooled over all
  GT objects (as the CTC computes it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mediar3d.errors import InputError
from mediar3d.evaluate import METRIC_KEYS
from mediar3d.io.atomic import write_csv_atomic

log = logging.getLogger(__name__)

KEYS = ["dataset", "sequence", "method"]
#: scores in [0, 1], higher is better
SCORES = ["seg", "ap50", "ap75", "ap90", "precision", "recall", "f1"]
#: error counts, lower is better
ERRORS = ["fp", "fn", "splits", "merges", "missed", "false_positives"]
#: other counts
COUNTS = ["tp", "n_gt", "n_pred"]
SUMMARY_METRICS = ["seg", "ap50", "ap75", "ap90", "precision", "recall", "f1", "n_gt", "n_pred"]
N_WORST = 3


def load_metrics(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate metric CSVs; every file needs dataset, sequence, timepoint, method and seg."""
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "metrics file does not exist")
        try:
            df = pd.read_csv(path, dtype={"dataset": str, "sequence": str, "method": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise InputError(path, f"unreadable metrics CSV ({err})") from err
        missing = [c for c in [*KEYS, "timepoint", "seg"] if c not in df.columns]
        if missing:
            raise InputError(path, f"metrics CSV lacks the columns {missing}")
        frames.append(df)
    if not frames:
        raise InputError(None, "no metrics files given")
    rows = pd.concat(frames, ignore_index=True)
    rows["timepoint"] = rows["timepoint"].astype(int)
    return rows


def metric_columns(rows: pd.DataFrame) -> list[str]:
    """The metric columns present, in `METRIC_KEYS` order."""
    return [k for k in METRIC_KEYS if k in rows.columns]


def per_timepoint(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, sequence, method, timepoint); several GT slices of a timepoint are
    combined (SEG weighted by GT objects, other ratios averaged, counts summed)."""
    metrics = metric_columns(rows)
    group = rows.groupby([*KEYS, "timepoint"], sort=True)
    agg = {m: ("sum" if m in ERRORS + COUNTS else "mean") for m in metrics}
    out = group.agg(agg)
    if "n_gt" in rows.columns and len(out) < len(rows):
        weighted = (rows["seg"] * rows["n_gt"]).groupby([rows[k] for k in [*KEYS, "timepoint"]]).sum()
        pooled = weighted / out["n_gt"].where(out["n_gt"] > 0)
        out["seg"] = pooled.reindex(out.index)
    out["n_gt_files"] = group.size()
    return out.reset_index()


def _worst(tp: pd.DataFrame, metric: str) -> str:
    """The N_WORST worst timepoints of one group for one metric, as 't=5 (0.61); ...'."""
    if metric not in SCORES + ERRORS:
        return ""
    values = tp[["timepoint", metric]].dropna()
    values = values.sort_values([metric, "timepoint"], ascending=[metric in SCORES, True])
    fmt = "{:.4f}" if metric in SCORES else "{:.0f}"
    return "; ".join(f"t={int(t)} ({fmt.format(v)})" for t, v in values.head(N_WORST).itertuples(index=False))


def group_stats(tp: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Long table: one row per (group, metric) with n, mean, median, std, min, max, worst_timepoints."""
    metrics = metric_columns(tp)
    records = []
    for key, sub in tp.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            v = sub[m].astype(float)
            records.append({
                **dict(zip(by, key)), "metric": m, "n": int(v.notna().sum()), "mean": v.mean(),
                "median": v.median(), "std": v.std(ddof=0), "min": v.min(), "max": v.max(),
                "worst_timepoints": _worst(sub, m),
            })
    return pd.DataFrame.from_records(records)


def summary(tp: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, method): timepoints, pooled SEG and the means of the main metrics."""
    records = []
    for (dataset, method), sub in tp.groupby(["dataset", "method"], sort=True):
        rec = {"dataset": dataset, "method": method, "sequences": sub["sequence"].nunique(),
               "timepoints": len(sub)}
        if "n_gt" in sub.columns:
            n = sub["n_gt"].astype(float)
            ok = n > 0
            rec["seg_pooled"] = float((sub["seg"][ok] * n[ok]).sum() / n[ok].sum()) if ok.any() else np.nan
        for m in SUMMARY_METRICS:
            if m in sub.columns:
                rec[m] = float(sub[m].astype(float).mean())
        records.append(rec)
    return pd.DataFrame.from_records(records)


@dataclass
class Aggregate:
    """All tables of one aggregation."""

    rows: pd.DataFrame
    per_timepoint: pd.DataFrame
    per_sequence: pd.DataFrame
    per_dataset: pd.DataFrame
    summary: pd.DataFrame


def aggregate(rows: pd.DataFrame) -> Aggregate:
    """Build every table from the per-GT-file rows."""
    tp = per_timepoint(rows)
    log.info("aggregating %d rows: %d timepoints of %d sequences in %d datasets, methods %s", len(rows),
             len(tp), tp.groupby(["dataset", "sequence"]).ngroups, tp["dataset"].nunique(),
             sorted(tp["method"].unique()))
    return Aggregate(rows, tp, group_stats(tp, KEYS), group_stats(tp, ["dataset", "method"]), summary(tp))


def write_tables(agg: Aggregate, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write per_timepoint.csv, per_sequence.csv, per_dataset.csv, summary.csv (atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in ["per_timepoint", "per_sequence", "per_dataset", "summary"]:
        path = out_dir / f"{name}.csv"
        written[name] = write_csv_atomic(getattr(agg, name), path)
    return written
