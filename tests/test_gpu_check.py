"""bench/gpu_check.sh, the script to run on a CUDA machine, dry-run on the CPU: every stage reports,
and a CPU run compared with itself differs by nothing."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_cpu(tmp_path):
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--device", "cpu", "--shape", "8", "64", "64",
                          "--out", str(tmp_path)], capture_output=True, text=True, env={"PY": sys.executable,
                          "PATH": "/usr/bin:/bin"}, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    for stage in ("resample", "infer", "fuse", "reconstruct"):
        assert any(line.startswith(stage) and " s " in line for line in run.stdout.splitlines()), run.stdout
    assert "flows max |difference|: 0\n" in run.stdout
    assert "foreground voxels differing: 0\n" in run.stdout
    objects = int(next(line for line in run.stdout.splitlines() if line.startswith("objects:")).split()[1])
    assert objects > 0
    report = (tmp_path / "gpu_check.md").read_text()
    assert "| infer |" in report and "SEG vs CPU masks: 1.0" in report


def test_gpu_check_without_cuda_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the no-GPU message cannot show")
    run = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--out", str(tmp_path)], capture_output=True,
                         text=True, env={"PY": sys.executable, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert run.returncode != 0 and "no CUDA GPU" in run.stderr
