"""Reconstruction on a dask.distributed cluster of worker *processes* (not threads): the labels are
bit-identical to the single-block result, through the function, `mediar3d reconstruct --scheduler`
and the workflow's config key `reconstruct.scheduler`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from mediar3d.blockread import block_boxes
from mediar3d.config import ConfigError, validate_config
from mediar3d.flows import labels_to_flows_3d
from mediar3d.reconstruct import masks_from_field, masks_from_field_dask
from mediar3d.synthetic import jittered_balls

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
SHAPE = (32, 64, 64)
BLOCK = (16, 32, 32)
DIAMETER = 8.0


@pytest.fixture(scope="module")
def field_zarr(tmp_path_factory) -> Path:
    """field.zarr (4, Z, Y, X): the true flows of jittered balls and prob 1 inside, on disk (the
    workers open it by path, as on a cluster with a shared file system)."""
    import zarr

    labels = jittered_balls(SHAPE, 10, 4.0, jitter=1.0, radius_range=(0.85, 1.15), seed=3)
    field = np.concatenate([labels_to_flows_3d(labels), (labels > 0).astype(np.float32)[None]]).astype(np.float32)
    path = tmp_path_factory.mktemp("distributed") / "field.zarr"
    array = zarr.open_array(str(path), mode="w", shape=field.shape, chunks=(4, 16, 32, 32), dtype="float32")
    array[:] = field
    array.attrs["diameter_px"] = DIAMETER
    return path


@pytest.fixture(scope="module")
def single(field_zarr) -> np.ndarray:
    import zarr

    return masks_from_field(zarr.open_array(str(field_zarr), mode="r")[:], diameter_px=DIAMETER)


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes with one thread each."""
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster:
        yield cluster


def test_two_worker_processes_equal_single_block(field_zarr, single, cluster):
    import zarr

    assert len(block_boxes(SHAPE, BLOCK)) == 8
    assert single.max() > 20
    with distributed.Client(cluster) as client:
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids  # really other processes
        with distributed.get_task_stream(client) as stream:
            labels = masks_from_field_dask(zarr.open_array(str(field_zarr), mode="r"), block=BLOCK,
                                           diameter_px=DIAMETER, scheduler=client)
    ran_on = {t["worker"] for t in stream.data if t["key"].startswith("reconstruct-block-")}
    assert ran_on and ran_on <= set(cluster.scheduler_info["workers"])
    assert labels.dtype == single.dtype and labels.tobytes() == single.tobytes()


def test_scheduler_address_equals_single_block(field_zarr, single, cluster):
    import zarr

    labels = masks_from_field_dask(zarr.open_array(str(field_zarr), mode="r"), block=BLOCK, diameter_px=DIAMETER,
                                   scheduler=cluster.scheduler_address)
    assert labels.tobytes() == single.tobytes()


def test_cli_scheduler_option(field_zarr, cluster, tmp_path):
    """`mediar3d reconstruct --scheduler ADDRESS` writes the same mask as without it."""
    masks = {}
    for name, extra in (("threads", []), ("distributed", ["--scheduler", cluster.scheduler_address])):
        out = tmp_path / f"{name}.tif"
        subprocess.run([sys.executable, "-m", "mediar3d", "reconstruct", "--input", str(field_zarr), "--out", str(out),
                        "--block", *map(str, BLOCK), "--workers", "1", *extra],
                       check=True, capture_output=True, text=True, timeout=300)
        masks[name] = tifffile.imread(out)
    assert masks["threads"].max() > 20
    assert masks["distributed"].tobytes() == masks["threads"].tobytes()


def test_config_key_reaches_the_rule(tmp_path):
    """reconstruct.scheduler is validated and the rule passes it as --scheduler (dry run)."""
    datasets = {"tiny": {"synth": {"preset": "tiny"}}}
    for address in ("tcp://10.1.2.3:8786", "node7:8786", "tls://[::1]:8786"):
        assert validate_config({"datasets": datasets, "reconstruct": {"scheduler": address}})["reconstruct"] \
            ["scheduler"] == address
    assert validate_config({"datasets": datasets})["reconstruct"]["scheduler"] is None
    for bad in ("http://nowhere", "node7", 8786):
        with pytest.raises(ConfigError, match="scheduler"):
            validate_config({"datasets": datasets, "reconstruct": {"scheduler": bad}})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "out"), "reconstruct": {"scheduler": "tcp://10.1.2.3:8786"},
        "datasets": {"tiny": {"synth": {"preset": "tiny", "seed": 1, "frames": 1}}}}))
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                 "--configfile", str(config), "--cores", "1"]
    # the reconstruct jobs exist once the info checkpoint ran (synth + info: seconds), then a dry run prints them
    for args in ([str(tmp_path / "out" / "tiny" / "info.json")], ["-n", "-p"]):
        proc = subprocess.run([*snakemake, *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    commands = [line for line in proc.stdout.splitlines() if "mediar3d reconstruct" in line]
    assert commands and all("--scheduler tcp://10.1.2.3:8786" in c for c in commands), proc.stdout[-3000:]
