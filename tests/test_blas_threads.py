"""single_threaded_blas: BLAS single-threaded while any user is inside, restored when the last one leaves, even
when the users overlap from different threads (two builds in one service process)."""

from __future__ import annotations

import threading

from threadpoolctl import threadpool_info

from factor_engine._dense import single_threaded_blas


def _blas_threads() -> set[int]:
    return {int(info["num_threads"]) for info in threadpool_info() if info.get("user_api") == "blas"}


def test_overlapping_users_restore_the_original_threads() -> None:
    original = _blas_threads()
    assert original, "numpy's BLAS is loaded"
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, set[int]] = {}

    def first() -> None:
        with single_threaded_blas():
            first_in.set()
            second_in.wait(5)
            seen["first inside"] = _blas_threads()
        first_out.set()  # leaves before the second: threadpool_limits would restore 'original' here ...

    def second() -> None:
        first_in.wait(5)
        with single_threaded_blas():
            second_in.set()
            first_out.wait(5)
            seen["second inside, first gone"] = _blas_threads()
        # ... and the second would then 'restore' the single thread it saw on entry, for good

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"first inside": {1}, "second inside, first gone": {1}}
    assert _blas_threads() == original


def test_nested_use_in_one_thread() -> None:
    original = _blas_threads()
    with single_threaded_blas():
        with single_threaded_blas():
            assert _blas_threads() == {1}
        assert _blas_threads() == {1}
    assert _blas_threads() == original
