"""What /proc/cpuinfo says about this CPU (empty where there is no /proc, e.g. macOS)."""

from __future__ import annotations

from pathlib import Path


def cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if k and k not in info:
                info[k] = v.strip()
    except OSError:
        pass
    return info


def cpu_flags(info: dict[str, str] | None = None) -> set[str]:
    """ISA flags (x86 ``flags``, Arm ``Features``)."""
    info = cpuinfo() if info is None else info
    return set((info.get("flags") or info.get("Features") or "").split())
