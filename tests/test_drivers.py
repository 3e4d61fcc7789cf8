"""The two drivers of the pipeline give the same masks: `mediar3d segment` (all stages in one
process) and the Snakemake workflow (one `mediar3d <stage>` command per job) on the same synthetic
frames, with the shipped checkpoint and the same settings, write bit-identical CTC result folders
(masks and res_track.txt), for each method. The masks must hold objects: identical empty masks
would say nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from mediar3d.model import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[1]
FRAMES = 2
#: the same settings for both drivers: as the workflow's config, and as `segment`'s options
INFER = {"tile": 64, "batch": 4}
SEGMENT_OPTIONS = ["--tile", "64", "--batch", "4", "--workers", "1", "--threads", "1", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"no shipped checkpoint at {DEFAULT_MODEL}")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A 2-frame synthetic CTC dataset of the `tiny` preset."""
    root = tmp_path_factory.mktemp("drivers") / "tiny"
    subprocess.run([sys.executable, "-m", "mediar3d", "synth", "--preset", "tiny", "--seed", "7", "--frames",
                    str(FRAMES), "--out", str(root)], check=True, capture_output=True, timeout=300, env=ENV)
    return root


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1200, env=ENV)
    if proc.returncode:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted(cwd.rglob("logs/**/*.log"))[-4:])
        pytest.fail(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}\n{logs}")


def _workflow(dataset: Path, work: Path, method: str) -> Path:
    config = {"out": str(work / "out"), "model": str(DEFAULT_MODEL), "method": method, "device": "cpu",
              "omezarr": False, "infer": INFER,
              "resources": {"infer": {"threads": 1}, "reconstruct": {"threads": 1}},
              "datasets": {"tiny": {"path": str(dataset), "evaluate": False}}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    _run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--configfile",
          str(work / "config.yaml"), "--cores", "1"], work)
    return work / "out" / "tiny" / "01_RES"


def _segment(dataset: Path, work: Path, method: str) -> Path:
    res = work / "segment_RES"
    _run([sys.executable, "-m", "mediar3d", "segment", str(dataset / "01"), "--out", str(res), "--model",
          str(DEFAULT_MODEL), "--method", method, "--device", "cpu", *SEGMENT_OPTIONS], work)
    return res


@pytest.mark.parametrize("method", ["mediar3d", "xy-stitch", "classical"])
def test_segment_and_workflow_give_identical_masks(dataset, tmp_path, method):
    workflow_res = _workflow(dataset, tmp_path, method)
    segment_res = _segment(dataset, tmp_path, method)
    names = sorted(p.name for p in segment_res.iterdir())
    assert names == [f"mask{t:03d}.tif" for t in range(FRAMES)] + ["res_track.txt"]
    assert sorted(p.name for p in workflow_res.iterdir() if not p.name.startswith(".")) == names
    for name in names[:-1]:
        ours, theirs = tifffile.imread(segment_res / name), tifffile.imread(workflow_res / name)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), (method, name)
        assert len(np.unique(ours)) > 2, f"{method} {name}: fewer than 2 objects, the comparison says little"
    assert (segment_res / "res_track.txt").read_text() == (workflow_res / "res_track.txt").read_text()
