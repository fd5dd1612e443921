"""The C allocator's settings for steps that free and reallocate the same large buffers over and over."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it documents for 64-bit systems
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 2**20
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse the memory that large tensors free instead of returning it to the system.

    By default glibc maps a large allocation afresh and unmaps it when freed (above a threshold that it moves
    between 128 KiB and 32 MiB as blocks are freed, and trims the heap's free top beyond 128 KiB), so each
    training step faults in and zeroes the pages of its activations again. With the mmap threshold at its
    documented maximum and a trim threshold of 1 GiB, freed blocks stay in the heap for the next step
    (the gain: ``benchmarks/loop_overhead.py --loop-only`` with and without ``--glibc-defaults``, recorded in
    ``benchmarks/README.md``). The setting is the process's, for every thread; tensors above 32 MiB are still
    mapped each time.

    Returns:
        Whether the setting took; False where the C library has no ``mallopt`` (macOS, not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    taken = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not taken:
        log.info("the C library refused the allocator settings; large tensors are mapped afresh each step")
    return taken
