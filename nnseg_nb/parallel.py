"""Run a function over many items in worker processes, with a progress bar; in this process when one worker.

    results = map_in_processes(check_case, cases, num_workers=4, desc="verify")   # in the order of `cases`

Workers are spawned, not forked (as in nnU-Net): a forked copy of a parent that runs threads (torch, a
notebook kernel) can hang. A script that uses worker processes must call them under
``if __name__ == "__main__":`` (Python's rule for spawned processes); if the workers cannot start at all
(e.g. a script piped into ``python -``), everything runs in this process instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any


def map_in_processes(
    fn: Callable,
    items: Sequence,
    num_workers: int | None = None,
    progress: bool = True,
    desc: str = "",
    on_error: Callable[[Any, BaseException], Any] | None = None,
) -> list:
    """``[fn(item) for item in items]``, in a pool of ``num_workers`` spawned processes, in order.

    ``num_workers`` defaults to ``min(4, cpu count)``; with one worker (or one item) everything runs here.
    An exception of one item is re-raised, or turned into a result by ``on_error(item, exception)``.
    """
    from tqdm.auto import tqdm

    num_workers = default_num_workers() if num_workers is None else max(1, int(num_workers))
    num_workers = min(num_workers, len(items))
    results: list = [None] * len(items)
    with tqdm(total=len(items), desc=desc, disable=None if progress else True, leave=False) as bar:
        # spawn, not fork: the caller may hold threads (torch, a notebook kernel) that fork would copy half-way.
        pool = ProcessPoolExecutor(num_workers, mp_context=get_context("spawn")) if num_workers > 1 else None
        if pool is not None and not _pool_starts(pool):
            pool = None  # e.g. a script piped into python: spawned workers cannot re-import its __main__
        if pool is None:
            for i, item in enumerate(items):
                results[i] = _call(fn, item, on_error)
                bar.update()
            return results
        with pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                i = futures[future]
                error = future.exception()
                if error is None:
                    results[i] = future.result()
                elif on_error is None:
                    for other in futures:
                        other.cancel()
                    raise error
                else:
                    results[i] = on_error(items[i], error)
                bar.update()
    return results


def _pool_starts(pool: ProcessPoolExecutor) -> bool:
    try:
        pool.submit(int).result()
        return True
    except BrokenProcessPool:
        pool.shutdown(wait=False)
        return False


def default_num_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _call(fn: Callable, item: Any, on_error: Callable | None) -> Any:
    if on_error is None:
        return fn(item)
    try:
        return fn(item)
    except Exception as e:
        return on_error(item, e)
