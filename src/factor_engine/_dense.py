"""Cross-sectional kernels on dense (dates × slots) arrays, NaN marking an empty or missing cell.

The built-in style factors and the regression run their per-date statistics here rather than through
polars window expressions: a row of a dense array is one date's cross-section, so a statistic over every
date is one vectorized numpy call. The ``*_rows`` functions take the same statistics on long rows in date
order, each date a contiguous segment (:func:`date_bounds`), with compiled kernels
(:mod:`factor_engine._segment_kernels`) and no grid. Semantics match the ``pl.Expr`` builders of
:mod:`factor_engine.xsection` (statistics over finite values only; missing stays missing), which the tests check
against each other.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar, overload

import numpy as np
import polars as pl
from threadpoolctl import ThreadpoolController

from factor_engine.panel import DATE
from factor_engine.xsection import CONSTANT_TOL

_Item = TypeVar("_Item")


def worker_count() -> int:
    """Threads for the numerical kernels: the usable CPU cores (at most 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def run_parallel(task: Callable[[_Item], object], items: Iterable[_Item]) -> None:
    """Run ``task`` on each item using :func:`worker_count` threads (numpy releases the GIL)."""
    work = list(items)
    if len(work) <= 1 or worker_count() == 1:
        for item in work:
            task(item)
        return
    with ThreadPoolExecutor(max_workers=worker_count()) as pool:
        for _ in pool.map(task, work):
            pass


_blas_lock = threading.Lock()
_blas_users = 0
_blas_original: dict[str, int] = {}


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread while any caller, in any thread, is inside; restored when the last leaves.

    The kernels run their own threads over blocks of dates, each calling BLAS on small matrices, where a
    multi-threaded BLAS only adds contention. threadpoolctl's ``threadpool_limits`` restores what it saw on
    entry, so two overlapping uses from different threads (two builds in one service process) could leave BLAS
    single-threaded for good; this counts its users, records each library's threads when the first enters and
    sets them back when the last leaves. OpenBLAS (pthreads) takes a limit only from its "controlling thread",
    the first to set one, and silently ignores other threads: the controlling thread is cleared around each
    change, so the last user restores the limit from whichever thread it runs in.
    """
    global _blas_users
    with _blas_lock:
        if _blas_users == 0:
            libraries = ThreadpoolController().select(user_api="blas").lib_controllers
            _blas_original.clear()
            _blas_original.update({lib.filepath: lib.num_threads for lib in libraries})
            for lib in libraries:
                _set_threads(lib, 1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
                    if lib.filepath in _blas_original:
                        _set_threads(lib, _blas_original[lib.filepath])


def _set_threads(library: Any, threads: int) -> None:
    """Set a threadpoolctl library controller's threads from this thread (clearing OpenBLAS's controlling
    thread first, so the call is not silently ignored, and after, so the next caller may set it too)."""
    clear = getattr(library, "clear_controlling_thread", None)
    if clear is not None:
        clear()
    library.set_num_threads(threads)
    if clear is not None:
        clear()


def date_bounds(frame: pl.DataFrame) -> np.ndarray:
    """(T + 1,) the row bounds of each date of ``frame``, which must be sorted by date: the rows of date ``d``
    are ``bounds[d]:bounds[d + 1]``."""
    days = frame[DATE].to_physical().to_numpy()
    if days.shape[0] == 0:
        return np.zeros(1, np.int64)
    return np.append(np.flatnonzero(np.diff(days, prepend=days[0] - 1)), days.shape[0]).astype(np.int64)


# dates per task of the *_rows functions (a few hundred tasks at most over 30 years of dates)
_SEGMENTS_PER_TASK = 64


def _by_segments(bounds: np.ndarray, work: Callable[[int, int], None]) -> None:
    """``work(first, last)`` on consecutive blocks of the dates ``bounds`` delimits, in parallel."""
    n_dates = bounds.shape[0] - 1
    run_parallel(
        lambda first: work(first, min(first + _SEGMENTS_PER_TASK, n_dates)), range(0, n_dates, _SEGMENTS_PER_TASK)
    )


def _float_rows(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64)


def standardize_rows(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """:func:`standardize` of rows in date order, each date's rows ``bounds[d]:bounds[d + 1]`` (one compiled
    pass per date instead of a (dates × width) grid)."""
    from factor_engine._segment_kernels import standardize_segments

    values = _float_rows(values)
    out = np.empty_like(values)
    _by_segments(bounds, lambda first, last: standardize_segments(values, bounds, CONSTANT_TOL, out, first, last))
    return out


def winsorize_rows(values: np.ndarray, bounds: np.ndarray, percentile: float) -> np.ndarray:
    """:func:`winsorize` of rows in date order (see :func:`standardize_rows`)."""
    from factor_engine._segment_kernels import winsorize_segments

    values = _float_rows(values)
    out = np.empty_like(values)
    _by_segments(bounds, lambda first, last: winsorize_segments(values, bounds, percentile, out, first, last))
    return out


def quantile_nearest_rows(values: np.ndarray, bounds: np.ndarray, fractions: Sequence[float]) -> list[np.ndarray]:
    """:func:`quantile_nearest` of rows in date order (see :func:`standardize_rows`): for each fraction, the
    (T,) quantiles of the dates."""
    from factor_engine._segment_kernels import nearest_quantiles_segments

    values = _float_rows(values)
    wanted = np.asarray(fractions, dtype=np.float64)
    out = np.empty((bounds.shape[0] - 1, wanted.shape[0]))
    _by_segments(bounds, lambda first, last: nearest_quantiles_segments(values, bounds, wanted, out, first, last))
    return [out[:, j] for j in range(wanted.shape[0])]


def dates_sorted(frame: pl.DataFrame) -> bool:
    """Whether the ``date`` column of ``frame`` is non-decreasing."""
    days = frame[DATE].to_physical().to_numpy()
    return bool(np.all(days[1:] >= days[:-1])) if days.shape[0] > 1 else True


def _finite_sorted(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's finite values sorted ascending (NaN after them) and their count per row."""
    finite = np.isfinite(dense)
    ordered = np.sort(np.where(finite, dense, np.nan), axis=1)
    return ordered, finite.sum(axis=1)


def quantile_linear(dense: np.ndarray, q: float) -> np.ndarray:
    """Per-row ``q`` quantile of the finite values with linear interpolation (numpy's default method)."""
    ordered, count = _finite_sorted(dense)
    return _linear_from_sorted(ordered, count, q)


def _linear_from_sorted(ordered: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    rows = np.arange(ordered.shape[0])
    position = q * (count - 1)
    lower = np.clip(np.floor(position).astype(np.int64), 0, None)
    upper = np.minimum(lower + 1, np.maximum(count - 1, 0))
    frac = position - lower
    a = ordered[rows, np.minimum(lower, ordered.shape[1] - 1)]
    b = ordered[rows, np.minimum(upper, ordered.shape[1] - 1)]
    diff = b - a
    result = np.where(frac >= 0.5, b - diff * (1.0 - frac), a + diff * frac)
    result[count == 0] = np.nan
    return result


@overload
def quantile_nearest(dense: np.ndarray, q: float) -> np.ndarray: ...


@overload
def quantile_nearest(dense: np.ndarray, q: Sequence[float]) -> list[np.ndarray]: ...


def quantile_nearest(dense: np.ndarray, q: float | Sequence[float]) -> np.ndarray | list[np.ndarray]:
    """Per-row ``q`` quantile of the non-NaN values by polars' ``nearest`` rule (index rounded half away); for
    a sequence of fractions, one such array per fraction (the rows sorted once)."""
    ordered = np.sort(dense, axis=1)  # NaN sort last
    count = (~np.isnan(dense)).sum(axis=1)
    rows = np.arange(ordered.shape[0])

    def at(fraction: float) -> np.ndarray:
        position = (count - 1) * fraction
        index = np.floor(position)
        index = (index + (position - index >= 0.5)).astype(np.int64)  # round half away from zero, as polars
        index = np.clip(index, 0, max(ordered.shape[1] - 1, 0))
        result: np.ndarray = ordered[rows, index] if ordered.shape[1] else np.full(0, np.nan)
        return np.where(count > 0, result, np.nan)

    return at(q) if isinstance(q, (int, float)) else [at(fraction) for fraction in q]


def winsorize(dense: np.ndarray, percentile: float) -> np.ndarray:
    """Clip each row to its [percentile, 1 − percentile] linear quantiles of the finite values."""
    ordered, count = _finite_sorted(dense)
    lower = _linear_from_sorted(ordered, count, percentile)[:, None]
    upper = _linear_from_sorted(ordered, count, 1.0 - percentile)[:, None]
    # a row without finite values is left as it is
    lower = np.where(np.isnan(lower), -np.inf, lower)
    upper = np.where(np.isnan(upper), np.inf, upper)
    clipped: np.ndarray = np.clip(dense, lower, upper)
    return clipped


def standardize(dense: np.ndarray) -> np.ndarray:
    """Subtract each row's mean and divide by its sample std (ddof=1), both over the finite values.

    A constant row (std zero up to rounding) becomes NaN."""
    finite = np.isfinite(dense)
    count = np.count_nonzero(finite, axis=1)
    deviation = np.where(finite, dense, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = deviation.sum(axis=1) / count
        deviation -= mean[:, None]
        deviation *= finite
        std = np.sqrt(np.einsum("ij,ij->i", deviation, deviation) / (count - 1))
        std[~(std > CONSTANT_TOL * np.abs(mean))] = np.nan  # constant row: no standardized value
        result: np.ndarray = dense - mean[:, None]
        result /= std[:, None]
    return result


def ewma_sum(
    values: np.ndarray, decay: float, axis: int = -1, gain: float = 1.0, *, sequential_rows: bool = False
) -> np.ndarray:
    """``S[t] = decay · S[t−1] + gain · x[t]`` (``S[−1] = 0``) along ``axis``: the first-order recursive filter
    (:func:`scipy.signal.lfilter` with ``b = [gain]``, ``a = [1, −decay]``) of the EWMA estimators.

    The recursion runs as one vectorized step per time index across many independent series: along the rows
    of a wide 2-D array directly; a series is cut into pieces at fixed positions, run side by side from a
    zero start, each piece then receiving its predecessor's true end value times ``decay^(i+1)`` (agreeing
    with the sequential recursion to rounding, about 1e-14 relative; a prefix of a series filters
    identically whatever follows it, which keeps the estimators point-in-time). This keeps scipy.signal (a
    second of import) out of every command. A NaN propagates forward as in the sequential recursion.

    Along the rows of a wide array the time axis is cut the same way, into pieces of ``_ROW_PIECE`` rows run
    side by side, so a (2,520 × 3,000) filter takes about a hundred vectorized steps rather than 2,520 (each
    step holds the GIL, which two threads filtering at once would otherwise contend for).
    ``sequential_rows``: a wide array's rows one step per row instead, the recursion's own rounding (the
    synthetic market's paths, which tests fingerprint).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2 and axis in (0, -2) and values.shape[1] >= _ROW_RECURSION_MIN_WIDTH:
        if sequential_rows or values.shape[0] <= 2 * _ROW_PIECE:
            return _ewma_rows(values, decay, gain)
        return _ewma_row_pieces(values, decay, gain)
    moved = np.moveaxis(values, axis, -1)
    if moved.size == 0:
        return np.multiply(values, gain)
    filtered = _ewma_series(moved.reshape(-1, moved.shape[-1]), decay, gain)
    return np.moveaxis(filtered.reshape(moved.shape), -1, axis)


# the row recursion beats a strided walk along axis 0 from this many columns on
_ROW_RECURSION_MIN_WIDTH = 128
# positions per piece of a series filtered piecewise (:func:`_ewma_series`)
_SERIES_PIECE = 128


def _ewma_rows(values: np.ndarray, decay: float, gain: float) -> np.ndarray:
    """:func:`ewma_sum` along axis 0 of a 2-D array, one vectorized step per row (contiguous rows; the same
    arithmetic as lfilter, ``decay · S[t−1] + gain · x[t]``)."""
    result = np.multiply(values, gain) if gain != 1.0 else values.copy()
    carried = np.empty(result.shape[1:])
    for t in range(1, result.shape[0]):
        np.multiply(result[t - 1], decay, out=carried)
        result[t] += carried
    return result


# rows per piece of the time axis filtered piecewise (:func:`_ewma_row_pieces`)
_ROW_PIECE = 64


def _ewma_row_pieces(values: np.ndarray, decay: float, gain: float) -> np.ndarray:
    """:func:`ewma_sum` along axis 0 of a 2-D array in pieces of ``_ROW_PIECE`` rows at fixed positions: the
    pieces filtered side by side from a zero start, then each given its predecessor's true end value times
    ``decay^(i+1)`` (a prefix filters identically whatever follows it)."""
    result = np.multiply(values, gain) if gain != 1.0 else values.copy()
    n_rows, width = result.shape
    piece = _ROW_PIECE
    n_full = n_rows // piece
    body = result[: n_full * piece].reshape(n_full, piece, width)  # views of the full pieces
    tail = result[n_full * piece :]
    carried = np.empty((n_full, width))
    for i in range(1, piece):
        np.multiply(body[:, i - 1], decay, out=carried)
        body[:, i] += carried
    carried_tail = np.empty(width)
    for i in range(1, tail.shape[0]):
        np.multiply(tail[i - 1], decay, out=carried_tail)
        tail[i] += carried_tail
    powers = (decay ** np.arange(1, piece + 1, dtype=np.float64))[:, None]
    for j in range(1, n_full):
        body[j] += body[j - 1, -1] * powers  # the previous piece's end is already its true value
    if tail.shape[0] and n_full:
        tail += body[-1, -1] * powers[: tail.shape[0]]
    return result


def _ewma_series(series: np.ndarray, decay: float, gain: float) -> np.ndarray:
    """:func:`ewma_sum` along the last axis of (M, L) independent series: each series cut into pieces of
    ``_SERIES_PIECE`` positions filtered side by side (one vectorized step per position in a piece), then
    each piece given its predecessor's true end value times ``decay^(i+1)``."""
    n_series, length = series.shape
    if length <= 1 or n_series == 0:
        return np.multiply(series, gain)
    piece = min(_SERIES_PIECE, length)  # fixed boundaries: a prefix filters identically whatever follows it
    n_pieces = -(-length // piece)
    work = np.zeros((n_series * n_pieces, piece))  # row m · n_pieces + j: piece j of series m
    work.reshape(n_series, n_pieces * piece)[:, :length] = series
    if gain != 1.0:
        work *= gain
    carried = np.empty(work.shape[0])
    for i in range(1, piece):
        np.multiply(work[:, i - 1], decay, out=carried)
        work[:, i] += carried
    ends = work[:, -1].reshape(n_series, n_pieces)
    entering = np.zeros((n_series, n_pieces))  # the true value entering each piece
    through = decay**piece
    for j in range(1, n_pieces):
        entering[:, j] = ends[:, j - 1] + through * entering[:, j - 1]
    work += entering.reshape(-1, 1) * (decay ** np.arange(1, piece + 1, dtype=np.float64))[None, :]
    result: np.ndarray = work.reshape(n_series, n_pieces * piece)[:, :length]
    return result
