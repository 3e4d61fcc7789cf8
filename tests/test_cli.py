"""The `mediar3d` command: stage listing, info, and clear errors instead of tracebacks."""

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mediar3d.cli
from mediar3d.cli import COMMANDS, main
from mediar3d.io import ctc

REPO = Path(__file__).resolve().parents[1]


def _command_modules() -> set[str]:
    """The modules of mediar3d/cli/ that are commands (all but the package and the shared options)."""
    folder = Path(mediar3d.cli.__file__).parent
    return {p.stem for p in folder.glob("*.py")} - {"__init__", "options"}


def test_every_command_module_is_a_listed_subcommand():
    """Each module of mediar3d/cli/ is reachable as a subcommand, declares its paths and runs."""
    assert {module for module, _ in COMMANDS.values()} == _command_modules()
    for name, (module_name, _) in COMMANDS.items():
        module = importlib.import_module(f"mediar3d.cli.{module_name}")
        assert callable(module.add_arguments) and callable(module.run), name
        assert isinstance(module.OUTPUTS, dict) and isinstance(getattr(module, "INPUTS", ()), tuple), name


def test_help_lists_every_stage_and_each_stage_has_help():
    out = subprocess.run([sys.executable, "-m", "mediar3d", "--help"], capture_output=True, text=True, check=True).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()[0] in COMMANDS}
    assert lines.keys() == COMMANDS.keys()
    assert all(lines[name].endswith(" " + help_text) for name, (_, help_text) in COMMANDS.items())
    columns = {lines[name].index(help_text) for name, (_, help_text) in COMMANDS.items()}
    assert len(columns) == 1, "the stages' help is not aligned"
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0


def test_workflow_rules_call_only_existing_subcommands():
    """Every `mediar3d STAGE` a Snakemake rule runs is a subcommand of the table."""
    rules = (REPO / "workflow" / "rules").glob("*.smk")
    called = {m for path in rules for m in re.findall(r"mediar3d ([a-z-]+) ", path.read_text())}
    assert called and called <= set(COMMANDS), called - set(COMMANDS)


def test_info_describes_a_ctc_dataset(tmp_path, capsys):
    for t in range(3):
        ctc.write_frame(tmp_path / "ds" / "01" / f"t{t:03d}.tif", np.arange(60, dtype=np.uint16).reshape(3, 4, 5) + t, (2, 0.5, 0.5))
    assert main(["info", str(tmp_path / "ds"), "--json", str(tmp_path / "info.json")]) == 0
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["kind"] == "ctc"
    assert info["sequences"]["01"]["timepoints"] == [0, 1, 2]
    assert info["sequences"]["01"]["voxel_size_zyx_um"] == [2.0, 0.5, 0.5]
    assert "3 frames" in capsys.readouterr().out


def test_bad_input_gives_one_line_error_not_traceback(tmp_path):
    (tmp_path / "ds" / "01").mkdir(parents=True)
    (tmp_path / "ds" / "01" / "t000.tif").write_bytes(b"broken")
    (tmp_path / "ds" / "01" / "t001.tif").write_bytes(b"broken")
    (tmp_path / "ds" / "01" / "t003.tif").write_bytes(b"broken")
    proc = subprocess.run([sys.executable, "-m", "mediar3d", "info", str(tmp_path / "ds")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "gap in frame numbering" in proc.stderr and str(tmp_path / "ds" / "01") in proc.stderr


def test_track_makes_a_valid_res_folder(tmp_path):
    masks = tmp_path / "masks"
    for t in range(2):
        lab = np.zeros((2, 6, 6), np.uint16)
        lab[:, 1:4, 1:4] = 5 + t  # the same object, a different id in each frame
        ctc.write_mask(masks / f"mask{t:03d}.tif", lab)
    assert main(["track", "--res", str(masks), "--out", str(tmp_path / "01_RES")]) == 0
    tracks = ctc.read_tracks(tmp_path / "01_RES" / "res_track.txt")
    assert tracks.tolist() == [[1, 0, 1, 0]]
