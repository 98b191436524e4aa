"""Giving memory back to the system after a burst (a flood of connections): glibc keeps freed
heap memory for reuse, so a process that was briefly large stays large; `malloc_trim` returns
the free pages. Elsewhere (another C library, another system) this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_free_memory() -> bool:
    """Frees what reference cycles still hold, then returns the C heap's free pages to the
    system; False where the latter is not possible."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
