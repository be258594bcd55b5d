"""glibc malloc set for a long-running service with many threads, and freed memory handed back.

By default glibc gives each busy thread an arena of its own (up to 8 per core), each keeping
the frame-sized blocks its thread freed: 40 request threads taking /capture in turn grew the
service by 50-60 MB, with 2 arenas by under 10 MB. What a dropped model freed also stays in
the heap (glibc raises its mmap threshold once a large block is freed, so a model's arrays
come from the heap too): each swap grew the service by 2-3 MB until release() handed it back.
A fixed mmap threshold would keep frames out of the heap as well, but costs 500 page faults
and about 2 ms of CPU a frame, so it is left to glibc. Measurements: docs/cli.md, "Memory".
MALLOC_ARENA_MAX set by the operator wins over the value here.
"""
import ctypes
import os

M_ARENA_MAX = -8  # glibc mallopt parameter
ARENAS = 2

try:
    LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to set
    LIBC = None


def tune():
    """Cap the arenas (at the start, before the service's threads run)."""
    if LIBC is not None and "MALLOC_ARENA_MAX" not in os.environ:
        LIBC.mallopt(M_ARENA_MAX, ARENAS)


def release():
    """Hand the heap's free pages back to the system (after a model was dropped): without it
    they stay in the process's RSS for an allocation that may never come."""
    if LIBC is not None:
        LIBC.malloc_trim(0)
