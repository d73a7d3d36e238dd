"""One executor interface: ordered, bounded maps on this machine or on a Dask cluster.

Which one runs is chosen at run time, never by params.yaml (stages.pipeline.executors
opens the one conf/executor/ names for the run).
Stages partition their work from the item list alone and publish outputs under names fixed
by it, so the bytes are the same whichever executor runs them and however many workers. The
Dask executor lives in stages.core.cluster, imported only when a run asks for it.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Protocol, TypeVar

from stages.core.config import ExecutorConf
from stages.core.parallel import default_workers, make_executor, pmap, progress

log = logging.getLogger("stages.executor")

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")  # a batch task: a dataclass with a `threads` field (reading threads inside it)
SPOOL = ".spool"


class Closable(Protocol):
    """A shard writer: closed when every task's output is packed, aborted on an error."""

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Executor(ABC):
    """Run a function over items in parallel, yielding results in input order."""

    items_per_task: int  # items a task takes where one item is too little work (conf/executor/)
    frame_memory: int  # bytes of decoded frames one machine's tasks may hold (conf/executor/)

    @abstractmethod
    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        kind: str = "thread",
        lost: Callable[[T], R] | None = None,
        ordered: bool = True,
    ) -> Iterator[R]:
        """Yield fn(item) in input order (or as finished, if not `ordered`), with bounded work
        in flight.

        `kind` is a hint for local runs (`process` for CPU-bound Python); `lost(item)` gives
        the result of an item whose task kept killing its process (a crashing decoder), which
        otherwise stops the map.
        """

    @property
    def tasks_per_machine(self) -> int:
        """Return how many tasks may share one machine's cores and memory (workers on other
        machines: assumed shaped like this one)."""
        return default_workers()

    def run_batches(
        self,
        items: list[T],
        here: Callable[[list[T], Callable[[R], None]], None],
        make_task: Callable[[], Callable[[tuple[T, ...]], list[R]]],
        lost: Callable[[tuple[T, ...]], list[R]],
        done: Callable[[R], None],
        *,
        per_task: int | None = None,
    ) -> None:
        """Run work over items and pass each result to done(result), in no fixed order.

        This machine runs here(items, done), which brings its own concurrency (a transfer loop,
        a pool); an executor whose tasks run elsewhere instead runs make_task()(batch) on
        tuples of `per_task` items (default `items_per_task`), and lost(batch) gives the
        results of a batch whose task kept killing its worker (hook: default, here).
        """
        here(items, done)

    def map_shards(self, fn: Callable[[S], R], tasks: Iterable[S]) -> Iterator[R]:
        """Yield fn(task) in order for tasks that each hold a batch (a shard's items): one task
        per slot (hook: a local run takes one batch at a time, its items on every core)."""
        return self.map(fn, tasks)

    def pack_spooled(
        self,
        fn: Callable[[tuple[T, str]], R],
        jobs: list[T],
        out_dir: Path,
        writer: Closable,
        pack: Callable[[int, R, Path], None],
        *,
        desc: str,
        unit: str,
        lost: Callable[[tuple[T, str]], R] | None = None,
    ) -> None:
        """Run fn((job, spool path)) as process tasks, each writing its payloads into a spool
        file of its own under out_dir, and pack(index, result, spool path) each in job order
        into `writer` here; close the writer at the end, abort it on any error. Spool files
        never outlive the run."""
        # Inside the output: a killed run's leftovers go with it when DVC clears it.
        spool = Path(out_dir).absolute() / SPOOL
        spool.mkdir(parents=True, exist_ok=True)
        paths = [spool / f"{i:08d}.spool" for i in range(len(jobs))]
        try:
            done = self.map(fn, zip(jobs, map(str, paths), strict=True), kind="process", lost=lost)
            bar = progress(done, total=len(jobs), desc=desc, unit=unit)
            for i, (path, res) in enumerate(zip(paths, bar, strict=True)):
                pack(i, res, path)
                path.unlink(missing_ok=True)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            shutil.rmtree(spool, ignore_errors=True)

    def check_visible(self, *dirs: Path, files: Iterable[Path] = ()) -> None:  # noqa: B027
        """Fail fast unless every worker sees these directories (a probe file written there)
        and these existing files as the driver does."""

    def close(self) -> None:  # noqa: B027 - nothing to release locally
        """Release the executor's workers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """This machine's threads or processes."""

    def __init__(self, workers: int | None = None, cfg: ExecutorConf | None = None):
        self.cfg = cfg
        self.workers = workers or (cfg.workers if cfg is not None else None) or default_workers()
        if cfg is not None:
            self.items_per_task, self.frame_memory = cfg.items_per_task, cfg.frame_memory

    @property
    def tasks_per_machine(self) -> int:
        return self.workers

    def map_shards(self, fn, tasks):
        # A batch's arrays can be large: one batch at a time, its items on every core.
        for task in tasks:
            yield fn(dataclasses.replace(task, threads=self.workers))

    def map(self, fn, items, *, kind="thread", lost=None, ordered=True):
        items = list(items) if lost is not None else items
        done = 0
        try:
            for res in pmap(fn, items, kind=kind, workers=self.workers, window=2 * self.workers):
                done += 1
                yield res
        except BrokenProcessPool:
            if lost is None:
                raise
            # A process died (a codec crash, the OOM killer): the rest run one per process,
            # so the item that kills its process again is the one recorded as lost.
            log.warning("a worker process died: running the remaining items one per process")
            for item in items[done:]:
                yield _isolated(fn, item, lost)


def _isolated(fn, item, lost):
    """Run one item in a process of its own; lost(item) if that process dies."""
    with make_executor("process", 1) as ex:
        try:
            return ex.submit(fn, item).result()
        except BrokenProcessPool:
            return lost(item)
