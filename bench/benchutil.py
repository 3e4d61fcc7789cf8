"""What every benchmark records about the machine it ran on (imported by the bench/ scripts)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


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


def write_report(path: Path, lines: list[str]) -> None:
    """Write the markdown report `lines` to `path` (folders created) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
