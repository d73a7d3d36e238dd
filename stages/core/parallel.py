"""Ordered, bounded parallel maps on this machine's threads or processes (what the local
executor runs)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Return the number of usable CPU cores."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def make_executor(kind: str = "thread", workers: int | None = None) -> Executor:
    """Return a local executor; `thread` suits work that releases the GIL (codecs, I/O)."""
    workers = workers or default_workers()
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers)
    if kind == "process":
        return ProcessPoolExecutor(max_workers=workers)
    raise ValueError(f"unknown executor kind {kind!r} (thread or process)")


def pmap(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    kind: str = "thread",
    workers: int | None = None,
    window: int = 256,
    on_abort: Callable[[], None] | None = None,
) -> Iterator[R]:
    """Yield fn(item) in input order, keeping at most `window` items in flight.

    `on_abort` runs when the map ends early (an error, Ctrl-C, the consumer stopping), before
    waiting for the running calls: it can tell them to give up.
    """
    items = iter(items)
    ex = make_executor(kind, workers)
    try:
        pending = [ex.submit(fn, it) for it in islice(items, window)]
        while pending:
            done = pending.pop(0)
            nxt = next(items, _END)
            if nxt is not _END:
                pending.append(ex.submit(fn, nxt))
            yield done.result()
    except BaseException:
        if on_abort is not None:
            on_abort()
        raise
    finally:
        # On an error or Ctrl-C, queued work is dropped; only what already runs is awaited.
        ex.shutdown(wait=True, cancel_futures=True)


_END = object()


def progress(iterable=None, *, total: int, desc: str, unit: str, initial: int = 0, **kw) -> tqdm:
    """Return the progress bar every stage shows: items/s on a terminal, silent in logs."""
    return tqdm(
        iterable,
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
        smoothing=0.1,
        **kw,
    )
