"""Bad input and faults, one row per class (issue 16): every `mediar3d` command refuses them with one
line naming the file, exit status 1, no traceback, nothing lost and nothing partial.

Each row copies a prepared folder (a tiny synthetic CTC dataset, a result folder, mediar3d's own
intermediates and OME-Zarr), damages it, runs one command and checks that

- the exit status is 1 and stderr holds exactly one `error:` line, naming the file, and no traceback;
- no file is lost or changed: the folder's tree and every file's bytes are as before the command;
- nothing partial is left: no new file or folder, under its final name or as a temporary.

Commands run in this process (`mediar3d.cli.main`), except the disk-full row: a subprocess whose
file size limit (RLIMIT_FSIZE, the `ulimit -f` of the shell) makes every large write fail as a full
disk does. The workflow's own cases (paths with spaces, a shrinking input, two runs on one output
folder, a full disk under Snakemake) are in tests/test_workflow.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import zarr

from mediar3d.cli import main
from mediar3d.io import ctc, store
from ngff import validate_ngff

VOXEL = (1.0, 0.5, 0.5)


# ---------------------------------------------------------------------------------------------
# the prepared folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """data/tiny (3 frames with GT), res/ (a tracked CTC result folder), w/ (iso, views and field
    stores as mediar3d writes them) and o.ome.zarr (the image with its masks as labels/cells)."""
    root = tmp_path_factory.mktemp("prepared")
    assert main(["synth", "--preset", "tiny", "--seed", "1", "--out", str(root / "data" / "tiny")]) == 0
    seq = root / "data" / "tiny" / "01"
    assert main(["resample", "--input", str(seq / "t000.tif"), "--out", str(root / "w" / "iso.zarr")]) == 0
    iso = store.open_array(root / "w" / "iso.zarr")
    rng = np.random.default_rng(0)
    with store.atomic_zarr(root / "w" / "views.zarr", "views") as tmp:
        store.create_group(tmp, dict(iso.attrs))
        for view in ("xy", "xz", "yz"):
            store.create_array(tmp / view, (3, *iso.shape), np.float32)[...] = rng.normal(size=(3, *iso.shape))
    field = rng.normal(size=(4, *iso.shape)).astype(np.float32)
    store.write_array(root / "w" / "field.zarr", field, attrs=dict(iso.attrs), kind="field")
    (root / "res").mkdir()
    for t in range(3):  # the GT tracking masks as a result
        shutil.copy(root / "data" / "tiny" / "01_GT" / "TRA" / f"man_track{t:03d}.tif", root / "res" / f"mask{t:03d}.tif")
    assert main(["track", "--res", str(root / "res")]) == 0
    assert main(["to-omezarr", "--ctc", str(seq), "--res", str(root / "res"), "--out", str(root / "o.ome.zarr")]) == 0
    validate_ngff(root / "o.ome.zarr")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha1 of every file ('dir' for folders) under `root`."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------------------------------------
# damage


def first_chunk(array_dir: Path) -> Path:
    return next(p for p in sorted((array_dir / "c").rglob("*")) if p.is_file())


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).bytes(path.stat().st_size))


def random_payload(path: Path) -> None:
    """Random bytes after the chunk's 16-byte Blosc header: without a checksum they decode (the noise
    chunk is stored uncompressed) to random numbers."""
    data = path.read_bytes()
    path.write_bytes(data[:16] + np.random.default_rng(1).bytes(len(data) - 16))


def renumber_and_cut(res: Path) -> None:
    """mask000 with other ids (tracking would relabel it), mask002 cut in half."""
    first = ctc.read_labels(res / "mask000.tif")
    ctc.write_mask(res / "mask000.tif", np.where(first > 0, first + 100, 0))
    cut_in_half(res / "mask002.tif")


def edit_multiscales(image: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads((image / "zarr.json").read_text())
    change(meta["attributes"]["ome"]["multiscales"][0])
    (image / "zarr.json").write_text(json.dumps(meta))


def foreign_zarr(path: Path) -> None:
    zarr.create_array(str(path), shape=(2, 2), dtype="float32")


# ---------------------------------------------------------------------------------------------
# the table


@dataclass(frozen=True)
class Case:
    """One class of bad input: `damage(root)` prepares it, `argv` (with {root}) is the command, `named`
    (relative to root) must appear in the error line together with `says`."""

    id: str
    argv: tuple[str, ...]
    named: str
    says: str
    damage: Callable[[Path], None] = lambda root: None
    isolated: bool = False
    file_size_limit: int | None = None


DATA, SEQ, GT = "{root}/data/tiny", "{root}/data/tiny/01", "{root}/data/tiny/01_GT"
ISO, VIEWS, FIELD, OME = "{root}/w/iso.zarr", "{root}/w/views.zarr", "{root}/w/field.zarr", "{root}/o.ome.zarr"

CASES = [
    # an output path that is an existing folder, a file, an input, or below a file (defect 1)
    Case("evaluate --out is the raw frames folder", ("evaluate", "--res", "{root}/res", "--gt", GT, "--out", SEQ),
         "data/tiny/01", "is a folder"),
    Case("evaluate --objects is a folder", ("evaluate", "--res", "{root}/res", "--gt", GT, "--objects", "{root}/w"),
         "w", "is a folder"),
    Case("info --json is a folder", ("info", DATA, "--json", "{root}/w"), "w", "is a folder"),
    Case("to-omezarr --out is the input dataset", ("to-omezarr", "--ctc", SEQ, "--out", DATA),
         "data/tiny", "holds the input"),
    Case("to-omezarr --out is a plain folder", ("to-omezarr", "--ctc", SEQ, "--out", "{root}/w"),
         "w", "is not a zarr store written by mediar3d"),
    Case("reconstruct --out is a folder", ("reconstruct", "--input", FIELD, "--out", GT), "data/tiny/01_GT",
         "is a folder"),
    Case("resample --out is a file", ("resample", "--input", SEQ + "/t000.tif", "--out", DATA + "/dataset.json"),
         "data/tiny/dataset.json", "is a file"),
    Case("resample --out is a zarr store mediar3d did not write",
         ("resample", "--input", SEQ + "/t000.tif", "--out", "{root}/foreign.zarr"), "foreign.zarr",
         "is not a zarr store written by mediar3d", damage=lambda root: foreign_zarr(root / "foreign.zarr")),
    Case("resample --out is mediar3d's store of another kind", ("resample", "--input", SEQ + "/t000.tif", "--out", FIELD),
         "w/field.zarr", "written by mediar3d as iso"),
    Case("an output is the input", ("resample", "--input", OME, "--out", OME), "o.ome.zarr", "is the input"),
    Case("an output's parent is a file", ("evaluate", "--res", "{root}/res", "--gt", GT, "--out",
                                          DATA + "/dataset.json/rows.csv"), "data/tiny/dataset.json", "is a file"),
    Case("a folder output is a file", ("track", "--res", "{root}/res", "--out", DATA + "/dataset.json"),
         "data/tiny/dataset.json", "is a file"),
    Case("segment --out holds other files", ("segment", SEQ, "--method", "classical", "--out", GT),
         "data/tiny/01_GT", "is not a CTC result folder"),
    # synth into an existing dataset it did not write (defect 3)
    Case("synth into a folder synth did not write", ("synth", "--preset", "tiny", "--out", GT),
         "data/tiny/01_GT", "is not a synthetic dataset"),
    # damaged intermediates and inputs: absent because lost, not because empty (defect 4)
    Case("field chunk deleted", ("reconstruct", "--input", FIELD, "--out", "{root}/m.tif"), "w/field.zarr",
         "is missing", damage=lambda root: first_chunk(root / "w" / "field.zarr").unlink()),
    Case("field chunk cut in half", ("reconstruct", "--input", FIELD, "--out", "{root}/m.tif"), "w/field.zarr",
         "truncated or corrupt", damage=lambda root: cut_in_half(first_chunk(root / "w" / "field.zarr"))),
    Case("field chunk of random bytes", ("reconstruct", "--input", FIELD, "--out", "{root}/m.tif"), "w/field.zarr",
         "truncated or corrupt", damage=lambda root: random_payload(first_chunk(root / "w" / "field.zarr"))),
    Case("views chunk cut in half", ("fuse", "--input", VIEWS, "--out", "{root}/f.zarr"), "w/views.zarr/xz",
         "truncated or corrupt", damage=lambda root: cut_in_half(first_chunk(root / "w" / "views.zarr" / "xz"))),
    Case("views chunk deleted", ("fuse", "--input", VIEWS, "--out", "{root}/f.zarr"), "w/views.zarr/yz",
         "is missing", damage=lambda root: first_chunk(root / "w" / "views.zarr" / "yz").unlink()),
    Case("iso chunk corrupt, classical", ("reconstruct", "--input", ISO, "--method", "classical", "--out",
                                          "{root}/m.tif"), "w/iso.zarr", "truncated or corrupt",
         damage=lambda root: random_bytes(first_chunk(root / "w" / "iso.zarr"))),
    Case("OME-Zarr chunk deleted", ("resample", "--input", OME, "--out", "{root}/i.zarr"), "o.ome.zarr/s0",
         "is missing", damage=lambda root: first_chunk(root / "o.ome.zarr" / "s0").unlink()),
    Case("OME-Zarr chunk corrupt", ("resample", "--input", OME, "--out", "{root}/i.zarr"), "o.ome.zarr/s0",
         "truncated or corrupt", damage=lambda root: random_bytes(first_chunk(root / "o.ome.zarr" / "s0"))),
    # OME-Zarr metadata that does not match its arrays
    Case("OME-Zarr axes count differs from the dimensions", ("info", OME), "o.ome.zarr", "lists 4 axes",
         damage=lambda root: edit_multiscales(root / "o.ome.zarr", lambda ms: ms["axes"].pop(1))),
    Case("OME-Zarr dataset path wrong", ("info", OME), "o.ome.zarr", "'s9' does not exist",
         damage=lambda root: edit_multiscales(root / "o.ome.zarr", lambda ms: ms["datasets"][0].update(path="s9"))),
    Case("OME-Zarr scale too short", ("info", OME), "o.ome.zarr", "one value per axis",
         damage=lambda root: edit_multiscales(root / "o.ome.zarr", lambda ms: ms["datasets"][0][
             "coordinateTransformations"][0].update(scale=[1.0, 0.5, 0.5]))),
    # an absurd voxel size (defect 6); in a subprocess stopped after a minute: a regression fills the disk
    Case("absurd voxel size", ("resample", "--input", SEQ + "/t000.tif", "--voxel-size", "9000", "0.001", "0.001",
                               "--out", "{root}/i.zarr"), "data/tiny/01/t000.tif", "over the budget", isolated=True),
    # a bad frame after good ones: no partial result folder; a bad mask after good ones: no mask changed
    Case("segment: a bad later frame", ("segment", SEQ, "--method", "classical", "--out", "{root}/data/tiny/01_RES"),
         "data/tiny/01/t002.tif", "empty frame",
         damage=lambda root: ctc.write_frame(root / "data/tiny/01/t002.tif", np.zeros((8, 48, 48), np.uint16), VOXEL)),
    Case("track in place: a bad later mask", ("track", "--res", "{root}/res"), "res/mask002.tif", "truncated TIFF",
         damage=lambda root: renumber_and_cut(root / "res")),
    Case("frames of different shapes", ("to-omezarr", "--ctc", SEQ, "--out", "{root}/o2.ome.zarr"),
         "data/tiny/01/t001.tif", "differs from the shape",
         damage=lambda root: ctc.write_frame(root / "data/tiny/01/t001.tif",
                                             np.arange(8 * 40 * 48, dtype=np.uint16).reshape(8, 40, 48), VOXEL)),
    # a full disk: every write over the limit fails as ENOSPC would
    Case("disk full", ("to-omezarr", "--ctc", SEQ, "--res", "{root}/res", "--out", "{root}/o2.ome.zarr"),
         "o2.ome.zarr", "disk full", isolated=True, file_size_limit=2000),
]


def run_cli(argv: list[str], capsys, case: Case) -> tuple[int, str]:
    """(exit status, stderr) of one `mediar3d` command, in this process or, for an isolated case, in a
    subprocess (with the case's file size limit, stopped after a minute)."""
    if not case.isolated:
        status = main(argv)
        return status, capsys.readouterr().err

    def limit():
        if case.file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.file_size_limit, case.file_size_limit))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over the limit fails (EFBIG) instead of killing

    proc = subprocess.run([sys.executable, "-m", "mediar3d", *argv], capture_output=True, text=True, timeout=60,
                          preexec_fn=limit, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_loses_nothing(case, prepared, tmp_path, capsys):
    root = tmp_path / "case"
    shutil.copytree(prepared, root)
    case.damage(root)
    before = snapshot(root)
    status, err = run_cli([a.format(root=root) for a in case.argv], capsys, case)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert status == 1, err
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    assert str(root / case.named) in errors[0] and case.says in errors[0], errors[0]
    assert snapshot(root) == before, "a file was lost, changed or left behind"
