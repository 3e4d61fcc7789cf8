"""The Snakemake workflow end to end on tiny data, run as `python -m snakemake` subprocesses.

Lint, dry runs and config errors are fast. The slow tests share one full run (a 2-frame synthetic
CTC dataset, a tiny untrained checkpoint; every path holds a space): its outputs, a valid CTC
result and NGFF 0.5 OME-Zarr; a second run does nothing; a config change re-runs only what it
affects; a run killed with SIGKILL and resumed ends identical to it, and a second run on its output
folder meanwhile is refused; an added frame runs only that frame's jobs plus the per-sequence and
aggregation jobs, and removing it again leaves no trace of it in the results. Runs of the classical
method (no network) cover a full disk and missing frames with on_missing_frame: skip.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

import ctc_metrics.scripts.validate as ctc_validate  # py-ctcmetrics: a required test dependency (extra `test`)

from mediar3d.io.ctc import read_tracks
from mediar3d.io.omezarr import read_ome_zarr
from ngff import validate_ngff

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
FRAMES = 2
PER_FRAME_RULES = ("resample", "infer", "fuse", "reconstruct", "evaluate")
PER_SEQUENCE_RULES = ("track", "omezarr")
FINAL_RULES = ("dataset_report", "report")


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 900,
              preexec_fn=None) -> subprocess.CompletedProcess:
    """Run snakemake in `workdir` (its .snakemake/ lives there); fails the test with its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run([*SNAKEMAKE, "-d", str(workdir), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, preexec_fn=preexec_fn)
    if check and proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted(workdir.rglob("logs/**/*.log"))[-4:])
        pytest.fail(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                    f"{proc.stderr[-6000:]}\n{logs}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """{rule: jobs} from the last 'Job stats' table of a snakemake output."""
    tables = re.findall(r"Job stats:\n(.*?)\ntotal\s+\d+", output, re.DOTALL)
    assert tables, f"no job stats in:\n{output[-3000:]}"
    matches = (re.match(r"^(\w+)\s+(\d+)\s*$", line) for line in tables[-1].splitlines())
    return {m.group(1): int(m.group(2)) for m in matches if m}


def write_config(path: Path, **config) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def frame_mtimes(out: Path) -> dict[str, float]:
    """mtime of every job log under <out>/logs: a job that ran rewrote its log."""
    return {str(p.relative_to(out)): p.stat().st_mtime for p in (out / "logs").rglob("*.log")}


# ---------------------------------------------------------------------------------------------
# fixtures


SHIPPED = sorted((REPO / "models").glob("*.pt"))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """The shipped checkpoint, else a tiny untrained one (mit_b0; it finds no cells, but the workflow's
    outputs must still be complete and deterministic)."""
    if SHIPPED:
        return SHIPPED[0]
    import torch

    from mediar3d.model import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_model("mit_b0"))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A 2-frame synthetic CTC dataset (raw frames + full-3D SEG GT) on disk, in a path with a space."""
    root = tmp_path_factory.mktemp("data set") / "tiny"
    subprocess.run([sys.executable, "-m", "mediar3d", "synth", "--preset", "tiny", "--seed", "5", "--frames",
                    str(FRAMES), "--out", str(root)], check=True, capture_output=True, timeout=300)
    assert sorted(p.name for p in (root / "01").glob("t*.tif")) == [f"t{t:03d}.tif" for t in range(FRAMES)]
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The working directory of the runs, its outputs in folders with spaces (out a, out b)."""
    return tmp_path_factory.mktemp("work flow")


def run_config(workdir: Path, name: str, dataset: Path, model: Path, **extra) -> Path:
    config = {"out": str(workdir / name), "model": str(model),
              "infer": {"tile": 64, "batch": 4},
              "resources": {"infer": {"threads": 1}, "reconstruct": {"threads": 1}},
              "datasets": {"tiny": {"path": str(dataset)}}, **extra}
    return write_config(workdir / f"{name}.yaml", **config)


@pytest.fixture(scope="module")
def first_run(workdir, dataset, model_path) -> dict:
    """The uninterrupted reference run (out a)."""
    config = run_config(workdir, "out a", dataset, model_path)
    proc = snakemake(workdir, "--profile", str(REPO / "workflow" / "profiles" / "default"),
                     "--configfile", str(config), "--cores", "2")
    return {"config": config, "out": workdir / "out a", "proc": proc}


# ---------------------------------------------------------------------------------------------
# fast: lint, dry runs, config errors


def test_lint_is_clean(tmp_path, model_path):
    proc = snakemake(tmp_path, "--lint", "--config", f"model={model_path}")
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr


def test_dry_run_of_the_default_config(tmp_path, model_path):
    args = [] if any((REPO / "models").glob("*.pt")) else ["--config", f"model={model_path}"]
    proc = snakemake(tmp_path, "-n", *args)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts.get("synth") == 1 and counts.get("info") == 1, proc.stdout
    assert "results/data/zebrafish" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists(), "a dry run must not write outputs"


def test_unknown_config_key_stops_the_run(tmp_path, model_path):
    config = write_config(tmp_path / "bad.yaml", out=str(tmp_path / "out"), model=str(model_path),
                          datasets={"zf": {"synth": {"frames": 1}, "voxelsize": [1, 1, 1]}})
    proc = snakemake(tmp_path, "--configfile", str(config), "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "unknown config key 'datasets.zf.voxelsize'" in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()


def test_wrong_type_stops_the_run(tmp_path, model_path):
    config = write_config(tmp_path / "bad.yaml", out=str(tmp_path / "out"), model=str(model_path),
                          infer={"tile": "large"}, datasets={"zf": {"synth": {}}})
    proc = snakemake(tmp_path, "--configfile", str(config), "-n", check=False)
    assert proc.returncode != 0
    assert "config key 'infer.tile': expected integer, got string 'large'" in proc.stdout + proc.stderr


def test_dry_run_selects_the_method_chain(tmp_path, dataset, model_path):
    """xy-stitch reconstructs from views.zarr (no fuse); classical from iso.zarr (no infer)."""
    for method, absent in (("xy-stitch", {"fuse"}), ("classical", {"infer", "fuse"})):
        config = run_config(tmp_path, f"out_{method}", dataset, model_path, method=method)
        snakemake(tmp_path, "--configfile", str(config), "--cores", "1", f"{tmp_path}/out_{method}/tiny/info.json")
        proc = snakemake(tmp_path, "--configfile", str(config), "-n")
        counts = job_counts(proc.stdout)
        assert counts["reconstruct"] == FRAMES and counts["resample"] == FRAMES
        assert not absent & set(counts), (method, counts)


def test_ctc_example_on_the_shared_real_data(tmp_path, model_path):
    """config/examples/ctc.yaml as shipped: the BBBC050 volumes (2 frames, both with 3D GT)."""
    example = yaml.safe_load((REPO / "config" / "examples" / "ctc.yaml").read_text())
    path = (REPO / example["datasets"]["bbbc050"]["path"]).resolve()
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    example["datasets"]["bbbc050"]["path"] = str(path)
    config = write_config(tmp_path / "ctc.yaml", **{**example, "out": str(tmp_path / "out"), "model": str(model_path)})
    snakemake(tmp_path, "--configfile", str(config), "--cores", "1", f"{tmp_path}/out/bbbc050/info.json")
    proc = snakemake(tmp_path, "--configfile", str(config), "-n", "-p")
    counts = job_counts(proc.stdout)
    assert {rule: counts.get(rule) for rule in PER_FRAME_RULES} == dict.fromkeys(PER_FRAME_RULES, 2), counts
    assert counts["track"] == counts["omezarr"] == counts["dataset_report"] == counts["report"] == 1
    assert "--voxel-size 1.75 0.8 0.8" in proc.stdout


def test_train_rule_fine_tunes_from_a_checkpoint(tmp_path, dataset, model_path):
    """`snakemake train` (not in the default target) passes the train settings, the starting
    checkpoint is an input of the rule."""
    config = run_config(tmp_path, "out", dataset, model_path,
                        train={"data": [str(dataset)], "out": str(tmp_path / "ft.pt"), "init": str(model_path),
                               "lr": 0.0001, "diameter_px": 14, "epochs": 2, "context_px": 4,
                               "select_by": "seg", "augment": "standard"})
    proc = snakemake(tmp_path, "--configfile", str(config), "-n", "-p", "train")
    assert job_counts(proc.stdout) == {"train": 1}, proc.stdout
    output = proc.stdout + proc.stderr
    command = next(line for line in output.splitlines() if "mediar3d train " in line)
    for part in (f"--init {shlex.quote(str(model_path))}", "--lr 0.0001", "--diameter-px 14", "--epochs 2", "--context-px 4",
                 "--select-by seg", "--augment standard", "--workers 1", f"--data {shlex.quote(str(dataset))}"):  # paths quoted: the dataset's holds a space
        assert part in command, (part, command)
    config = run_config(tmp_path, "out", dataset, model_path,
                        train={"data": [str(dataset)], "init": str(tmp_path / "absent.pt")})
    proc = snakemake(tmp_path, "--configfile", str(config), "-n", "train", check=False)
    assert proc.returncode != 0 and "absent.pt" in proc.stdout + proc.stderr


def test_profiles_and_conda_env():
    default = yaml.safe_load((REPO / "workflow" / "profiles" / "default" / "config.yaml").read_text())
    assert default["rerun-incomplete"] is True and set(default["rerun-triggers"]) == {"mtime", "params", "input", "code"}
    slurm = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert slurm["executor"] == "slurm"
    # the profile names no account or partition: a cluster rejects one it does not have
    # (tests/test_slurm.py runs the profile on a real cluster), so the cluster's own defaults apply
    assert {"mem_mb", "runtime"} == set(slurm["default-resources"])
    assert "set-resources" not in slurm
    env = yaml.safe_load((REPO / "envs" / "mediar3d.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(pip)


def test_infer_requests_a_gpu_only_for_cuda(tmp_path, dataset, model_path):
    config = run_config(tmp_path, "out", dataset, model_path)
    snakemake(tmp_path, "--configfile", str(config), "--cores", "1", f"{tmp_path}/out/tiny/info.json")
    for device, gpus in (("cuda", 1), ("cpu", 0)):
        proc = snakemake(tmp_path, "--configfile", str(config), "--config", f"device={device}", "-n", "-R", "infer")
        infer_resources = re.findall(r"rule infer:\n(?:.*\n)*?\s+resources: (.*)", proc.stdout)
        assert len(infer_resources) == FRAMES, proc.stdout[-3000:]
        assert all(f"gpu={gpus}" in line.split(", ") for line in infer_resources), infer_resources


# ---------------------------------------------------------------------------------------------
# slow: the full run and what follows it


@pytest.mark.slow
def test_full_run_outputs(first_run, dataset):
    out, stdout = first_run["out"], first_run["proc"].stdout
    res = out / "tiny" / "01_RES"
    masks = sorted(res.glob("mask*.tif"))
    assert [m.name for m in masks] == [f"mask{t:03d}.tif" for t in range(FRAMES)]
    for t, mask in enumerate(masks):
        labels = tifffile.imread(mask)
        assert labels.dtype == np.uint16
        assert labels.shape == tifffile.imread(dataset / "01" / f"t{t:03d}.tif").shape
    tracks = read_tracks(res / "res_track.txt")
    ids = set().union(*(set(np.unique(tifffile.imread(m)).tolist()) - {0} for m in masks))
    assert set(tracks[:, 0].tolist()) == ids
    if SHIPPED:
        assert ids, "the shipped model found no cell in the synthetic data"
    zarr_dir = out / "tiny" / "01.ome.zarr"
    assert (zarr_dir / "labels" / "cells").is_dir()
    validate_ngff(zarr_dir)
    assert ctc_validate.validate_sequence(str(res), threads=1)["Valid"] == 1
    for t in range(FRAMES):
        row = pd.read_csv(out / "tiny" / "metrics" / "01" / f"t{t:03d}.csv")
        # one row per GT file: full 3D GT on even frames, single-slice GT files on odd ones
        assert len(row) >= 1 and (row["timepoint"] == t).all() and row["seg"].between(0.0, 1.0).all()
    report = out / "report"
    assert (report / "report.html").is_file() and (report / "summary.csv").is_file()
    assert (out / "tiny" / "report" / "summary.csv").is_file()
    per_tp = pd.read_csv(report / "per_timepoint.csv")
    assert sorted(per_tp["timepoint"]) == list(range(FRAMES))
    assert "per-timepoint SEG" in stdout and f"report: {report / 'report.html'}" in stdout
    assert not list((out / "tiny" / "work").rglob("*.zarr")), "zarr intermediates must be temporary"


@pytest.mark.slow
def test_second_run_does_nothing(first_run, workdir):
    before = frame_mtimes(first_run["out"])
    proc = snakemake(workdir, "--configfile", str(first_run["config"]), "--cores", "2")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert frame_mtimes(first_run["out"]) == before


@pytest.mark.slow
def test_config_change_reruns_only_what_it_affects(first_run, workdir, dataset, model_path, tmp_path):
    changed = run_config(workdir, "out a", dataset, model_path, report={"title": "changed title"})
    proc = snakemake(workdir, "--configfile", str(changed), "-n")
    counts = job_counts(proc.stdout)
    assert set(counts) == {"dataset_report", "report", "all"}, counts
    assert "params" in proc.stdout.lower()


@pytest.mark.slow
def test_kill_and_resume_gives_identical_results(first_run, workdir, dataset, model_path):
    """While the run is going, a second run on its output folder (from another working directory, as
    Snakemake's own lock never sees) is refused before any job; the kill releases the folder."""
    config = run_config(workdir, "out b", dataset, model_path)
    out = workdir / "out b"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*SNAKEMAKE, "-d", str(workdir), "--configfile", str(config), "--cores", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    first_iso = out / "tiny" / "work" / "01" / "t000" / "iso.zarr"
    first_mask = out / "tiny" / "work" / "01" / "masks" / "mask000.tif"
    deadline = time.monotonic() + 600
    try:
        while not first_iso.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        (workdir / "elsewhere").mkdir(exist_ok=True)
        second = snakemake(workdir / "elsewhere", "--configfile", str(config), "--cores", "1", check=False)
        assert second.returncode != 0
        assert f"{out}: another mediar3d workflow run is writing to this output folder" in second.stderr
        assert "Finished jobid" not in second.stdout + second.stderr, "the refused run ran a job"
        while not first_mask.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "report").exists(), "killed too late: the run had finished"
    snakemake(workdir, "--configfile", str(config), "--unlock")
    snakemake(workdir, "--configfile", str(config), "--cores", "2", "--rerun-incomplete")
    ref, res = first_run["out"] / "tiny", out / "tiny"
    for t in range(FRAMES):
        a = tifffile.imread(ref / "01_RES" / f"mask{t:03d}.tif")
        b = tifffile.imread(res / "01_RES" / f"mask{t:03d}.tif")
        assert np.array_equal(a, b), f"mask{t:03d} differs after kill and resume"
        pd.testing.assert_frame_equal(pd.read_csv(ref / "metrics" / "01" / f"t{t:03d}.csv"),
                                      pd.read_csv(res / "metrics" / "01" / f"t{t:03d}.csv"))
    assert (ref / "01_RES" / "res_track.txt").read_text() == (res / "01_RES" / "res_track.txt").read_text()
    assert not list((out / "tiny").rglob(".*.tmp-*")), "a half-written temporary survived"


@pytest.mark.slow
def test_added_frame_runs_only_its_jobs(first_run, workdir, dataset):
    """Runs last (it changes the dataset): a new frame t002 (a copy of t000) with its full 3D GT."""
    out = first_run["out"]
    before = frame_mtimes(out)
    new = f"{FRAMES:03d}"
    shutil.copy(dataset / "01" / "t000.tif", dataset / "01" / f"t{new}.tif")
    shutil.copy(dataset / "01_GT" / "SEG" / "man_seg000.tif", dataset / "01_GT" / "SEG" / f"man_seg{new}.tif")
    snakemake(workdir, "--configfile", str(first_run["config"]), "--cores", "2")
    after = frame_mtimes(out)
    rerun = {k for k in after if k not in before or after[k] != before[k]}
    expected_new = {f"logs/{rule}/tiny/01/t{new}.log" for rule in PER_FRAME_RULES}
    assert expected_new <= rerun, sorted(rerun)
    old_frames = {k for k in rerun if re.search(r"/t\d{3}\.log$", k) and not k.endswith(f"t{new}.log")}
    assert not old_frames, f"jobs of unchanged frames re-ran: {sorted(old_frames)}"
    assert {f"logs/{rule}/tiny/01.log" for rule in PER_SEQUENCE_RULES} <= rerun
    assert {"logs/dataset_report/tiny.log", "logs/report/report.log", "logs/info/tiny.log"} <= rerun
    assert (out / "tiny" / "01_RES" / f"mask{new}.tif").is_file()
    assert sorted(pd.read_csv(out / "report" / "per_timepoint.csv")["timepoint"]) == list(range(FRAMES + 1))


@pytest.mark.slow
def test_removed_frame_leaves_no_trace_in_the_results(first_run, workdir, dataset):
    """After the added frame: remove it (and its GT) again. The RES folder, its tracks, the OME-Zarr and
    the report hold exactly the frames left; the removed frame's per-frame outputs are gone."""
    out, new = first_run["out"], f"{FRAMES:03d}"
    assert (out / "tiny" / "01_RES" / f"mask{new}.tif").is_file(), "runs after test_added_frame_runs_only_its_jobs"
    (dataset / "01" / f"t{new}.tif").unlink()
    (dataset / "01_GT" / "SEG" / f"man_seg{new}.tif").unlink()
    snakemake(workdir, "--configfile", str(first_run["config"]), "--cores", "2")
    res = out / "tiny" / "01_RES"
    assert sorted(p.name for p in res.glob("mask*.tif")) == [f"mask{t:03d}.tif" for t in range(FRAMES)]
    assert read_tracks(res / "res_track.txt")[:, 2].max() <= FRAMES - 1
    assert ctc_validate.validate_sequence(str(res), threads=1)["Valid"] == 1
    assert read_ome_zarr(out / "tiny" / "01.ome.zarr")[0].shape[0] == FRAMES
    assert sorted(pd.read_csv(out / "report" / "per_timepoint.csv")["timepoint"]) == list(range(FRAMES))
    left = [str(p) for p in out.rglob(f"*{new}*")]
    assert not left, f"outputs of the removed frame remain: {left}"
    assert "no longer in the input" in (out / "logs" / "info" / "tiny.log").read_text()


# ---------------------------------------------------------------------------------------------
# classical runs (no network): a full disk, missing frames


def classical_dataset(dataset: Path, folder: Path, timepoints: list[int]) -> Path:
    """A copy of the dataset's sequence 01 with frames (and full GT) at `timepoints` (copies of t000)."""
    root = folder / "tiny"
    (root / "01").mkdir(parents=True)
    (root / "01_GT" / "SEG").mkdir(parents=True)
    for t in timepoints:
        shutil.copy(dataset / "01" / "t000.tif", root / "01" / f"t{t:03d}.tif")
        shutil.copy(dataset / "01_GT" / "SEG" / "man_seg000.tif", root / "01_GT" / "SEG" / f"man_seg{t:03d}.tif")
    shutil.copy(dataset / "dataset.json", root / "dataset.json")
    return root


@pytest.mark.slow
def test_full_disk_stops_the_run_with_one_line_and_nothing_partial(tmp_path, dataset):
    """Every write over 20 kB fails (a file size limit, as a full disk fails a write): the first job
    that writes a large file stops the run; its log holds one error line naming its output and no
    traceback, and no output exists under its final name or as a temporary."""
    import resource

    data = classical_dataset(dataset, tmp_path / "data", [0, 1])
    config = write_config(tmp_path / "c.yaml", out=str(tmp_path / "out"), method="classical",
                          datasets={"tiny": {"path": str(data)}})

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    proc = snakemake(tmp_path, "--configfile", str(config), "--cores", "1", check=False, preexec_fn=limit)
    assert proc.returncode != 0
    logs = {p: p.read_text() for p in (tmp_path / "out" / "logs").rglob("*.log")}
    failed = [(p, text) for p, text in logs.items() if "error:" in text]
    assert len(failed) == 1, proc.stderr[-3000:]
    path, text = failed[0]
    assert "resample" in str(path) and "iso.zarr: File too large (disk full" in text, text
    assert len([line for line in text.splitlines() if "error:" in line]) == 1
    assert not any("Traceback" in t for t in logs.values())
    assert not list((tmp_path / "out").rglob("iso.zarr")) and not list((tmp_path / "out").rglob(".*.tmp-*"))


@pytest.mark.slow
def test_missing_frames_with_skip_give_a_result_of_the_frames_that_exist(tmp_path, dataset):
    """on_missing_frame: skip (the gap error's advice) segments, links, converts and scores the frames
    that exist; no track spans the missing frame."""
    data = classical_dataset(dataset, tmp_path / "data", [0, 1, 3])
    config = write_config(tmp_path / "c.yaml", out=str(tmp_path / "out"), method="classical",
                          on_missing_frame="skip", datasets={"tiny": {"path": str(data)}})
    snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    res = tmp_path / "out" / "tiny" / "01_RES"
    assert sorted(p.name for p in res.glob("mask*.tif")) == ["mask000.tif", "mask001.tif", "mask003.tif"]
    tracks = read_tracks(res / "res_track.txt")
    assert len(tracks) and not any(b <= 2 <= e for _, b, e, _ in tracks.tolist())
    assert read_ome_zarr(tmp_path / "out" / "tiny" / "01.ome.zarr")[0].shape[0] == 3
    assert sorted(pd.read_csv(tmp_path / "out" / "report" / "per_timepoint.csv")["timepoint"]) == [0, 1, 3]


@pytest.mark.slow
def test_ome_zarr_input_gives_res_folder_and_labelled_ome_zarr(tmp_path):
    """An OME-Zarr dataset (classical method: no network, fast) ends in a CTC RES folder and an
    OME-Zarr holding the image and labels/cells."""
    from mediar3d.cli import main
    from mediar3d.io.omezarr import read_ome_zarr_labels

    assert main(["synth", "--preset", "tiny", "--seed", "3", "--frames", "2", "--out", str(tmp_path / "tiny")]) == 0
    assert main(["to-omezarr", "--ctc", str(tmp_path / "tiny" / "01"), "--out", str(tmp_path / "img.ome.zarr")]) == 0
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"out": "res", "method": "classical",
                                      "datasets": {"emb": {"path": str(tmp_path / "img.ome.zarr")}}}))
    snakemake(tmp_path, "--configfile", str(config), "--cores", "2")
    res = tmp_path / "res" / "emb" / "img_RES"
    assert sorted(p.name for p in res.iterdir() if not p.name.startswith(".")) == [
        "mask000.tif", "mask001.tif", "res_track.txt"]
    validate_ngff(tmp_path / "img.ome.zarr")
    validate_ngff(tmp_path / "res" / "emb" / "img.ome.zarr")
    assert ctc_validate.validate_sequence(str(res), threads=1)["Valid"] == 1
    image, _ = read_ome_zarr(tmp_path / "img.ome.zarr")
    out_image, voxel = read_ome_zarr(tmp_path / "res" / "emb" / "img.ome.zarr")
    np.testing.assert_array_equal(out_image.compute(), image.compute())
    labels = read_ome_zarr_labels(tmp_path / "res" / "emb" / "img.ome.zarr").compute()
    np.testing.assert_array_equal(labels[1], tifffile.imread(res / "mask001.tif"))
    assert labels.max() > 0
