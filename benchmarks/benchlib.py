"""What the benchmark scripts share: the machine description of their JSON and the mean ± std
of their tables. Imported by sibling scripts (each puts this folder on ``sys.path``)."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path


def machine(threads: int) -> dict:
    """CPU model, cores, torch threads per process, Python and torch versions."""
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "torch": version("torch")}


def mean_std(xs: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)
