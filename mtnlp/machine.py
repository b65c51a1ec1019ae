"""What machine a measurement ran on, for reports and benchmarks."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, object]:
    """Cores, CPU model, memory and Python: enough to compare figures across machines."""
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def one_line(machine: dict[str, object] | None = None) -> str:
    m = machine or describe()
    return f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}"
