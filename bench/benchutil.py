"""What every benchmark shares (imported by the bench/ scripts): the machine it ran on, the report's
header, best-of timing, peak memory and writing the report."""

from __future__ import annotations

import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable


def machine() -> str:
    """One line: core count, CPU model, RAM, OS, Python and the current load average."""
    cpu, ram = platform.processor() or "unknown CPU", "unknown RAM"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
        ram = f"{kb / 2**20:.1f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"nproc={os.cpu_count()}, {cpu}, {ram}, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}; load average {load}")


def header(title: str, machine_note: str = "") -> list[str]:
    """The first lines of a report: `# title`, the command that made it (this script with its actual
    arguments, shell-quoted) and the machine (`machine()`, then `machine_note` appended as is)."""
    command = shlex.join([".venv/bin/python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    return [f"# {title}", "", f"Command: `{command}`", "", f"Machine: {machine()}{machine_note}", ""]


def best_of(fn: Callable[[], Any], repeat: int, warmup: bool = True,
            times: list[float] | None = None) -> tuple[float, Any]:
    """(seconds, value): the best wall time of `repeat` calls of `fn` (best-of filters out noise from
    other processes) and the value that call returned; with `warmup`, after one untimed call (numba
    compilation, torch start-up). Every timed duration is also appended to `times` when given."""
    if warmup:
        fn()
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        if times is not None:
            times.append(seconds)
        if seconds < best:
            best, value = seconds, out
        del out  # hold at most the best value during the next call
    return best, value


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB (VmHWM; unlike ru_maxrss it does not carry the
    parent's peak across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_report(path: Path, lines: list[str]) -> None:
    """Write the markdown report `lines` to `path` (folders created) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
