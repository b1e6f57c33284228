"""What machine the figures were measured on: cores, CPU model, memory, load, build."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import charter


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_cores() -> int:
    """Cores this process may run on (its affinity), which is what the measurements could use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def describe() -> dict[str, Any]:
    """The machine report stored with every result."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_bytes": _memory_bytes(),
        "load_average": load,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "charter_version": charter.__version__,
        "build_profile": charter.BUILD_PROFILE,
    }


def summary(machine: dict[str, Any]) -> str:
    """One line: `2 cores (AMD EPYC), 23.4 GiB, load 1.02 0.88 0.75, charter 0.1.0 (release build)`."""
    mem = machine.get("memory_bytes")
    gib = f", {mem / 2**30:.1f} GiB" if mem else ""
    load = " ".join(str(x) for x in machine.get("load_average", []))
    return (
        f"{machine['usable_cores']} cores ({machine['cpu_model']}){gib}, load {load or '?'}, "
        f"charter {machine['charter_version']} ({machine['build_profile']} build), "
        f"Python {machine['python']}"
    )
