"""One workflow run per output folder.

Snakemake's own lock cannot keep two runs of this workflow apart: it lives in the working
directory's `.snakemake/locks` (a run from another directory, or with `-d`, never sees it), and it
lists the files of the DAG known when the run starts. With the `info` checkpoint that DAG holds
only `info.json` and the dataset; every per-frame job is added after the checkpoint ran, unlocked. A
second run on the same `out` therefore started, scheduled the same jobs and deleted the first run's
temporary intermediates (and the first run deleted the second's).

`hold` takes an exclusive lock (`filelock`: flock(2)) on `<out>/.mediar3d.lock` for the life of the
Snakemake process that runs the jobs (the workflow's `onstart`), whatever its working directory. The
operating system releases it when that process ends, also when it is killed, so there is no stale
lock to remove. The holder's pid, host, start time and working directory are kept beside it
(`.mediar3d.lock.json`) for the message the refused run prints.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from filelock import FileLock, Timeout

from mediar3d.errors import ConfigError
from mediar3d.io.atomic import HOST

LOCK_NAME = ".mediar3d.lock"
_HELD: dict[str, FileLock] = {}


def _holder(info: Path) -> str:
    """'pid N on HOST since TIME, working directory DIR' of the run that holds the lock, if known."""
    try:
        who = json.loads(info.read_text(encoding="utf-8"))
        return f" (pid {who['pid']} on {who['host']} since {who['since']}, working directory {who['cwd']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def hold(out: str | os.PathLike) -> Path:
    """Lock output folder `out` for this process until it ends; returns the lock file. Another run
    holding it is a ConfigError naming the folder and that run."""
    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    if str(path) in _HELD:
        return path
    lock = FileLock(path, timeout=0)
    info = path.with_name(LOCK_NAME + ".json")
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"{folder}: another mediar3d workflow run is writing to this output folder"
                          f"{_holder(info)}; wait for it to end or choose another 'out'") from None
    _HELD[str(path)] = lock
    info.write_text(json.dumps({"pid": os.getpid(), "host": HOST, "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "cwd": os.getcwd()}), encoding="utf-8")
    return path
