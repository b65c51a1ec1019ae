"""Give memory freed after large requests back to the operating system.

glibc's malloc keeps what a request freed in its arenas for reuse instead of returning it: after a few large
requests the server's resident memory stays at its peak (observed 1.16 -> 4.7 GB, then flat; not a leak).
`MemoryReturner` looks once a second at the resident size and at the bytes free in malloc's arenas (`mallinfo2`), and
when either has grown by `TRIM_GROWTH_BYTES` since the last trim and the resident size has stopped growing, asks glibc
to release its free memory (`malloc_trim(0)`). Both are watched because a trim that falls inside a large request
returns little and leaves the resident size at the request's level: what that request frees afterwards shows only
in the arenas' free bytes. Nothing is added to the request path; elsewhere (no glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

TRIM_GROWTH_BYTES = 64 << 20
SETTLED_BYTES = 1 << 20  # growth between two looks below this: the large request is done
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _free_bytes_reader():
    """A function returning the bytes free in malloc's arenas (all of them), or 0 where glibc has no mallinfo2
    (before 2.33): the resident size alone then decides."""
    mallinfo2 = getattr(_libc(), "mallinfo2", None)
    if mallinfo2 is None:
        return lambda: 0
    mallinfo2.argtypes, mallinfo2.restype = [], _MallInfo2
    return lambda: mallinfo2().fordblks


def _malloc_trim():
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:  # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class MemoryReturner:
    def __init__(self, interval_s: float = 1.0) -> None:
        self._trim = _malloc_trim()
        self._free_bytes = _free_bytes_reader()
        self._interval = interval_s
        self._stop = threading.Event()

    def start(self) -> None:
        if self._trim is None or not os.path.exists("/proc/self/statm"):
            return
        threading.Thread(target=self._loop, name="memory-returner", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        # The usual resident size and free bytes (the lowest since the last trim), and the size at the last look.
        floor = previous = resident_bytes()
        free_floor = self._free_bytes()
        while not self._stop.wait(self._interval):
            now, free = resident_bytes(), self._free_bytes()
            grown = now - floor >= TRIM_GROWTH_BYTES or free - free_floor >= TRIM_GROWTH_BYTES
            # Trim once the growth has stopped (a large request is done, or paused), not while it is still rising.
            if grown and now - previous < SETTLED_BYTES:
                self._trim(0)
                after = resident_bytes()
                log.debug("Returned %d MB of freed memory to the OS", (now - after) >> 20)
                # What stays is in use (or not returnable): the next trim waits for new growth beyond it.
                floor = previous = after
                free_floor = self._free_bytes()
                continue
            floor, previous, free_floor = min(floor, now), now, min(free_floor, free)
