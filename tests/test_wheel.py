"""The package works installed from a wheel, away from the checkout: the wheel carries the config
schema and the shipped checkpoint (package data through mediar3d/_data/), and the installed
`mediar3d segment` runs on a `tiny` synthetic frame with no --model (so it finds the shipped one).

The wheel is built without network access (`pip wheel --no-build-isolation`) from a copy of the
checkout, installed without dependencies into a fresh venv that sees the test environment's
packages (torch, ...) through a .pth line, never the checkout itself."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".git", "build", "dist", "results", "data", ".snakemake", ".pytest_cache", "__pycache__",
             "out", "bench", "tests", "docs"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONPATH": ""}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("setuptools") is None or importlib.util.find_spec("pip") is None,
                       reason="wheel build tooling (pip and setuptools in the test environment) is unavailable"),
    pytest.mark.skipif(not (REPO / "models" / "mediar3d_default.pt").is_file(), reason="no shipped checkpoint"),
]


def _sh(*cmd, cwd: Path) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd[:4]))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv with the wheel of this checkout installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=lambda d, names: [n for n in names if n in SKIP_DIRS])
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src,
        cwd=tmp)
    wheel = next((tmp / "dist").glob("mediar3d-*.whl"))
    venv = tmp / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    site = Path(_sh(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                    cwd=tmp).strip())
    (site / "test_env.pth").write_text(sysconfig.get_path("purelib") + "\n")  # the dependencies, not the checkout
    _sh(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", site, wheel, cwd=tmp)
    return venv / "bin"


def test_installed_wheel_finds_its_data_and_segments(installed, tmp_path):
    python = installed / "python"
    where = _sh(python, "-c", "import mediar3d, mediar3d.config as c, mediar3d.model as m; "
                "print(mediar3d.__file__); print(c.SCHEMA_PATH.is_file(), m.DEFAULT_MODEL.is_file())", cwd=tmp_path)
    package, found = where.splitlines()
    assert not Path(package).resolve().is_relative_to(REPO) and found == "True True", where
    _sh(python, "-m", "mediar3d", "synth", "--preset", "tiny", "--seed", "3", "--frames", "1", "--out",
        tmp_path / "tiny", cwd=tmp_path)
    _sh(python, "-m", "mediar3d", "segment", tmp_path / "tiny" / "01", "--out", tmp_path / "res", "--device", "cpu",
        "--threads", "1", "--workers", "1", "--no-progress", cwd=tmp_path)
    mask = tifffile.imread(tmp_path / "res" / "mask000.tif")
    assert len(np.unique(mask)) > 2, "the shipped model found fewer than 2 objects"
