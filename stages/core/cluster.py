"""The Dask executor: windowed futures on a Dask distributed cluster, over TLS.

Imported only when a run asks for Dask (`open_executor`), so local runs never load Dask.
The cluster is a trust boundary: workers hold the sources' secrets in their environment, and
a scheduler runs whatever its clients send. A cluster the driver starts therefore speaks TLS
with a certificate made for the run, its dashboard listens on loopback, and a scheduler the
user runs is refused when it is unencrypted and on another host (unless `allow_insecure`).
"""

from __future__ import annotations

import contextlib
import inspect
import ipaddress
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path
from typing import Any

import dask
from distributed import Client, KilledWorker, LocalCluster, wait
from distributed.client import FutureCancelledError
from distributed.comm.addressing import parse_address, parse_host_port
from distributed.comm.core import CommClosedError
from distributed.security import Security

from stages.core.config import ExecutorConf
from stages.core.errors import ConfigError, StageError, TransientFailures
from stages.core.executor import Executor
from stages.core.parallel import default_workers

log = logging.getLogger("stages.executor")

PROBE = ".dsrepo-visible-"
PROBE_TIMEOUT = 30.0  # seconds a worker may take to read the probes (NFS can be slow, not stuck)
WATCH = 5.0  # seconds between checks that the cluster still has workers
ENCRYPTED = ("tls", "wss")
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


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
    return isinstance(exc, FutureCancelledError | CommClosedError)


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


def insecure(address: str) -> bool:
    """Tell whether a scheduler address is unencrypted and on another host."""
    scheme, location = parse_address(address)
    if scheme in ENCRYPTED or scheme == "inproc":
        return False
    host = parse_host_port(location, default_port=0)[0]
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return True


def _scheduler_address(cfg: ExecutorConf) -> str | None:
    """Return the address of the scheduler the user runs (None: unreadable yet; the Client
    waits for the scheduler file, then reports)."""
    if cfg.address:
        return cfg.address
    try:
        return json.loads(Path(cfg.scheduler_file).read_text(encoding="utf-8"))["address"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_address(cfg: ExecutorConf, address: str | None) -> None:
    """Refuse an unencrypted scheduler on another host, unless the conf allows it, and a TLS
    one without the files to prove who this client is."""
    if address is None:
        return
    if parse_address(address)[0] == "tls" and not (
        cfg.security.cert or dask.config.get("distributed.comm.tls.client.cert")
    ):
        raise ConfigError(
            f"executor: the Dask scheduler at {address} speaks TLS: name this client's "
            "certificate files in security.ca_file, security.cert and security.key"
        )
    if not insecure(address):
        return
    if not cfg.allow_insecure:
        raise ConfigError(
            f"executor: the Dask scheduler at {address} is not encrypted and not on this "
            "machine: whoever reaches it can run code on its workers, which hold the sources' "
            "secrets. Run it with TLS (tls://, and the executor's security.ca_file/cert/key; "
            "README: Scale out), or set allow_insecure=true to connect anyway"
        )
    log.warning(
        "executor: connecting to the unencrypted Dask scheduler at %s (allow_insecure): "
        "whoever reaches it can run code on its workers",
        address,
    )


def _tls(ca_file: str, cert: str, key: str | None) -> Security:
    """Return TLS settings, required, with one certificate and key for every role."""
    roles = {
        f"tls_{role}_{part}": value
        for role in ("client", "scheduler", "worker")
        for part, value in (("cert", cert), ("key", key))
    }
    return Security(require_encryption=True, tls_ca_file=ca_file, **roles)


def _given_security(cfg: ExecutorConf) -> Security | None:
    """Return TLS settings from the conf's certificate files (None: none named)."""
    tls = cfg.security
    return _tls(tls.ca_file, tls.cert, tls.key) if tls.cert else None


def write_security(security: Security, folder: Path) -> Security:
    """Write a run's in-memory certificate and key (one pair for every role, as
    Security.temporary makes them) to files in folder, readable by this user only; return
    the same settings naming those files."""
    folder = Path(folder)
    contents = (security.tls_ca_file, security.tls_client_cert, security.tls_client_key)
    paths = []
    for name, text in zip(TLS_FILES, contents, strict=True):
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text)
        paths.append(str(path))
    return _tls(*paths)


def _shared_key_dir(stack: contextlib.ExitStack) -> Path:
    """Return a new directory (mode 0700) for a run's key on storage the workers share: under
    the download cache, outside the repository (where `git add` would take it); removed when
    the stack closes."""
    from stages.core.files import cache_root

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="dask-tls-", dir=root))  # mkdtemp: mode 0700
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _settings(cfg: ExecutorConf):
    """Return a context that holds the Dask settings of a cluster started for a run."""
    return dask.config.set(cluster_settings(cfg))


@contextlib.contextmanager
def local_cluster(cfg: ExecutorConf):
    """Run a LocalCluster of `cfg.workers` single-threaded worker processes on loopback, over
    TLS (the conf's certificate, else one made for the run, held in memory), with the run's
    settings held while it lives (its nannies read them at every restart)."""
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
            dashboard_address=cfg.dashboard_address,
            host="127.0.0.1",
            security=_given_security(cfg) or Security.temporary(),
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

    def __init__(self, cfg: ExecutorConf, client=None):
        self.cfg, self.cluster, self.own_client = cfg, None, client is None
        self.items_per_task, self.frame_memory = cfg.items_per_task, cfg.frame_memory
        self._stack = contextlib.ExitStack()  # what a cluster started here needs, until close
        if client is None:
            try:
                client = self._connect(cfg)
            except BaseException:
                if self.cluster is not None:
                    self.cluster.close()
                self._stack.close()
                raise
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

    def _connect(self, cfg: ExecutorConf) -> Client:
        """Connect to the scheduler the conf names, or start the cluster it describes."""
        if cfg.address or cfg.scheduler_file:
            known = _scheduler_address(cfg)
            _check_address(cfg, known)
            where = (
                {"address": cfg.address} if cfg.address else {"scheduler_file": cfg.scheduler_file}
            )
            with _reaching(cfg):
                # No files named: Dask's own TLS settings (distributed.comm.tls), if any.
                client = Client(**where, security=_given_security(cfg), timeout=cfg.wait_timeout)
            if known is None:  # a scheduler file written while the Client waited for it
                try:
                    _check_address(cfg, client.scheduler.address)
                except ConfigError:
                    client.close()
                    raise
            return client
        if cfg.cluster:
            from hydra.utils import get_class, instantiate

            target = cfg.cluster["_target_"]
            try:
                takes = inspect.signature(get_class(target)).parameters
            except (ImportError, ValueError, TypeError) as exc:
                raise ConfigError(f"executor.cluster: cannot use {target}: {exc}") from None
            if "security" not in takes:
                raise ConfigError(
                    f"executor.cluster: {target} takes no `security`, so the driver cannot "
                    "start it with TLS; run it yourself with TLS and give its address"
                )
            # Read when its scheduler starts, so held while it lives (as local_cluster does);
            # an external scheduler keeps its own (DASK_DISTRIBUTED__SCHEDULER__...).
            self._stack.enter_context(_settings(cfg))
            security = _given_security(cfg)
            if security is None:
                # Job workers start on other nodes: they read the run's key from shared
                # storage, in a directory of this user's (never the working directory).
                security = write_security(Security.temporary(), _shared_key_dir(self._stack))
            extra: dict[str, Any] = {"security": security}
            if "scheduler_options" in takes:
                extra["scheduler_options"] = {
                    "dashboard_address": cfg.dashboard_address,
                    **(cfg.cluster.get("scheduler_options") or {}),
                }
            with _reaching(cfg):
                self.cluster = instantiate(cfg.cluster, _convert_="all", **extra)
            if cfg.adapt:
                self.cluster.adapt(**cfg.adapt)
            elif cfg.scale:
                self.cluster.scale(**cfg.scale)
        else:
            with _reaching(cfg):
                self.cluster = self._stack.enter_context(local_cluster(cfg))
        log.info("executor: Dask dashboard %s", self.cluster.dashboard_link)
        return Client(self.cluster)  # the cluster's TLS settings

    @property
    def slots(self) -> int:
        """Return how many tasks run at once (the workers' threads)."""
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
                except KilledWorker:
                    # Deaths are blamed on every task the dead worker held, so the item may be
                    # innocent: once the others in flight are done, it runs again alone, and
                    # only dying again makes it the culprit.
                    self._wait(list(pending), every=True)
                    retry = self.client.submit(_call, fn, item, **opts)
                    try:
                        self._wait([retry])
                        res = self._result(retry)
                    except KilledWorker:
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

    def run_batches(self, items, here, make_task, lost, done, *, per_task=None):
        if not items:
            return
        task, per = make_task(), per_task or self.items_per_task
        batches = [tuple(items[i : i + per]) for i in range(0, len(items), per)]
        dead: list[tuple] = []
        # As they finish: a lost scheduler then costs only the batches still running.
        for results in self.map(task, batches, lost=lambda b: dead.append(b) or [], ordered=False):
            for res in results:
                done(res)
        # A batch that kept killing its workers goes again item by item: only the culprit is
        # lost. (map ran a one-item batch alone once more already.)
        singles = [(item,) for b in dead if len(b) > 1 for item in b]
        for results in self.map(task, singles, lost=lost, ordered=False):
            for res in results:
                done(res)
        for batch in dead:
            if len(batch) == 1:
                for res in lost(batch):
                    done(res)

    def _wait(self, futures: list, every: bool = False):
        """Wait for the first (or every) future to finish; return the first finished, in
        submission order. Stop (to resume later) when the cluster has had no worker for
        wait_timeout seconds, or the scheduler is gone."""
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
        except KilledWorker:
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
