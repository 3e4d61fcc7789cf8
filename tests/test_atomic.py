"""mediar3d.io.atomic: an output replaces only what its kind may replace, never an input, and
temporaries of processes that are gone are removed."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile

import pytest

from mediar3d.errors import InputError
from mediar3d.io import atomic
from mediar3d.io.atomic import FILE, INTO, Kind, atomic_path, check_output, scratch_dir, sweep_stale

RESULTS = Kind("a test result folder", folder=True, owns=lambda path: (path / "made-by-us").is_file())


def test_a_file_replaces_a_file_never_a_folder(tmp_path):
    (tmp_path / "a.csv").write_text("old")
    with atomic_path(tmp_path / "a.csv") as tmp:
        tmp.write_text("new")
    assert (tmp_path / "a.csv").read_text() == "new"
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "t000.tif").write_text("raw")
    with pytest.raises(InputError, match="frames: is a folder, but the output is a file"):
        with atomic_path(tmp_path / "frames") as tmp:
            tmp.write_text("csv")
    assert (tmp_path / "frames" / "t000.tif").read_text() == "raw"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "frames"]


def test_a_folder_output_replaces_only_an_empty_folder_or_its_own_kind(tmp_path):
    out = tmp_path / "out"
    for content in ("first", "second"):  # absent, then our own: replaced whole
        with atomic_path(out, RESULTS) as tmp:
            (tmp / "made-by-us").write_text(content)
    assert (out / "made-by-us").read_text() == "second"
    (tmp_path / "empty").mkdir()
    with atomic_path(tmp_path / "empty", RESULTS) as tmp:
        (tmp / "made-by-us").write_text("x")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="theirs: exists and is not a test result folder"):
        check_output(tmp_path / "theirs", RESULTS)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="file: is a file, but the output is a test result folder"):
        check_output(tmp_path / "file", RESULTS)
    check_output(tmp_path / "theirs", INTO)  # files are written into a folder of kind INTO, none replaced
    assert (tmp_path / "theirs" / "thesis.tex").read_text() == "precious"


def test_an_output_never_is_holds_or_overwrites_an_input(tmp_path):
    data = tmp_path / "data"
    (data / "01").mkdir(parents=True)
    (data / "01" / "t000.tif").write_text("raw")
    with pytest.raises(InputError, match="is the input"):
        check_output(data / "01" / "t000.tif", FILE, [data / "01" / "t000.tif"])
    with pytest.raises(InputError, match="holds the input"):
        check_output(data, INTO, [data / "01" / "t000.tif"])
    with pytest.raises(InputError, match="lies inside the input .* and exists"):
        check_output(data / "01" / "t000.tif", FILE, [data])
    check_output(data / "01" / "new.csv", FILE, [data])  # a new file beside the input is fine
    (data / "link").symlink_to(data / "01")
    with pytest.raises(InputError, match="is the input"):
        check_output(data / "link", RESULTS, [data / "01"])


def test_a_file_in_the_way_of_the_parent_folder_is_named(tmp_path):
    (tmp_path / "dataset.json").write_text("{}")
    with pytest.raises(InputError, match=r"dataset.json: is a file, not a folder"):
        check_output(tmp_path / "dataset.json" / "sub" / "rows.csv")


def test_stale_temporaries_of_gone_processes_are_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = tmp_path / f".a.csv.tmp-{atomic.HOST}-{gone}-0123abcd"
    stale.mkdir()
    (stale / "half").write_text("half-written")
    running = tmp_path / f".a.csv.tmp-{atomic.HOST}-{os.getppid()}-0123abcd"
    other_host = tmp_path / f".a.csv.tmp-otherhost-{gone}-0123abcd"
    other_name = tmp_path / f".b.csv.tmp-{atomic.HOST}-{gone}-0123abcd"
    for path in (running, other_host, other_name):
        path.write_text("kept")
    with atomic_path(tmp_path / "a.csv") as tmp:
        tmp.write_text("rows")
    assert not stale.exists()
    assert running.exists() and other_host.exists() and other_name.exists()
    assert sweep_stale(tmp_path) == [other_name]


def test_scratch_folders_in_tmpdir_are_removed_also_when_left_by_a_killed_run(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with scratch_dir("segment-t0") as work:
        (work / "iso.zarr").mkdir()
        assert work.parent == tmp_path and work.name.startswith("mediar3d-segment-t0.tmp-")
    assert list(tmp_path.iterdir()) == []
    left = tmp_path / f"mediar3d-segment-t3.tmp-{atomic.HOST}-999999999-0123abcd"  # no such pid
    foreign = tmp_path / f"other-tool.tmp-{atomic.HOST}-999999999-0123abcd"
    left.mkdir(), foreign.mkdir()
    with scratch_dir("segment-t0"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [foreign.name]


def test_a_failing_write_names_the_output_and_leaves_nothing(tmp_path):
    with pytest.raises(OSError) as caught:
        with atomic_path(tmp_path / "out.zarr", RESULTS) as tmp:
            (tmp / "chunk").write_text("part")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.filename == str(tmp_path / "out.zarr") and caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
