"""One executor interface: ordered, bounded maps on this machine or on a Dask cluster.

Which one runs is chosen at run time, never by params.yaml: `DSREPO_EXECUTOR` names a file in
conf/executor/ (default: `site` if that git-ignored file exists, else `local`), and
`DSREPO_EXECUTOR_OVERRIDES` holds Hydra overrides for it (`address=tcp://h:8786 window=128`).
Stages partition their work from the item list alone and publish outputs under names fixed
by it, so the bytes are the same whichever executor runs them and however many workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from stages.core.config import ExecutorConf, ExecutorKind, typed
from stages.core.errors import ConfigError, StageError, TransientFailures
from stages.core.parallel import default_workers, make_executor, pmap

log = logging.getLogger("stages.executor")

T = TypeVar("T")
R = TypeVar("R")

ENV = "DSREPO_EXECUTOR"
ENV_OVERRIDES = "DSREPO_EXECUTOR_OVERRIDES"
SITE = "site"
PROBE = ".dsrepo-visible-"
PROBE_TIMEOUT = 30.0  # seconds a worker may take to read the probes (NFS can be slow, not stuck)
WATCH = 5.0  # seconds between checks that the cluster still has workers


def load_conf(conf_dir: Path = Path("conf"), env: dict | None = None) -> ExecutorConf:
    """Compose the executor config this run asked for (env), validated by its schema."""
    env = os.environ if env is None else env
    folder = Path(conf_dir).resolve() / "executor"
    name = env.get(ENV) or (SITE if (folder / f"{SITE}.yaml").is_file() else "local")
    if name.startswith("_") or "/" in name:
        raise ConfigError(f"{ENV}={name}: name a file of conf/executor/ (local, dask, slurm)")
    overrides = shlex.split(env.get(ENV_OVERRIDES, ""))
    if not (folder / f"{name}.yaml").is_file():
        if name == "local" and not overrides:
            return ExecutorConf(kind=ExecutorKind.local, workers=None)  # no conf/executor/
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"{ENV}={name}: no conf/executor/{name}.yaml (have: {known})")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(config_dir=str(folder), version_base=None):
            data = OmegaConf.to_container(compose(config_name=name, overrides=overrides))
    except Exception as exc:  # Hydra raises many types; the user needs the message only.
        raise ConfigError(f"cannot compose conf/executor/{name}.yaml: {exc}") from exc
    return typed(ExecutorConf, data, f"conf/executor/{name}.yaml ({ENV_OVERRIDES})", "executor")


class Executor(ABC):
    """Run a function over items in parallel, yielding results in input order."""

    remote = False  # whether tasks run in other processes that may sit on other machines
    items_per_task = 64  # items a task takes where one item is too little work (downloads)

    @property
    @abstractmethod
    def slots(self) -> int:
        """Return how many tasks run at once."""

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

    def __init__(self, workers: int | None = None):
        self.workers = workers or default_workers()

    @property
    def slots(self) -> int:
        return self.workers

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


class _Raised:
    """A user-facing error raised by a task: re-raised by the driver, never retried."""

    def __init__(self, exc: StageError):
        self.exc = exc


def _call(fn, item):
    """Run one task on a worker; a StageError comes back as a value (retrying won't help)."""
    try:
        return fn(item)
    except StageError as exc:
        return _Raised(exc)


def _scheduler_gone(exc: Exception) -> bool:
    """Tell whether a future failed because the scheduler went away, not the task."""
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    return isinstance(exc, FutureCancelledError | CommClosedError)


def KilledWorker_() -> type:  # noqa: N802 - reads as the exception class it returns
    """Return distributed's KilledWorker (imported late: local runs never load Dask)."""
    from distributed import KilledWorker

    return KilledWorker


def _reads(path: str, token: str) -> bool:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read() == token
    except OSError:
        return False


def _sized(path: str, size: int) -> bool:
    try:
        return os.path.getsize(path) == size
    except OSError:
        return False


def _into(box: list, fn: Callable, args) -> None:
    box.append(fn(*args))


def _missing(
    probes: list[tuple[str, str]], sizes: list[tuple[str, int]], timeout: float = PROBE_TIMEOUT
) -> list[str]:
    """Return the directories (of probe files) and files this worker does not see as the
    driver does; stop at the first that gives no answer within `timeout` (a hung mount)."""
    checks = [(os.path.dirname(p), _reads, p, t) for p, t in probes]
    checks += [(p, _sized, p, n) for p, n in sizes]
    end, out = time.monotonic() + timeout, []
    for shown, check, *args in checks:
        answer: list[bool] = []
        # A daemon thread: a read stuck in the kernel cannot be interrupted, only abandoned.
        probe = threading.Thread(target=_into, args=(answer, check, args), daemon=True)
        probe.start()
        probe.join(max(0.0, end - time.monotonic()))
        if not answer:
            return [*out, f"{shown} (no answer within {timeout:g} s: a hung mount?)"]
        if not answer[0]:
            out.append(shown)
    return out


@contextlib.contextmanager
def _reaching(cfg: ExecutorConf):
    """Turn a scheduler that cannot be reached into one clear error."""
    try:
        yield
    except (OSError, TimeoutError) as exc:
        where = cfg.address or cfg.scheduler_file or "the cluster"
        raise StageError(f"executor: cannot reach the Dask scheduler at {where}: {exc}") from None


def _settings(cfg: ExecutorConf):
    """Return a context that holds the Dask settings of a cluster started for a run."""
    import dask

    return dask.config.set(cluster_settings(cfg))


@contextlib.contextmanager
def local_cluster(cfg: ExecutorConf):
    """Run a LocalCluster of `cfg.workers` single-threaded worker processes on loopback, with
    the run's settings held while it lives (its nannies read them at every restart)."""
    import dask
    from distributed import LocalCluster

    with (
        _settings(cfg),
        # A nanny restarts its own worker after a crash. Past this timeout Dask would instead
        # close, for good, a nanny whose worker is still restarting (slow on a busy machine),
        # and the cluster would shrink with every crash.
        dask.config.set({"distributed.deploy.lost-worker-timeout": "3650d"}),
        LocalCluster(
            n_workers=cfg.workers or default_workers(),
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            host="127.0.0.1",
        ) as cluster,
    ):
        yield cluster


def cluster_settings(cfg: ExecutorConf) -> dict:
    """Return the Dask settings a cluster started for a run gets (read when it starts)."""
    return {
        "distributed.scheduler.allowed-failures": cfg.allowed_failures,
        # A worker holds only the task it runs: a dead worker's death is blamed on that task,
        # never on tasks merely queued there.
        "distributed.scheduler.worker-saturation": 1.0,
        # Tasks start processes of their own (yt-dlp attempts, isolated decoders).
        "distributed.worker.daemon": False,
    }


class DaskExecutor(Executor):
    """A Dask distributed cluster: windowed futures, released as their results are read."""

    remote = True

    def __init__(self, cfg: ExecutorConf, client=None):
        from distributed import Client

        self.cfg, self.cluster, self.own_client = cfg, None, client is None
        self.items_per_task = cfg.items_per_task
        self._stack = contextlib.ExitStack()  # what a cluster started here needs, until close
        if client is None:
            with _reaching(cfg):
                if cfg.address:
                    client = Client(cfg.address, timeout=cfg.wait_timeout)
                elif cfg.scheduler_file:
                    client = Client(scheduler_file=cfg.scheduler_file, timeout=cfg.wait_timeout)
                elif cfg.cluster:
                    from hydra.utils import instantiate

                    # Read when its scheduler starts, so held while it lives (as local_cluster
                    # does); an external scheduler keeps its own
                    # (DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES).
                    self._stack.enter_context(_settings(cfg))
                    self.cluster = instantiate(cfg.cluster, _convert_="all")
                    if cfg.adapt:
                        self.cluster.adapt(**cfg.adapt)
                    elif cfg.scale:
                        self.cluster.scale(**cfg.scale)
                    client = Client(self.cluster)
                else:
                    self.cluster = self._stack.enter_context(local_cluster(cfg))
                    client = Client(self.cluster)
        self.client = client
        try:
            if cfg.wait_workers:  # 0: submit at once (an adaptive cluster starts empty)
                client.wait_for_workers(cfg.wait_workers, timeout=cfg.wait_timeout)
        except TimeoutError:
            self.close()
            raise StageError(
                f"executor: fewer than {cfg.wait_workers} Dask worker(s) joined within "
                f"{cfg.wait_timeout:g} s"
            ) from None
        log.info(
            "executor: Dask scheduler %s, %d task slot(s)", client.scheduler.address, self.slots
        )

    @property
    def slots(self) -> int:
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return max(1, sum(w.get("nthreads", 1) for w in workers))

    def map(self, fn, items, *, kind="thread", lost=None, ordered=True):
        items = iter(items)
        opts: dict[str, Any] = {"pure": False, "retries": self.cfg.retries}
        if self.cfg.resources:
            opts["resources"] = dict(self.cfg.resources)
        pending: dict = {}  # future -> item, in submission order

        def submit(item) -> None:
            pending[self.client.submit(_call, fn, item, **opts)] = item

        try:
            for item in islice(items, self.cfg.window):
                submit(item)
            while pending:
                if ordered:
                    future = next(iter(pending))
                    self._wait([future])
                else:
                    future = self._wait(list(pending))
                item = pending.pop(future)
                try:
                    res = self._result(future)
                except KilledWorker_():
                    # Deaths are blamed on every task the dead worker held, so the item may be
                    # innocent: once the others in flight are done, it runs again alone, and
                    # only dying again makes it the culprit.
                    self._wait(list(pending), every=True)
                    retry = self.client.submit(_call, fn, item, **opts)
                    try:
                        self._wait([retry])
                        res = self._result(retry)
                    except KilledWorker_():
                        if lost is None:
                            raise StageError(
                                "a task kept killing its Dask worker (allowed_failures); "
                                "see the workers' logs"
                            ) from None
                        log.warning("a task kept killing its worker: recorded as lost")
                        res = lost(item)
                nxt = next(items, _END)
                if nxt is not _END:
                    submit(nxt)
                yield res
        finally:
            for future in pending:
                with contextlib.suppress(Exception):  # no scheduler left to tell
                    future.cancel()

    def _wait(self, futures: list, every: bool = False):
        """Wait for the first (or every) future to finish; return the first finished, in
        submission order. Stop (to resume later) when the cluster has had no worker for
        wait_timeout seconds, or the scheduler is gone."""
        from distributed import wait

        idle_since, poll = None, min(WATCH, self.cfg.wait_timeout)
        when = "ALL_COMPLETED" if every else "FIRST_COMPLETED"
        while futures:
            try:
                done = wait(futures, timeout=poll, return_when=when).done
            except TimeoutError:
                done = set()
            except Exception as exc:
                raise self._lost_scheduler(exc) from None
            if done:
                return next(f for f in futures if f in done)
            if self.client.status != "running":
                raise self._lost_scheduler(None)
            if self.client.scheduler_info(n_workers=0).get("n_workers", 1):
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self.cfg.wait_timeout:
                raise TransientFailures(
                    f"no Dask worker for {self.cfg.wait_timeout:g} s (all retired or lost): "
                    "re-run `dvc repro` to resume; finished work is kept"
                )
        return None

    def _lost_scheduler(self, exc: Exception | None) -> TransientFailures:
        what = f" ({type(exc).__name__})" if exc is not None else ""
        return TransientFailures(
            f"lost the Dask scheduler{what}: re-run `dvc repro` to resume; finished work is kept"
        )

    def _result(self, future):
        """Return a finished task's result (re-raising a task's StageError), then release it."""
        try:
            res = future.result()
        except KilledWorker_():
            raise
        except Exception as exc:
            if self.client.status == "running" and not _scheduler_gone(exc):
                raise
            raise self._lost_scheduler(exc) from None
        finally:
            with contextlib.suppress(Exception):  # no scheduler left to tell
                future.release()  # a finished task held would re-run if its worker died
        if isinstance(res, _Raised):
            raise res.exc
        return res

    def check_visible(self, *dirs: Path, files: Iterable[Path] = ()) -> None:
        token = secrets.token_hex(16)
        probes = []
        try:
            for folder in dirs:
                folder = Path(folder).absolute()
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{PROBE}{token}"
                path.write_text(token, encoding="ascii")
                probes.append((str(path), token))
            # Inputs are only read (never probed by writing into a tracked output): a worker
            # must find each with the size the driver sees.
            sizes = [(str(Path(f).absolute()), os.path.getsize(f)) for f in files]
            seen = self.client.run(_missing, probes, sizes)
        finally:
            for path, _ in probes:
                Path(path).unlink(missing_ok=True)
        for worker, missing in sorted(seen.items()):
            if missing:
                raise StageError(
                    f"Dask worker {worker} cannot see {missing[0]}: the download cache and the "
                    "stage outputs must be on storage the workers share with this machine, at "
                    "the same path (README: Scale out; DSREPO_CACHE_DIR)"
                )

    def close(self) -> None:
        if self.own_client:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        self._stack.close()


_END = object()


def open_executor(cfg: ExecutorConf | None = None) -> Executor:
    """Start the executor a config describes (default: this machine's cores)."""
    if cfg is None or cfg.kind is ExecutorKind.local:
        return LocalExecutor(cfg.workers if cfg is not None else None)
    return DaskExecutor(cfg)
