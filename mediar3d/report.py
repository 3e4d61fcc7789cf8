"""Plots over time and the self-contained HTML report of an aggregation.

- `plot_metrics(tp, dataset, sequence, path)`: every metric over time, one panel per metric, one line
  per method (PNG). `plot_counts(...)`: predicted vs GT object count over time (PNG).
- `read_benchmarks(dir)`: Snakemake `benchmark:` TSV files (columns s, max_rss, ...) -> runtime per
  stage. The stage is the file's first folder below `dir` (`benchmarks/<stage>/<job>.tsv`), or the file
  name up to its first "_" or "." when it lies directly in `dir`.
- `write_report(...)`: one HTML file with the tables, the plots embedded as base64 PNG, the stage
  runtimes, the model card (markdown rendered) and the config, with no external resource.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mediar3d.aggregate import ERRORS, SCORES, Aggregate, metric_columns
from mediar3d.errors import InputError
from mediar3d.io.atomic import atomic_path, write_text_atomic

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _pyplot().close(fig)
    return path


def plot_metrics(tp: pd.DataFrame, dataset: str, sequence: str, path: str | os.PathLike) -> Path:
    """PNG of every metric of one sequence over time (one panel per metric, one line per method)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    metrics = [m for m in metric_columns(tp) if m not in ("n_gt", "n_pred")]
    sub = tp[(tp["dataset"] == dataset) & (tp["sequence"] == sequence)]
    ncol = 4
    nrow = int(np.ceil(len(metrics) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.4 * nrow), squeeze=False, sharex=True)
    for ax, m in zip(axes.flat, metrics):
        for method, g in sub.groupby("method", sort=True):
            ax.plot(g["timepoint"], g[m], marker="o", ms=3, lw=1.2, label=method)
        ax.set_title(m, fontsize=10)
        if m in SCORES:
            ax.set_ylim(-0.02, 1.02)
        else:  # counts: from 0, at least 0..1
            top = float(np.nanmax(sub[m].to_numpy(float), initial=0.0))
            hi = max(1.0, 1.08 * top)
            ax.set_ylim(-0.04 * hi, hi)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[-1]:
        ax.set_xlabel("timepoint")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{dataset} / {sequence}: metrics over time")
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_counts(tp: pd.DataFrame, dataset: str, sequence: str, path: str | os.PathLike) -> Path:
    """PNG of the object count over time: GT and each method's prediction."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    sub = tp[(tp["dataset"] == dataset) & (tp["sequence"] == sequence)]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    gt = sub.groupby("timepoint")["n_gt"].first()
    ax.plot(gt.index, gt.values, "k--", marker="s", ms=3, lw=1.5, label="GT")
    for method, g in sub.groupby("method", sort=True):
        ax.plot(g["timepoint"], g["n_pred"], marker="o", ms=3, lw=1.2, label=method)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("timepoint")
    ax.set_ylabel("objects")
    ax.set_title(f"{dataset} / {sequence}: object count (prediction vs GT)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_all(tp: pd.DataFrame, out_dir: str | os.PathLike) -> list[tuple[str, Path]]:
    """Both plots for every (dataset, sequence); returns (title, path) pairs."""
    out = []
    for (dataset, sequence), _ in tp.groupby(["dataset", "sequence"], sort=True):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset}_{sequence}")
        out.append((f"{dataset} / {sequence}: metrics over time",
                    plot_metrics(tp, dataset, sequence, Path(out_dir) / f"{stem}_metrics.png")))
        if {"n_gt", "n_pred"} <= set(tp.columns):
            out.append((f"{dataset} / {sequence}: object count",
                        plot_counts(tp, dataset, sequence, Path(out_dir) / f"{stem}_counts.png")))
        log.info("plotted %s / %s", dataset, sequence)
    return out


# ---------------------------------------------------------------------------------------------
# Snakemake benchmarks


def read_benchmarks(bench_dir: str | os.PathLike) -> pd.DataFrame:
    """Runtime per stage from Snakemake benchmark TSVs: stage, jobs, total_s, mean_s, max_s,
    max_rss_mb (empty table when there are none)."""
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise InputError(bench_dir, "benchmark folder does not exist")
    records = []
    for path in sorted(bench_dir.rglob("*")):
        if not path.is_file() or path.suffix not in (".tsv", ".txt"):
            continue
        try:
            df = pd.read_csv(path, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise InputError(path, f"unreadable benchmark TSV ({err})") from err
        if "s" not in df.columns:
            raise InputError(path, "benchmark TSV lacks the column 's' (seconds)")
        rel = path.relative_to(bench_dir)
        stage = rel.parts[0] if len(rel.parts) > 1 else re.split(r"[_.]", path.name, maxsplit=1)[0]
        rss = pd.to_numeric(df.get("max_rss", pd.Series(dtype=float)), errors="coerce")
        records.append({"stage": stage, "s": float(pd.to_numeric(df["s"], errors="coerce").mean()),
                        "max_rss": float(rss.max()) if rss.notna().any() else np.nan})
    if not records:
        return pd.DataFrame(columns=["stage", "jobs", "total_s", "mean_s", "max_s", "max_rss_mb"])
    jobs = pd.DataFrame.from_records(records)
    g = jobs.groupby("stage", sort=True)
    return pd.DataFrame({
        "jobs": g.size(), "total_s": g["s"].sum(), "mean_s": g["s"].mean(), "max_s": g["s"].max(),
        "max_rss_mb": g["max_rss"].max(),
    }).reset_index()


# ---------------------------------------------------------------------------------------------
# markdown (model card) to HTML: headings, paragraphs, lists, code blocks, pipe tables, inline


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"(?<![*\w])\*([^*]+)\*(?!\*)", r"<em>\1</em>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)


def _table(lines: list[str]) -> str:
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    head, body = cells[0], [r for r in cells[2:]]
    out = ["<table>", "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join(out + ["</table>"])


def markdown_to_html(md: str) -> str:
    """A small markdown subset rendered to HTML (enough for model cards)."""
    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
        elif m := re.match(r"^(#{1,6})\s+(.*)", line):
            level = min(len(m.group(1)) + 2, 6)  # the report owns h1/h2
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|?[\s:|-]+\|?\s*$", lines[i + 1]):
            j = i
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append(_table(lines[i:j]))
            i = j
        elif re.match(r"^\s*([-*+]|\d+\.)\s+", line):
            tag = "ol" if re.match(r"^\s*\d+\.", line) else "ul"
            items = []
            while i < len(lines) and re.match(r"^\s*([-*+]|\d+\.)\s+", lines[i]):
                items.append(re.sub(r"^\s*([-*+]|\d+\.)\s+", "", lines[i]))
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                    items[-1] += " " + lines[i].strip()
                    i += 1
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + f"</{tag}>")
        elif line.strip():
            para = [line.strip()]
            i += 1
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|```|\s*([-*+]|\d+\.)\s|\s*\|)", lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
        else:
            i += 1
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #eef; } td { white-space: nowrap; } .scroll { overflow-x: auto; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #f8f8fb; }
pre { background: #f4f4f4; padding: .8em; overflow-x: auto; font-size: 12px; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; }
.meta { color: #666; font-size: 13px; }
nav a { margin-right: 1em; }
details { margin: .5em 0 1em; } summary { cursor: pointer; color: #335; }
figure { margin: 0 0 1em; } figcaption { color: #555; font-size: 13px; }
"""


def _number(v: float) -> str:
    if float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"


def _df_html(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>none</em></p>"
    table = df.to_html(index=False, border=0, na_rep="", float_format=_number, escape=True)
    return f'<div class="scroll">{table}</div>'


def _details(summary_line: str, content: str) -> str:
    return f"<details><summary>{html.escape(summary_line)}</summary>\n{content}\n</details>"


def compact_stats(stats: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Wide view of a long stats table: one row per group, 'mean ± std' of each score, the mean of
    each error count, and the worst SEG timepoints."""
    if stats.empty:
        return stats
    keep = stats[stats["metric"].isin(SCORES + ERRORS)].copy()
    keep["cell"] = [
        f"{mean:.3f} ± {std:.3f}" if metric in SCORES else f"{mean:.1f}"
        for metric, mean, std in zip(keep["metric"], keep["mean"], keep["std"])
    ]
    wide = keep.pivot(index=by, columns="metric", values="cell")
    wide = wide[[m for m in SCORES + ERRORS if m in wide.columns]]
    worst = stats[stats["metric"] == "seg"].set_index(by)["worst_timepoints"].rename("worst seg timepoints")
    return wide.join(worst).reset_index()


def _img(path: Path, title: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    t = html.escape(title)
    return f'<figure><img alt="{t}" src="data:image/png;base64,{data}"><figcaption>{t}</figcaption></figure>'


def render_report(
    agg: Aggregate,
    plots: list[tuple[str, Path]],
    config_text: str | None = None,
    model_card_md: str | None = None,
    runtimes: pd.DataFrame | None = None,
    title: str = "mediar3d report",
) -> str:
    """The report as one HTML string (no external resources)."""
    from mediar3d import __version__

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    datasets = ", ".join(sorted(agg.summary["dataset"].astype(str).unique()))
    sections = [
        ("summary", "Summary (means over timepoints; seg_pooled = CTC SEG over all GT objects)",
         _df_html(agg.summary)),
        ("plots", "Plots over time", "\n".join(_img(p, t) for t, p in plots) or "<p><em>none</em></p>"),
        ("datasets", "Per dataset", _df_html(compact_stats(agg.per_dataset, ["dataset", "method"]))
         + _details("all statistics (mean, median, std, min, max, worst timepoints)", _df_html(agg.per_dataset))),
        ("sequences", "Per sequence", _df_html(compact_stats(agg.per_sequence, ["dataset", "sequence", "method"]))
         + _details("all statistics (mean, median, std, min, max, worst timepoints)", _df_html(agg.per_sequence))),
        ("timepoints", "Per timepoint", _details(f"{len(agg.per_timepoint)} rows", _df_html(agg.per_timepoint))),
    ]
    if runtimes is not None:
        sections.append(("runtimes", "Stage runtimes (Snakemake benchmarks)", _df_html(runtimes)))
    if model_card_md is not None:
        sections.append(("model", "Model card", markdown_to_html(model_card_md)))
    if config_text is not None:
        sections.append(("config", "Configuration", f"<pre>{html.escape(config_text)}</pre>"))
    nav = " ".join(f'<a href="#{sid}">{html.escape(h.split(" (")[0])}</a>' for sid, h, _ in sections)
    body = "\n".join(f'<section id="{sid}"><h2>{html.escape(h)}</h2>\n{content}</section>'
                     for sid, h, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f'<p class="meta">mediar3d {html.escape(__version__)} &middot; generated {now} &middot; '
        f"datasets: {html.escape(datasets)} &middot; {len(agg.rows)} evaluated GT files</p>\n"
        f"<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )


def write_report(path: str | os.PathLike, html_text: str) -> Path:
    """Write the report atomically."""
    return write_text_atomic(path, html_text)
