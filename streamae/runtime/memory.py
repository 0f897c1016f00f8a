"""The memory this process may count on: what the in-core scheme and the read policy size by."""

from __future__ import annotations

import os


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or the physical memory if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
