"""The C allocator of loader workers.

A loader worker decodes an image, resizes it and builds its masks: buffers of 1-10 MB, freed
after every sample. glibc serves blocks above its mmap threshold with their own memory map,
returned to the system on free, but it raises that threshold to the size of each such block
freed (up to 32 MiB). After the first large image a worker's buffers therefore come from the
heap, whose freed holes it keeps: each worker grows for hundreds of batches (measured with and
without a fixed threshold in docs/benchmarks.md). ``fix_mmap_threshold`` turns the dynamic
threshold off.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3


def _glibc():
    """This process's C library if it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def fix_mmap_threshold(nbytes: int) -> bool:
    """From now on in this process, serve every allocation of at least ``nbytes`` with its own
    memory map (given back on free) and trim the heap's free top above ``nbytes``; setting the
    threshold also stops glibc from raising it. ``nbytes`` 0 leaves the allocator as it is.
    Returns whether the allocator was changed (False with 0 or a C library other than glibc)."""
    libc = _glibc() if nbytes > 0 else None
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, nbytes)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, nbytes)
    )
