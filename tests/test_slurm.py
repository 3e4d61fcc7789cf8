"""The workflow through workflow/profiles/slurm on a real SLURM cluster: the one-node cluster of
workflow/profiles/slurm/local_cluster.sh (Debian's SLURM, started here; skipped with the reason
where it cannot be: not root, no apt-get, another SLURM configured, no executor plugin).

One tiny synthetic sequence (2 frames, classical method: no network, so the jobs take seconds):
- a run whose reconstruct job is cancelled with `scancel` while it runs fails, naming the job and
  its CANCELLED state; the rerun completes it, and the masks are bit-identical to a local run's;
- every job got from SLURM the CPUs, memory and time limit its rule declares (read back with squeue).
The cluster has no accounting daemon, so job states come from squeue (--slurm-status-command squeue).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow" / "profiles" / "slurm" / "local_cluster.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
FRAMES = 2
#: per rule: threads, mem_mb, runtime (min), all different, so each job's limits show which rule set them
RESOURCES = {
    "synth": (1, 1010, 11), "info": (1, 1020, 12), "resample": (1, 1030, 13), "reconstruct": (2, 1040, 14),
    "evaluate": (1, 1050, 15), "track": (1, 1060, 16), "dataset_report": (1, 1070, 17), "report": (1, 1080, 18),
}
SLURM_OPTIONS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"]

pytestmark = pytest.mark.slow


def _sh(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm():
    """The one-node cluster, started (packages installed) if needed, stopped afterwards if started here."""
    pytest.importorskip("snakemake_executor_plugin_slurm",
                        reason="snakemake-executor-plugin-slurm is not installed (extra `slurm`)")
    if os.geteuid() != 0:
        pytest.skip("starting a SLURM cluster needs root (apt-get, munged, slurmctld, slurmd)")
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        pytest.skip("no apt-get to install SLURM and no slurmctld")
    running = _sh(SCRIPT, "status").returncode == 0
    started = time.monotonic()
    proc = _sh(SCRIPT, "start", timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"the local SLURM cluster could not be started: {proc.stdout[-1000:]}{proc.stderr[-2000:]}")
    print(f"cluster start: {time.monotonic() - started:.1f} s\n{proc.stdout}")
    yield proc.stdout
    if not running:
        _sh(SCRIPT, "stop")


def snakemake(workdir: Path, config: Path, *args: str) -> list[str]:
    env_args = ["-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config)]
    return [sys.executable, "-m", "snakemake", *env_args, *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def slurm_jobs(before: set[str] = frozenset()) -> dict[str, dict]:
    """{job id: {rule, state, cpus, mem_mb, minutes}} of the workflow's jobs that SLURM knows (squeue
    shows finished ones for MinJobAge = 300 s), less those in `before`."""
    out = _sh("squeue", "--states=all", "--noheader", "--format=%i|%T|%k|%C|%m|%l").stdout
    jobs = {}
    for line in out.splitlines():
        job, state, comment, cpus, mem, limit = line.split("|")
        match = re.match(r"rule_([a-z_]+?)(_wildcards_.*)?$", comment)
        if match and job not in before:
            jobs[job] = {"rule": match.group(1), "state": state, "cpus": int(cpus), "mem_mb": _mb(mem),
                         "minutes": _minutes(limit)}
    return jobs


def _mb(text: str) -> int:
    value, unit = re.match(r"([\d.]+)([KMGT]?)", text).groups()
    return round(float(value) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2, "": 1}[unit])


def _minutes(text: str) -> int:
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 1440 + parts[0] * 60 + parts[1] + (parts[2] > 0)


def masks(out: Path) -> dict[str, np.ndarray]:
    found = {p.name: tifffile.imread(p) for p in sorted((out / "tiny" / "01_RES").glob("mask*.tif"))}
    assert len(found) == FRAMES, sorted(found)
    return found


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    configs = {}
    for name in ("local", "slurm"):
        config = {"out": str(root / name), "method": "classical", "omezarr": False,
                  "resources": {rule: {"threads": t, "mem_mb": m, "runtime": r} for rule, (t, m, r) in RESOURCES.items()},
                  "datasets": {"tiny": {"synth": {"preset": "tiny", "seed": 2, "frames": FRAMES}}}}
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(config, sort_keys=False))
    return root, configs


def test_slurm_profile_cancel_rerun_identical_resources(slurm, setup):
    root, configs = setup
    before = set(slurm_jobs())
    t0 = time.monotonic()
    local = run(snakemake(root, configs["local"], "--cores", "2"))
    assert local.returncode == 0, local.stderr[-4000:]
    t_local = time.monotonic() - t0

    # run 1: cancel the first reconstruct job once it runs (and its retry: the profile retries once)
    cmd = snakemake(root, configs["slurm"], "--profile", str(PROFILE), *SLURM_OPTIONS)
    t1 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    cancelled = set()
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        for job, info in slurm_jobs(before).items():
            if info["rule"] == "reconstruct" and info["state"] == "RUNNING" and job not in cancelled:
                _sh("scancel", job)
                cancelled.add(job)
        time.sleep(0.3)
    if proc.poll() is None:
        proc.kill()
    first = proc.communicate()[0]
    t_first = time.monotonic() - t1
    jobs_first = slurm_jobs(before)
    assert cancelled, f"no reconstruct job seen running:\n{first[-4000:]}"
    assert proc.returncode != 0, first[-4000:]
    job = sorted(cancelled)[0]
    assert re.search(rf"SLURM-job '{job}' failed, SLURM status is: 'CANCELLED'", first), first[-4000:]
    assert "Error in rule reconstruct" in first, first[-4000:]
    # SLURM's log of the failed job is kept where the profile's README says, and the error names it
    slurm_log = list((root / ".snakemake" / "slurm_logs" / "rule_reconstruct").rglob(f"{job}.log"))
    assert slurm_log and str(slurm_log[0]) in first, first[-4000:]

    # run 2: the same command completes the run
    t2 = time.monotonic()
    second = run(cmd)
    t_second = time.monotonic() - t2
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    jobs = {**jobs_first, **slurm_jobs(before)}

    local_masks, slurm_masks = masks(root / "local"), masks(root / "slurm")
    assert local_masks.keys() == slurm_masks.keys()
    for name in local_masks:
        assert local_masks[name].dtype == slurm_masks[name].dtype
        assert local_masks[name].tobytes() == slurm_masks[name].tobytes(), name
    assert (root / "slurm" / "report" / "summary.csv").is_file()

    # every rule ran as a SLURM job with what it declares
    ran = {info["rule"] for info in jobs.values()}
    assert ran == set(RESOURCES), (ran, jobs)
    for job_id, info in jobs.items():
        threads, mem_mb, runtime = RESOURCES[info["rule"]]
        assert (info["cpus"], info["mem_mb"], info["minutes"]) == (threads, mem_mb, runtime), (job_id, info)

    # device: cuda -> the GPU rules ask SLURM for a GPU (this cluster has none, so sbatch refuses the job)
    gpu = run([*cmd, "--config", "device=cuda", "--retries", "0"])
    assert gpu.returncode != 0
    calls = re.findall(r"sbatch --parsable .*? --comment rule_resample_\S+ .*?--gpus=1", gpu.stdout + gpu.stderr)
    assert calls and "Invalid generic resource" in gpu.stdout + gpu.stderr, (gpu.stdout + gpu.stderr)[-4000:]
    print(f"local run {t_local:.0f} s, SLURM run with cancel {t_first:.0f} s, rerun {t_second:.0f} s, "
          f"{len(jobs)} SLURM jobs")
