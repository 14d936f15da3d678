"""Argument types shared by the benchmark scripts (a mistake is one line and exit code 2)."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    """argparse type: an integer ≥ 1 (a batch, a dimension, a count of repetitions)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed memory mapped: raise its mmap threshold to 32 MiB (the
    largest it takes) and its trim threshold to 1 GiB, which also stops it from adjusting
    either as it goes. By default a batch × d × d temporary of a megabyte or more, freed at the
    end of one call, is handed back to the kernel, and the next call takes a page fault for every
    4 KiB it touches again (~4 µs each on the machine of docs/performance.md). Process-wide, like
    ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`` in the environment.

    Returns:
        A line for the table's header. Exits with code 2 where the C library is not glibc.
    """
    import ctypes
    import ctypes.util
    import platform
    import sys

    if platform.libc_ver()[0] != "glibc":
        print("--keep-freed-memory needs glibc's malloc (mallopt)", file=sys.stderr)
        raise SystemExit(2)
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1 and ok
    if not ok:
        print("--keep-freed-memory: glibc's mallopt refused the thresholds", file=sys.stderr)
        raise SystemExit(2)
    return "glibc malloc keeps freed memory (mmap threshold 32 MiB, trim threshold 1 GiB)"
