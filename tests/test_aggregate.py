"""Tests of mediar3d.aggregate, mediar3d.report and `mediar3d aggregate`: table values on hand data,
benchmark parsing, a structural check of the HTML report and (when Chromium is installed) a headless
rendering of it."""

from __future__ import annotations

import base64
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mediar3d.aggregate import aggregate, load_metrics, per_timepoint
from mediar3d.cli import main
from mediar3d.errors import InputError
from mediar3d.evaluate import METRIC_KEYS
from mediar3d.report import compact_stats, markdown_to_html, read_benchmarks

CHROMIUM = Path("/usr/bin/chromium")


def rows_for(dataset: str, sequence: str, method: str, segs: list[float], n_gt: int = 10) -> list[dict]:
    out = []
    for t, s in enumerate(segs):
        r = {k: s for k in METRIC_KEYS}
        r.update(dataset=dataset, sequence=sequence, timepoint=t, method=method, z=None,
                 n_gt=n_gt, n_pred=n_gt + t, tp=8, fp=t, fn=2, splits=t % 2, merges=0, missed=1,
                 false_positives=t)
        out.append(r)
    return out


def demo_rows() -> pd.DataFrame:
    return pd.DataFrame(
        rows_for("dsA", "01", "mediar3d", [0.9, 0.8, 0.7, 1.0])
        + rows_for("dsA", "02", "mediar3d", [0.6, 0.5])
        + rows_for("dsA", "01", "classical", [0.4, 0.3, 0.2, 0.5])
        + rows_for("dsB", "01", "mediar3d", [0.75], n_gt=4)
    )


def test_per_sequence_and_dataset_statistics():
    agg = aggregate(demo_rows())
    seq = agg.per_sequence.set_index(["dataset", "sequence", "method", "metric"])
    r = seq.loc[("dsA", "01", "mediar3d", "seg")]
    assert r["n"] == 4 and r["mean"] == pytest.approx(0.85) and r["median"] == pytest.approx(0.85)
    assert r["std"] == pytest.approx(np.std([0.9, 0.8, 0.7, 1.0])) and r["min"] == pytest.approx(0.7)
    assert r["worst_timepoints"] == "t=2 (0.7000); t=1 (0.8000); t=0 (0.9000)"
    # error counts: worst = highest
    assert seq.loc[("dsA", "01", "mediar3d", "false_positives"), "worst_timepoints"] == "t=3 (3); t=2 (2); t=1 (1)"
    assert seq.loc[("dsA", "01", "mediar3d", "n_gt"), "worst_timepoints"] == ""
    ds = agg.per_dataset.set_index(["dataset", "method", "metric"])
    assert ds.loc[("dsA", "mediar3d", "seg"), "mean"] == pytest.approx(np.mean([0.9, 0.8, 0.7, 1.0, 0.6, 0.5]))
    assert ds.loc[("dsA", "mediar3d", "seg"), "n"] == 6
    summ = agg.summary.set_index(["dataset", "method"])
    assert summ.loc[("dsA", "mediar3d"), "sequences"] == 2
    assert summ.loc[("dsA", "mediar3d"), "timepoints"] == 6
    assert summ.loc[("dsB", "mediar3d"), "seg_pooled"] == pytest.approx(0.75)
    assert list(summ.index.get_level_values("method").unique()) == ["classical", "mediar3d"]


def test_slices_of_one_timepoint_are_combined():
    rows = pd.DataFrame(rows_for("d", "01", "m", [0.5]) + rows_for("d", "01", "m", [1.0], n_gt=30))
    rows["z"] = [3, 9]
    tp = per_timepoint(rows)
    assert len(tp) == 1 and tp.loc[0, "n_gt_files"] == 2
    assert tp.loc[0, "seg"] == pytest.approx((0.5 * 10 + 1.0 * 30) / 40)  # pooled over GT objects
    assert tp.loc[0, "n_gt"] == 40 and tp.loc[0, "ap50"] == pytest.approx(0.75)


def test_load_metrics_checks_files(tmp_path):
    good = tmp_path / "good.csv"
    demo_rows().to_csv(good, index=False)
    bad = tmp_path / "bad.csv"
    demo_rows().drop(columns=["method"]).to_csv(bad, index=False)
    assert len(load_metrics([good])) == 11
    with pytest.raises(InputError, match=r"bad\.csv: metrics CSV lacks the columns \['method'\]"):
        load_metrics([good, bad])
    with pytest.raises(InputError, match="does not exist"):
        load_metrics([tmp_path / "nope.csv"])


def write_bench(path: Path, seconds: float, rss: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t{seconds}\n")


def test_read_benchmarks(tmp_path):
    write_bench(tmp_path / "infer" / "a_01_000.tsv", 10.0, 100.0)
    write_bench(tmp_path / "infer" / "a_01_001.tsv", 14.0, 300.0)
    write_bench(tmp_path / "fuse_a_01_000.tsv", 2.0, 50.0)
    rt = read_benchmarks(tmp_path).set_index("stage")
    assert rt.loc["infer", "jobs"] == 2 and rt.loc["infer", "total_s"] == pytest.approx(24)
    assert rt.loc["infer", "max_s"] == pytest.approx(14) and rt.loc["infer", "max_rss_mb"] == pytest.approx(300)
    assert rt.loc["fuse", "mean_s"] == pytest.approx(2)
    (tmp_path / "broken.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match=r"broken\.tsv.*'s'"):
        read_benchmarks(tmp_path)


def test_markdown_subset():
    out = markdown_to_html("# Card\n\nSome **bold** and `code` <b>.\nmore\n\n- a\n- b\n\n"
                           "| k | v |\n|---|---|\n| x | 1 |\n\n```\nraw <x>\n```\n")
    assert "<h3>Card</h3>" in out
    assert "<p>Some <strong>bold</strong> and <code>code</code> &lt;b&gt;. more</p>" in out
    assert "<ul><li>a</li><li>b</li></ul>" in out
    assert "<th>k</th>" in out and "<td>1</td>" in out
    assert "<pre>raw &lt;x&gt;</pre>" in out


def test_compact_stats_is_one_row_per_group():
    agg = aggregate(demo_rows())
    wide = compact_stats(agg.per_sequence, ["dataset", "sequence", "method"])
    assert len(wide) == 4
    row = wide.set_index(["dataset", "sequence", "method"]).loc[("dsA", "01", "mediar3d")]
    assert row["seg"] == f"0.850 ± {np.std([0.9, 0.8, 0.7, 1.0]):.3f}"
    assert row["worst seg timepoints"].startswith("t=2 (0.7000)")


class _Structure(HTMLParser):
    """Collects tags, checks nesting, and gathers ids, images and external references."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.ids, self.images, self.external, self.tags = [], set(), [], [], []
        self.errors = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("agg")
    rows = demo_rows()
    rows[rows["dataset"] == "dsA"].to_csv(tmp / "a.csv", index=False)
    rows[rows["dataset"] == "dsB"].to_csv(tmp / "b.csv", index=False)
    write_bench(tmp / "bench" / "infer" / "x.tsv", 3.0, 10.0)
    (tmp / "card.md").write_text("# Default model\n\nTrained on **synthetic** data.\n")
    (tmp / "config.yaml").write_text("method: mediar3d\nthreshold: <0.5>\n")
    rc = main(["aggregate", "--metrics", str(tmp / "a.csv"), str(tmp / "b.csv"), "--out", str(tmp / "out"),
               "--config", str(tmp / "config.yaml"), "--benchmarks", str(tmp / "bench"),
               "--model-card", str(tmp / "card.md")])
    assert rc == 0
    return tmp / "out"


def test_cli_writes_tables_plots_and_report(report_dir, capsys):
    for name in ["per_timepoint", "per_sequence", "per_dataset", "summary"]:
        assert (report_dir / f"{name}.csv").is_file()
    assert len(pd.read_csv(report_dir / "summary.csv")) == 3
    pngs = sorted(p.name for p in (report_dir / "plots").glob("*.png"))
    assert pngs == ["dsA_01_counts.png", "dsA_01_metrics.png", "dsA_02_counts.png", "dsA_02_metrics.png",
                    "dsB_01_counts.png", "dsB_01_metrics.png"]


def test_report_html_structure(report_dir):
    text = (report_dir / "report.html").read_text(encoding="utf-8")
    parser = _Structure()
    parser.feed(text)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    assert text.startswith("<!DOCTYPE html>") and "<title>mediar3d report</title>" in text
    assert {"summary", "plots", "datasets", "sequences", "timepoints", "runtimes", "model", "config"} <= parser.ids
    assert parser.external == []  # self-contained
    assert len(parser.images) == 6
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "threshold: &lt;0.5&gt;" in text  # config shown, escaped
    assert "<strong>synthetic</strong>" in text  # model card rendered
    assert re.search(r"<td>infer</td>\s*<td>1</td>", text)  # runtimes table
    assert parser.tags.count("table") >= 7


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed")
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={shot}",
           (report_dir / "report.html").as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    for bad in ("net::ERR", "Uncaught", "Failed to load", "Not allowed to load"):
        assert bad not in log
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (1600, 1200)
    # matplotlib's first two line colours (blue, orange) prove the embedded plots were drawn
    blue = (abs(img[..., 0] - 31) < 30) & (abs(img[..., 1] - 119) < 30) & (abs(img[..., 2] - 180) < 30)
    orange = (img[..., 0] > 220) & (abs(img[..., 1] - 127) < 30) & (img[..., 2] < 60)
    assert blue.sum() > 200 and orange.sum() > 200
