"""The Dask side of downloads: tasks that rebuild the driver's downloader on a worker.

A worker rebuilds it from a `WorkerSpec` (no secrets, no ledger: its credentials come from
its own environment, and must name the same variables as the driver's), downloads a batch of
URLs into the shared object cache and returns small `Result`s; the driver records them.
Batches are cut from the sorted URLs alone (`Executor.run_batches`), never from the worker
count, so the outputs are the same however many workers run them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stages.core.config import FetchConf
from stages.core.errors import StageError
from stages.core.executor import LocalExecutor
from stages.net.cache import HOST
from stages.net.credentials import Credentials
from stages.net.ledger import Result

WORKER_DIED = "its Dask worker died while fetching"  # a task that kept killing its worker


class Transfers(Protocol):
    """What a task needs of the downloader a worker rebuilds."""

    def transfer(
        self,
        urls: Iterable[str],
        kind: str | None,
        max_bytes: int | None,
        done: Callable[[Result], None],
    ) -> None: ...


@dataclass(frozen=True)
class WorkerSpec:
    """How a Dask worker rebuilds the driver's downloader (no secrets, no ledger)."""

    factory: Callable[..., Any]  # the downloader's class, called as the driver's was
    cfg: FetchConf
    root: str
    throttled: str | None
    credentials: Callable[[], Credentials] | None
    labels: tuple[str, ...]  # the driver's credentials, by env var name: the worker's must match


_WORKER_DOWNLOADERS: dict[str, Any] = {}


def worker_downloader(spec: WorkerSpec) -> Any:
    """Return this worker thread's downloader for a run (pooled connections across tasks)."""
    key = f"{threading.get_ident()}:{spec!r}"  # a transport serves one thread
    dl = _WORKER_DOWNLOADERS.get(key)
    if dl is None:
        try:
            creds = spec.credentials() if spec.credentials is not None else Credentials()
        except StageError as exc:
            raise StageError(
                f"on Dask worker {HOST}: {exc} (workers read secrets from their own environment)"
            ) from None
        labels = tuple(sorted(c.label for c in creds.creds))
        if labels != spec.labels:
            raise StageError(
                f"on Dask worker {HOST}: credentials from {list(labels)}, the driver has "
                f"{list(spec.labels)}: give the workers the same environment"
            )
        dl = spec.factory(
            spec.cfg,
            Path(spec.root),
            ledger_name=None,
            credentials=creds,
            throttled=spec.throttled,
            # A task's downloads run in this worker's own transfer loop.
            executor=LocalExecutor(1),
        )
        _WORKER_DOWNLOADERS[key] = dl
    return dl


def download_batch(
    spec: WorkerSpec, kind: str | None, max_bytes: int | None, urls: tuple[str, ...]
) -> list[Result]:
    """Download a batch on a worker into the shared cache; return the outcomes (small)."""
    dl: Transfers = worker_downloader(spec)
    out: list[Result] = []
    dl.transfer(urls, kind, max_bytes, out.append)
    return out


def lost_batch(urls: tuple[str, ...]) -> list[Result]:
    """Return a batch's outcomes when its task kept killing its worker: failed, retried by
    the next run."""
    return [Result(url, "failed", WORKER_DIED, None, None, None) for url in urls]
