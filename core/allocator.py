"""Keep large freed blocks in the process between decoding steps, instead of handing them back to the kernel.

Every search step allocates a few (rows x vocabulary) tensors and frees them before the next step: logits,
log-probs, beam candidates, each 10 MB for 320 beam rows over 8,000 tokens. glibc's malloc serves blocks
this large with mmap, or trims them off the top of its heap once freed, so the next step gets fresh pages
from the kernel, one page fault at a time (each page also zeroed). Our beam benchmark took 45k-110k page faults
per search and spent a fifth of its time on them (benchmarks/README.md). With a fixed mmap threshold of
32 MB and a trim threshold of 256 MB, freed blocks stay in the heap and the next step reuses them.

The cost: the heap may keep up to 256 MB free at its top (and, as always, free blocks inside it). The
settings are process-wide, so the decoding command lines apply them, not the library on import; a program
of your own that decodes large batches calls `keep_freed_memory()` once. One-sentence decoding allocates too
little to notice; training was not measurably faster. It does nothing without glibc (macOS, Windows, musl),
and nothing useful where another malloc (jemalloc, tcmalloc) is preloaded.
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # blocks above this still come from mmap (old glibc accepted no more than 32 MB)
TRIM_THRESHOLD = 256 << 20


def glibc() -> bool:
    """Whether this process runs on glibc."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, OSError, ValueError):  # no confstr (Windows), or not glibc
        return False


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed blocks of up to 32 MB for reuse; True when it took effect."""
    if not glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # setting the mmap threshold also stops glibc from moving it (and the trim threshold) on its own
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trim_set = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(mmap_set and trim_set)
