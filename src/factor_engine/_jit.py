"""Compiled kernels: numba's ``njit`` with the project's settings.

The time-series kernels of the styles and of specific risk are recursions along each asset's dates (EWMA sums
over a trailing window, running counts), which numpy can only express as one vectorized step per date with a
full (dates × assets) temporary per term; compiled, each is one pass over the data with its accumulators in
registers. :func:`kernel` compiles with

* ``nogil=True``: the kernels run in :func:`factor_engine._dense.run_parallel`'s threads, truly in parallel;
* ``cache=True``: the machine code is kept on disk beside the module (``__pycache__``, or numba's user cache
  directory where that is read-only), so only the first process after an install or a change compiles;
* ``error_model="numpy"``: division by zero gives inf or NaN, as in numpy, instead of raising.

numba is imported by the modules that hold kernels (``_*_kernels.py``), which their callers import inside the
functions that use them: ``import factor_engine`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

__all__ = ["kernel"]

_Function = TypeVar("_Function", bound=Callable[..., Any])


def kernel(function: _Function) -> _Function:
    """``function`` compiled by numba (no Python objects inside; see the module docstring)."""
    return cast(_Function, numba.njit(nogil=True, cache=True, error_model="numpy")(function))
