"""Outputs: written atomically, never over what we did not make.

- Every output is written to a hidden temporary sibling (`.NAME.tmp-HOST-PID-HEX`) and renamed into
  place when complete, so a killed job never leaves a half-written file that a later run would trust.
- An output replaces only what its kind may replace (`Kind`): a file replaces a file, never a folder;
  a folder output (a zarr store, a CTC result folder, a synthetic dataset) replaces an empty folder or
  an earlier output of its own kind, recognised by `Kind.owns`, never anything else.
- `check_output` refuses, as one `InputError` naming the path, an output that is an input, holds one,
  or would replace a file inside an input folder, and a path whose parent is a file. Commands call it
  for every output before any work (`mediar3d.cli`); the writers call it again.
- Temporaries of processes of this host that no longer run (a run killed with SIGKILL) are removed
  the next time the same path is written (`sweep_stale`); `scratch_dir` makes work folders in TMPDIR
  under the same rule.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from mediar3d.errors import InputError

HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"
#: `<stem>.tmp-<host>-<pid>-<8 hex>` (a temporary sibling or a scratch folder)
_TEMP_RE = re.compile(r"^(?P<stem>.*)\.tmp-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


@dataclass(frozen=True)
class Kind:
    """What an output path holds.

    `what` names it in messages ("a file", "a CTC result folder", ...). A folder kind with `owns`
    is replaced as a whole, and only where the path is absent, an empty folder or `owns(path)`
    recognises an earlier output of this kind; a folder kind without `owns` is a folder that files are
    written into (nothing in it is replaced as a whole)."""

    what: str
    folder: bool = False
    owns: Callable[[Path], bool] | None = None


FILE = Kind("a file")
INTO = Kind("a folder", folder=True)
#: files a workflow engine adds to the folder outputs it tracks (Snakemake's `directory()`); they do
#: not stop a folder from being recognised as an earlier output
ENGINE_FILES = frozenset({".snakemake_timestamp"})


def _temp_name(stem: str) -> str:
    return f"{stem}.tmp-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(_temp_name(f".{path.name}"))


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale(folder: Path, stem: str | None = None, prefix: str = "") -> list[Path]:
    """Remove the temporaries in `folder` (of exactly `stem`, else of any stem starting with `prefix`)
    left by processes of this host that no longer run; returns what was removed. Other hosts'
    temporaries and those of running processes are kept."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if (match is None or match["host"] != HOST or not match["stem"].startswith(prefix)
                or (stem is not None and match["stem"] != stem)
                or int(match["pid"]) == os.getpid() or _pid_running(int(match["pid"]))):
            continue
        _remove(entry)
        removed.append(entry)
    return removed


# ---------------------------------------------------------------------------------------------
# checks


def _relation(path: Path, source: Path) -> str | None:
    """How output `path` collides with input `source` (both resolved), or None."""
    if path == source:
        return "is the input"
    if path in source.parents:
        return f"holds the input {source}"
    if source in path.parents and path.exists():
        return f"lies inside the input {source} and exists: it would be replaced"
    return None


def check_apart(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """InputError unless output `path` is apart from every input (not one, not holding one, not an
    existing path inside an input folder)."""
    out = Path(os.path.abspath(path))
    resolved = out.resolve()
    for source in inputs:
        if source is None:
            continue
        src = Path(source).resolve()
        problem = _relation(resolved, src) or _relation(out, Path(os.path.abspath(source)))
        if problem:
            raise InputError(path, f"output {problem}: choose another output path")


def _check_parent(path: Path) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(parent, f"is a file, not a folder: cannot write {path} in it")
            return


def check_output(path: str | os.PathLike, kind: Kind = FILE, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Refuse (InputError naming the path) an output that would replace what `kind` may not replace:
    a folder where a file goes, a file where a folder goes, a folder that `kind` does not own, an
    input (see `check_apart`), or a path below a file. Returns the path."""
    path = Path(path)
    check_apart(path, inputs)
    _check_parent(path)
    if not path.exists():
        return path
    if not kind.folder:
        if path.is_dir():
            raise InputError(path, f"is a folder, but the output is {kind.what}: refusing to replace a folder "
                                   "(remove it or choose another path)")
        return path
    if not path.is_dir():
        raise InputError(path, f"is a file, but the output is {kind.what}: refusing to replace it "
                               "(remove it or choose another path)")
    if kind.owns is not None and any(path.iterdir()) and not kind.owns(path):
        raise InputError(path, f"exists and is not {kind.what}: refusing to replace it "
                               "(remove it or choose another path)")
    return path


# ---------------------------------------------------------------------------------------------
# writing


def _replace(tmp: Path, path: Path) -> None:
    """Move `tmp` to `path`; an existing folder at `path` is first renamed aside, then removed."""
    if path.is_dir() and not path.is_symlink():
        old = _tmp_sibling(path)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, kind: Kind = FILE) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the block succeeds it replaces `path`.

    `check_output(path, kind)` runs first. On error the temporary is removed and `path` is left as
    it was. Folder kinds get the temporary as a new empty folder; file kinds get a path to write."""
    path = Path(path)
    check_output(path, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent, f".{path.name}")
    tmp = _tmp_sibling(path)
    if kind.folder:
        tmp.mkdir()
    try:
        yield tmp
        check_output(path, kind)
        _replace(tmp, path)
    except OSError as err:  # disk full, no permission, ...: name the output, not a temporary file in it
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


@contextlib.contextmanager
def temp_sibling(path: str | os.PathLike) -> Iterator[Path]:
    """A new empty hidden folder next to `path` (same file system: its files can be renamed into
    `path`), removed afterwards with whatever is left in it; stale ones are removed first."""
    path = Path(path)
    sweep_stale(path.parent, f".{path.name}")
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(label: str) -> Iterator[Path]:
    """A new work folder `mediar3d-<label>.tmp-HOST-PID-HEX` in TMPDIR, removed afterwards; stale ones
    (their process gone) are removed first."""
    root = Path(tempfile.gettempdir())
    sweep_stale(root, prefix="mediar3d-")
    path = root / _temp_name(f"mediar3d-{label}")
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_csv_atomic(frame, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame to `path` as CSV without the index, atomically; returns the path."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)
