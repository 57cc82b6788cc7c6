"""The host's cache sizes, read at run time, for dispatch rules that depend on
what stays in a core's cache (not on a CPU's name)."""

from __future__ import annotations

import functools
from pathlib import Path

_SYSFS = Path("/sys/devices/system/cpu/cpu0/cache")
_CPUINFO = Path("/proc/cpuinfo")
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _parse_size(text: str) -> int:
    """sysfs's "2048K" (or "1M", or plain bytes) as bytes."""
    text = text.strip().upper()
    if text and text[-1] in _UNITS:
        return int(text[:-1]) * _UNITS[text[-1]]
    return int(text)


@functools.cache
def cache_bytes(level: int, root: Path = _SYSFS) -> int:
    """One core's data (or unified) cache at ``level``, in bytes; 0 where the
    host does not say (a rule built on it then takes its cautious branch)."""
    try:
        for index in sorted(root.glob("index*")):
            if (int((index / "level").read_text()) == level
                    and (index / "type").read_text().strip() in ("Data", "Unified")):
                return _parse_size((index / "size").read_text())
    except (OSError, ValueError):
        pass
    return 0


def l2_bytes() -> int:
    """One core's L2 in bytes, or 0 if unknown."""
    return cache_bytes(2)


def l3_bytes() -> int:
    """The L3 cpu0 shares, in bytes, or 0 if unknown."""
    return cache_bytes(3)


@functools.cache
def cpu_vendor(cpuinfo: Path = _CPUINFO) -> str:
    """The CPU's vendor_id ("AuthenticAMD", "GenuineIntel"), or "" if unknown."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def l3_feeds_each_core_fast() -> bool:
    """Whether one core reads from L3 at several times the ~25 GB/s that a
    16-row step of panel tiles needs when its weights come from L3: AMD's L3,
    one per core complex (one core 76-79 GB/s on Zen 5), not Intel's server
    mesh (~25 GB/s a core on the Sapphire Rapids-class Xeon). No file tells
    how fast a core reads its L3; the vendor stands in for that design."""
    return cpu_vendor() == "AuthenticAMD"
