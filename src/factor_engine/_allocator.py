"""Process-wide memory allocator settings for the one-shot commands that build or extend a model.

A build at 3,000 assets × 2,520 dates allocates and frees some hundreds of temporary numpy arrays of 50–60 MB
(one float64 value per row or per date × asset cell). glibc serves every allocation above its mmap ceiling
(32 MB on 64-bit, whatever ``M_MMAP_THRESHOLD`` asks) with a fresh ``mmap`` and returns it to the kernel on
``free``: each array is then page-faulted and zeroed anew, about 14 GB of pages per build, which cost 6–7 s of
kernel time on the 2-core development machine (a third of the build). :func:`reuse_freed_memory` asks glibc to
serve large blocks from its heap instead and to keep what is freed there for the next allocation (no mmap, no
trimming, one arena so the threads' blocks are reused across threads). The price is that freed memory stays
with the process until it exits, which suits a command that exits after one build, and not a long-running
service (which does not call it).

It also turns off numpy's transparent huge pages (numpy asks the kernel for 2 MB pages for every array of 4 MB
or more, ``madvise(MADV_HUGEPAGE)``): on the virtual machines measured, zeroing and backing huge pages cost the
build about twice the kernel time of 4 KiB pages (5.6–7.1 s against 2.6–2.9 s of system CPU per build at
3,000 × 2,520, the wall time 14.1–15.2 s against 12.2–13.3 s over six alternating pairs), although it faults
fewer times. A ``NUMPY_MADVISE_HUGEPAGE`` set in the environment is left as it is.

Measured with ``bench/bench_build.py`` (see the README's performance section).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["ONE_SHOT_COMMANDS", "is_one_shot", "reuse_freed_memory"]

#: The ``factor-engine`` commands that build or extend a model and exit, for which the command line calls
#: :func:`reuse_freed_memory` before numpy and polars load.
ONE_SHOT_COMMANDS = frozenset({"build", "update"})


def is_one_shot(argv: list[str]) -> bool:
    """Whether the command line ``argv`` (``sys.argv``) runs one of :data:`ONE_SHOT_COMMANDS`."""
    return next((a for a in argv[1:] if not a.startswith("-")), None) in ONE_SHOT_COMMANDS


# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# freed memory at the top of the heap beyond this is returned to the kernel (mallopt takes a C int)
_TRIM_THRESHOLD = 2**30


def reuse_freed_memory() -> bool:
    """Make glibc keep freed large blocks in the heap for reuse and numpy use 4 KiB pages (see the module
    docstring); call it early in a process that exits after its work, before numpy loads. Returns whether
    glibc's settings took effect (False off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    if "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
        os.environ["NUMPY_MADVISE_HUGEPAGE"] = "0"  # read by numpy when it loads
        numpy = sys.modules.get("numpy")
        if numpy is not None:  # already loaded: the same setting, directly
            numpy._core.multiarray._set_madvise_hugepage(False)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no mallopt parameters to speak of)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
