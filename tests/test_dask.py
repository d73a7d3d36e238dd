"""The stages on a real Dask cluster: same bytes as a local run, worker deaths, a poison item."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import yaml
from distributed import WorkerPlugin

from stages.core.cluster import DaskExecutor, write_security
from stages.core.errors import ConfigError, StageError, TransientFailures
from stages.core.executor import LocalExecutor
from stages.core.store import Row, Store, write_store
from stages.fetch import fetch
from stages.net.download import CredentialRejected, Downloader
from stages.net.ledger import Ledger
from stages.pipeline.compose import group_defaults, source_defaults
from stages.pipeline.executors import load_conf, open_executor
from stages.sources import load
from standins.figure8 import Figure8Standin, generate_job
from standins.kinetics import KineticsStandin, generate
from standins.video import make_clip
from tests.conftest import ROOT, SECRET, SIG, lila_conf, make_project
from tests.families import clean_store, export_splits, extract_frames
from tests.hostile import HostileServer
from tests.test_credentials import images, leaked, lila_with_token
from tests.test_download import assert_cache_sound
from tests.test_kinetics import kconf
from tests.test_pipeline import tree_digest
from tests.test_transport import EXPECTED, LIMITS

LILA = load("lila")
KINETICS = load("kinetics")


def executor_for(client, **over) -> DaskExecutor:
    """A dask executor on the session cluster, configured as conf/executor/dask.yaml says."""
    overrides = " ".join(f"{k}={v}" for k, v in over.items())
    env = {"DSREPO_EXECUTOR": "dask", "DSREPO_EXECUTOR_OVERRIDES": overrides}
    return DaskExecutor(load_conf(ROOT / "conf", env), client=client)


def run_fetch(cfg, out: Path, cache: Path, executor=None):
    return fetch(
        LILA, cfg, group_defaults("fetch"), group_defaults("store"), out, cache, executor=executor
    )


def test_fetch_is_byte_identical_on_dask_and_every_batch_returns_records(
    dask_client, server, tmp_path
):
    cfg = lila_conf(index_url=server.index_url, dataset="NACTI-demo")
    run_fetch(cfg, tmp_path / "local", tmp_path / "c1", LocalExecutor(2))
    with executor_for(dask_client, items_per_task=4, window=3) as ex:
        rows, metrics = run_fetch(cfg, tmp_path / "dask", tmp_path / "c2", ex)
    assert metrics["ok"] > 8  # several batches, more than the window
    assert tree_digest(tmp_path / "dask") == tree_digest(tmp_path / "local")
    # The driver recorded every outcome in the ledger, as a local run does.
    recorded = Ledger(tmp_path / "c2" / "ledger-lila.sqlite").all()
    assert {u for u, r in recorded.items() if r.status == "ok"} >= {
        r.url for r in rows if r.status == "ok"
    }


def wait_for_only_the_victim(client, server) -> str:
    """Wait until the stalled request's batch is the only task running; return its worker.

    The stalled batch cannot finish, so once every other task is done it is the one left.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        busy = {w: keys for w, keys in client.processing().items() if keys}  # one snapshot
        if not server.faults.pending() and sum(len(k) for k in busy.values()) == 1:
            return next(iter(busy))
        time.sleep(0.05)
    pytest.fail("the stalled request never became the only running task")


def test_a_worker_killed_mid_fetch_changes_nothing(dask_client, server, tmp_path):
    cfg = lila_conf(index_url=server.index_url, dataset="NACTI-demo")
    ref, _ = run_fetch(cfg, tmp_path / "ref", tmp_path / "c1", LocalExecutor(2))
    wanted = sorted(r.url for r in ref if r.status == "ok")
    victim = wanted[len(wanted) // 2].rsplit("/", 1)[1]
    # The victim's first request stalls: its batch is then the only task still running.
    server.faults.add(f"*/{victim}", "stall:60")
    asked = lambda: sum(n for p, n in server.requests.items() if p.endswith("/" + victim))  # noqa: E731
    before = asked()
    box: dict = {}

    def build():
        with executor_for(dask_client, items_per_task=4, window=4) as ex:
            box["result"] = run_fetch(cfg, tmp_path / "dask", tmp_path / "c2", ex)

    runner = threading.Thread(target=build)
    runner.start()
    addr = wait_for_only_the_victim(dask_client, server)
    pid = dask_client.run(os.getpid, workers=[addr])[addr]
    os.kill(pid, signal.SIGKILL)
    runner.join(120)
    assert not runner.is_alive()
    dask_client.wait_for_workers(2, timeout=180)  # the nanny restarts it
    assert pid not in dask_client.run(os.getpid).values()
    # Its batch ran again elsewhere: the victim was asked for twice, and landed once.
    assert asked() - before == 2
    rows, metrics = box["result"]
    assert metrics["failed"] == 0
    assert tree_digest(tmp_path / "dask") == tree_digest(tmp_path / "ref")
    assert not list((tmp_path / "dask").rglob("*.part"))


def test_kinetics_clips_fetch_on_dask_as_locally(dask_client, tmp_path):
    """Each yt-dlp section is a task on a worker, into the shared cache."""
    root = tmp_path / "kinetics"
    generate(root)
    with KineticsStandin(root=root).start() as kserver:
        cfg = kconf(kserver)
        fetch_cfg = group_defaults("fetch", retries=2, backoff=0.01, backoff_max=0.05)
        store = group_defaults("store")
        _, local = fetch(
            KINETICS,
            cfg,
            fetch_cfg,
            store,
            tmp_path / "local",
            tmp_path / "c1",
            executor=LocalExecutor(2),
        )
        before = sum(kserver.requests.values())
        with executor_for(dask_client) as ex:
            rows, metrics = fetch(
                KINETICS, cfg, fetch_cfg, store, tmp_path / "dask", tmp_path / "c2", executor=ex
            )
        assert sum(kserver.requests.values()) > before  # it did fetch, on the workers
    assert metrics == local and metrics["ok"] == 8
    assert tree_digest(tmp_path / "dask") == tree_digest(tmp_path / "local")


def _tasks_held(dask_scheduler) -> int:
    return len(dask_scheduler.tasks)


def test_a_lost_scheduler_loses_no_finished_download(server, tmp_path):
    """The scheduler dies mid-fetch: the stage stops (to resume), the re-run fetches only what
    was still running, and ends byte-identical to an uninterrupted build."""
    import dask
    from distributed import Client, LocalCluster

    cfg = lila_conf(index_url=server.index_url, dataset="NACTI-demo")
    ref, _ = run_fetch(cfg, tmp_path / "ref", tmp_path / "c1", LocalExecutor(2))
    wanted = sorted(r.url for r in ref if r.status == "ok")
    victim = wanted[len(wanted) // 2]
    server.faults.add("*/" + victim.rsplit("/", 1)[1], "stall:60")
    box: dict = {}
    settings = {"distributed.scheduler.worker-saturation": 1.0}
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0", host="127.0.0.1"
        )
    client = Client(cluster)

    def build():
        with executor_for(client, items_per_task=4, window=4) as ex:
            try:
                run_fetch(cfg, tmp_path / "out", tmp_path / "c2", ex)
            except TransientFailures as exc:
                box["error"] = exc

    first = dict(server.requests)  # the reference build's
    runner = threading.Thread(target=build)
    runner.start()
    try:
        wait_for_only_the_victim(client, server)
        # That can be a moment when a busy driver has not yet sent the later batches: wait
        # until every URL was asked for and the driver has read every other batch (read
        # futures are released, so the scheduler then holds the stalled batch alone).
        deadline = time.monotonic() + 20  # the stall outlasts this (low_speed_time: 30 s)
        while time.monotonic() < deadline:
            asked = {p for p, n in server.requests.items() if n > first.get(p, 0)}
            if {urlsplit(u).path for u in wanted} <= asked and client.run_on_scheduler(
                _tasks_held
            ) == 1:
                break
            time.sleep(0.05)
    finally:
        client.close()
        cluster.close()  # the scheduler (and its workers) gone mid-run
    runner.join(120)
    assert "lost the Dask scheduler" in str(box["error"])
    assert not (tmp_path / "out").exists()
    done = {
        u
        for u, r in Ledger(tmp_path / "c2" / "ledger-lila.sqlite").all().items()
        if r.status == "ok"
    }
    # Only the stalled batch of 4 is missing from the ledger.
    assert victim not in done and len(done) >= len(wanted) - 4
    before = dict(server.requests)
    run_fetch(cfg, tmp_path / "out", tmp_path / "c2", LocalExecutor(2))
    again = {p for p, n in server.requests.items() if n > before.get(p, 0) and p.endswith(".jpg")}
    # The re-run asks only for what the ledger did not record, the victim among them.
    assert {urlsplit(u).path for u in wanted if u not in done} == again
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "ref")


def test_figure8_movies_and_cleaning_on_dask_as_locally(dask_client, tmp_path):
    """Figure Eight's own stages: each movie a task, its images spooled, packed in order."""
    from tests.test_figure8 import KEY, ONE_SPLIT, conf
    from tests.test_figure8 import run_fetch as fetch_figure8

    job = generate_job()
    job.write_inputs(tmp_path / "input")
    with pytest.MonkeyPatch.context() as mp, Figure8Standin(job, key=KEY) as srv:
        mp.setenv("FIGURE_EIGHT_KEY", KEY)
        cfg = conf(srv.url, tmp_path / "input")
        fetch_figure8(cfg, tmp_path / "fetch", tmp_path / "cache")
    figure8 = load("figure8")
    with executor_for(dask_client) as ex:
        for name, executor in (("local", LocalExecutor(2)), ("dask", ex)):
            out = tmp_path / name
            _, frames = extract_frames(
                Store(tmp_path / "fetch"), figure8, cfg, out / "frames", 1 << 20, executor=executor
            )
            cleaned = clean_store(
                Store(out / "frames"),
                figure8,
                cfg,
                out / "clean",
                executor=executor,
                split=ONE_SPLIT,
            )
            assert frames["clips_ok"] > 0 and cleaned.metrics["frames"] > 0
    assert tree_digest(tmp_path / "dask") == tree_digest(tmp_path / "local")
    assert not list((tmp_path / "dask").rglob(".spool"))


class Poison(WorkerPlugin):
    """Make a worker process die, as a crashing codec would, on a clip marked POISON."""

    name = "poison"

    def setup(self, worker):
        import stages.families.frames as ef

        self.real = real = ef.extract

        def extract(segment, *args, **kw):
            if segment.read(6) == b"POISON":
                os.kill(os.getpid(), signal.SIGKILL)
            segment.seek(0)
            return real(segment, *args, **kw)

        ef.extract = extract

    def teardown(self, worker):
        import stages.families.frames as ef

        ef.extract = self.real


class PoisonURL(WorkerPlugin):
    """Make a worker process die while it downloads one URL, every time."""

    name = "poison-url"

    def __init__(self, suffix: str):
        self.suffix = suffix

    def setup(self, worker):
        from stages.net.download import Downloader

        self.real = real = Downloader._run
        suffix = self.suffix

        def run(dl, jobs, done):
            if any(job.url.endswith(suffix) for job in jobs):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(dl, jobs, done)

        Downloader._run = run

    def teardown(self, worker):
        from stages.net.download import Downloader

        Downloader._run = self.real


def test_a_download_that_kills_its_worker_fails_alone(dask_client, server, tmp_path):
    cfg = lila_conf(index_url=server.index_url, dataset="NACTI-demo")
    ref, _ = run_fetch(cfg, tmp_path / "ref", tmp_path / "c1", LocalExecutor(2))
    wanted = sorted(r.url for r in ref if r.status == "ok")
    victim = wanted[5]
    dask_client.register_plugin(PoisonURL(victim.rsplit("/", 1)[1]))
    try:
        with executor_for(dask_client, items_per_task=8) as ex:
            rows, metrics = run_fetch(cfg, tmp_path / "dask", tmp_path / "c2", ex)
    finally:
        dask_client.unregister_worker_plugin(PoisonURL.name)
        dask_client.wait_for_workers(2, timeout=180)
    failed = {r.url: r.reason for r in rows if r.status == "failed"}
    # Its batch of 8 died with it, then went again URL by URL: only the victim failed.
    assert failed == {victim: "its Dask worker died while fetching"}
    assert metrics["ok"] == len(wanted) - 1


def test_every_hostile_answer_is_the_same_items_outcome_on_dask(dask_client, tmp_path):
    with HostileServer() as hostile, executor_for(dask_client, items_per_task=5) as ex:
        urls = {f"{hostile.url}{path}": path for path in EXPECTED}
        dl = Downloader(
            group_defaults("fetch", **LIMITS), tmp_path / "c", ledger_name="h", executor=ex
        )
        results = dl.fetch_all(list(urls))
        # Workers run the transfers: the same status and reason as a local run, per URL.
        assert {urls[u]: (r.status, r.reason) for u, r in results.items()} == EXPECTED
        # The driver's ledger holds exactly what came back, and nothing unverified landed.
        ledger = {u: (r.status, r.reason) for u, r in dl.ledger.all().items()}
        assert ledger == {u: (r.status, r.reason) for u, r in results.items()}
        assert_cache_sound(dl)
        dl.close()


def _setenv(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@pytest.fixture
def worker_env(dask_client):
    """Set an environment variable on the session's workers (as a site's job script would)."""
    names = set()

    def set_(name, value):
        names.add(name)
        dask_client.run(_setenv, name, value)

    yield set_
    for name in names:
        dask_client.run(_setenv, name, None)


def test_workers_send_the_sas_token_from_their_own_env_to_its_origins_only(
    dask_client, worker_env, four_origins, standin_root, tmp_path, monkeypatch
):
    index, meta, imgs, elsewhere = four_origins
    monkeypatch.setenv("TEST_SAS_TOKEN", SECRET)
    worker_env("TEST_SAS_TOKEN", SECRET)  # tasks never carry it
    moved = images(standin_root)[0]
    imgs.faults.add(moved, [("redirect", f"{elsewhere.url}/gcp/{moved}")])
    cfg = lila_with_token(index, [meta.url, imgs.url])
    with executor_for(dask_client, items_per_task=4) as ex:
        rows, metrics = run_fetch(cfg, tmp_path / "out", tmp_path / "cache", ex)
    assert metrics["ok"] == metrics["items"] > 10 and metrics["failed"] == 0
    assert index.seen and leaked(index) == []
    assert elsewhere.requests[f"/gcp/{moved}"] == 1 and leaked(elsewhere) == []
    assert imgs.seen and all(SIG in s.query for s in meta.seen + imgs.seen)
    assert not any(SIG in r.url for r in rows)

    # Workers with a wrong token: one clear error naming the variable, nothing written.
    worker_env("TEST_SAS_TOKEN", "sv=2034-01-01&sig=wrong")
    with (
        executor_for(dask_client, items_per_task=4) as ex,
        pytest.raises(CredentialRejected, match="answered http 403 to the credential") as err,
    ):
        run_fetch(cfg, tmp_path / "out2", tmp_path / "cache2", ex)
    assert "TEST_SAS_TOKEN" in str(err.value) and "wrong" not in str(err.value)
    assert not (tmp_path / "out2").exists()

    # Workers without it: the stage stops, naming the variable the workers lack.
    worker_env("TEST_SAS_TOKEN", None)
    with (
        executor_for(dask_client) as ex,
        pytest.raises(StageError, match=r"on Dask worker .*TEST_SAS_TOKEN, which is not set"),
    ):
        run_fetch(cfg, tmp_path / "out3", tmp_path / "cache3", ex)
    assert not (tmp_path / "out3").exists()


def test_a_local_cluster_keeps_a_worker_whose_restart_is_slow(tmp_path):
    """Dask's job clusters close a worker that stays gone past `lost-worker-timeout`; a local
    cluster's nanny restarts its worker itself, however slowly, and must be left to."""
    import dask
    from distributed import Client

    from stages.core.cluster import local_cluster

    slow = tmp_path / "slow"
    preload = tmp_path / "slow_start.py"
    preload.write_text(
        f"import os, time\n\ndef dask_setup(worker):\n"
        f"    if os.path.exists({str(slow)!r}):\n        time.sleep(4)\n"
    )
    cfg = load_conf(
        ROOT / "conf", {"DSREPO_EXECUTOR": "dask", "DSREPO_EXECUTOR_OVERRIDES": "workers=1"}
    )
    ambient = {
        "distributed.deploy.lost-worker-timeout": "1s",
        "distributed.worker.preload": [str(preload)],
    }
    with (
        dask.config.set(ambient),
        local_cluster(cfg) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(1, timeout=60)
        [(first, pid)] = client.run(os.getpid).items()
        slow.touch()  # the restart now outlasts the 1 s timeout by 3 s
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = client.scheduler_info()["workers"]
            if workers and first not in workers:
                break
            time.sleep(0.2)
        assert workers and first not in workers, "the killed worker never came back"
        assert list(cluster.workers) == [0]


def test_a_cluster_without_workers_stops_instead_of_waiting_forever(tmp_path):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=0, dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster,
        Client(cluster) as client,
        executor_for(client, wait_workers=0, wait_timeout=1.0) as ex,
        pytest.raises(TransientFailures, match="no Dask worker for 1 s"),
    ):
        list(ex.map(abs, [-1, -2]))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A store of three short clips and a poison one, as fetch writes it."""
    root = tmp_path_factory.mktemp("clips")
    paths = {
        f"c{i}": make_clip(root / f"c{i}.mp4", seconds=1, fps=10, width=96, height=64, seed=i)
        for i in range(3)
    }
    (root / "bad.mp4").write_bytes(b"POISON" + os.urandom(4000))
    paths["bad"] = root / "bad.mp4"
    rows = [
        Row(item_id=k, source="kinetics", source_id=k, url=f"file:{k}.mp4", labels=["x"])
        for k in sorted(paths)
    ]
    write_store(
        root / "fetch", rows, lambda r: paths[r.item_id], 1 << 30, executor=LocalExecutor(2)
    )
    return root / "fetch"


def test_extract_frames_on_dask_matches_local_and_a_poison_clip_is_one_failure(
    dask_client, clips, tmp_path
):
    cfg = source_defaults("kinetics", classes=["x"], frames={"short_side": None})
    _, local = extract_frames(Store(clips), KINETICS, cfg, tmp_path / "local", 1 << 20, 2)
    assert list(local["reasons"]) == [
        "undecodable video: InvalidDataError (Invalid data found when processing input)"
    ]
    dask_client.register_plugin(Poison())
    try:
        with executor_for(dask_client) as ex:
            rows, metrics = extract_frames(
                Store(clips), KINETICS, cfg, tmp_path / "dask", 1 << 20, executor=ex
            )
    finally:
        dask_client.unregister_worker_plugin(Poison.name)
        dask_client.wait_for_workers(2, timeout=180)  # restarts are slow on a busy machine
    assert metrics["reasons"] == {"decoder process died": 1}
    assert metrics["clips_ok"] == 3 and metrics["frames"] == local["frames"]
    by_id = {r.item_id: r for r in rows}
    assert by_id["bad"].status == "corrupt"
    for name in ("shards",):
        assert tree_digest(tmp_path / "dask" / name) == tree_digest(tmp_path / "local" / name)


def test_export_npz_on_dask_is_byte_identical(dask_client, clips, tmp_path):
    cfg = source_defaults("kinetics", classes=["x"], frames={"short_side": None})
    extract_frames(Store(clips), KINETICS, cfg, tmp_path / "frames", 1 << 20, 2)
    store = Store(tmp_path / "frames")
    export = group_defaults("export")
    export.frames, export.clips_per_shard = 4, 2
    a = export_splits(store, KINETICS, cfg, export, tmp_path / "local", ["all"], LocalExecutor(2))
    with executor_for(dask_client) as ex:
        b = export_splits(store, KINETICS, cfg, export, tmp_path / "dask", ["all"], ex)
    assert a == b and a["items"] == 3 and a["shards"] == 2
    assert tree_digest(tmp_path / "dask") == tree_digest(tmp_path / "local")


def test_a_worker_that_cannot_see_the_output_fails_fast(tmp_path):
    """A `dask worker` in a mount namespace of its own, where tmp_path is an empty tmpfs."""
    from distributed import Client, LocalCluster

    usable = shutil.which("unshare") is not None and (
        subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False).returncode == 0
    )
    if not usable:
        if os.environ.get("CI"):
            pytest.fail("`unshare -rm` fails here: CI must allow user namespaces")
        pytest.skip("no user namespaces here (unshare -rm)")
    dask = str(Path(sys.executable).parent / "dask")
    with LocalCluster(n_workers=0, dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster:
        blind = subprocess.Popen(
            [
                "unshare",
                "-rm",
                "sh",
                "-c",
                f'mount -t tmpfs none "{tmp_path}" && exec "$0" worker "$1" --nthreads 1 '
                "--no-dashboard --no-nanny",
                dask,
                cluster.scheduler_address,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=60)
                shard = tmp_path / "in.tar"
                shard.write_bytes(b"x" * 1024)
                with executor_for(client) as ex:
                    with pytest.raises(StageError, match=f"cannot see {shard}:"):
                        ex.check_visible(files=[shard])  # an input: only read, never probed
                    with pytest.raises(StageError) as err:
                        ex.check_visible(tmp_path / "out")
        finally:
            blind.kill()
            blind.wait()
    assert f"cannot see {tmp_path / 'out'}:" in str(err.value)
    assert not list((tmp_path / "out").iterdir())  # the probe is gone


@pytest.mark.slow
def test_a_probe_that_hangs_is_reported_instead_of_blocking_the_stage(tmp_path):
    """A worker's storage check gives up on a read that never returns (a hung NFS mount)."""
    from stages.core.cluster import _missing

    (tmp_path / "seen").mkdir()
    (tmp_path / "seen" / "probe").write_text("tok")
    hung = tmp_path / "hung"
    hung.mkdir()
    os.mkfifo(hung / "probe")  # opening it for reading blocks until a writer comes
    box: dict = {}
    returned = threading.Event()

    def check() -> None:
        box["missing"] = _missing(
            [(str(tmp_path / "seen" / "probe"), "tok"), (str(hung / "probe"), "tok")],
            [],
            timeout=0.5,
        )
        returned.set()

    threading.Thread(target=check, daemon=True).start()
    try:
        # The read cannot return before a writer opens the FIFO, which happens only after
        # this: the check returning at all means it gave up on the read instead of waiting.
        assert returned.wait(120), "the storage check blocked on the hung read"
        assert box["missing"] == [f"{hung} (no answer within 0.5 s: a hung mount?)"]
    finally:
        os.close(os.open(hung / "probe", os.O_WRONLY | os.O_NONBLOCK))  # release the reader


def test_dvc_lock_is_the_same_whichever_executor_builds(dask_client, server, tmp_path):
    """fetch, extract-frames, clean and export through `dvc repro`, local then on the cluster."""
    proj = make_project(
        tmp_path / "repo",
        tmp_path / "cache",
        server.index_url,
        kinetics_url="http://127.0.0.1:9",
        disable=("kinetics",),
    )
    proj.dvc("repro")
    lock, data = (proj.path / "dvc.lock").read_text(), tree_digest(proj.path / "data")
    # The session cluster speaks TLS: the driver connects as a user's cluster's client does,
    # with certificate files named in the executor's conf.
    (tmp_path / "tls").mkdir(mode=0o700)
    tls = write_security(dask_client.security, tmp_path / "tls")
    env = {
        **proj.env,
        "DSREPO_EXECUTOR": "dask",
        "DSREPO_EXECUTOR_OVERRIDES": (
            f"address={dask_client.scheduler.address} items_per_task=8 "
            f"security.ca_file={tls.tls_ca_file} security.cert={tls.tls_client_cert} "
            f"security.key={tls.tls_client_key}"
        ),
    }
    # Switching the executor invalidates nothing...
    assert "up to date" in proj.dvc("status", env=env).stdout
    # ...and a forced rebuild on the cluster writes the same bytes and the same dvc.lock.
    stages = [
        "fetch@lila",
        "extract-frames@videodir",
        "clean-annotations@videodir",
        "export-npz@lila",
        "export-npz@videodir",
    ]
    out = proj.dvc("repro", "-f", "-s", *stages, env=env)
    assert out.stdout.count("Running stage") == len(stages), out.stdout
    assert "Dask" in out.stderr or "dask" in out.stderr  # it ran there, not locally
    assert (proj.path / "dvc.lock").read_text() == lock
    assert tree_digest(proj.path / "data") == data


# --- the cluster is a trust boundary: its workers hold the sources' secrets -----------------


def _refused(address: str, **connection_args) -> bool:
    """Tell whether a Dask listener refuses a connection (and so any request on it)."""
    from distributed.comm import connect

    async def ask():
        comm = await connect(address, timeout=5, **connection_args)
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            comm.abort()

    try:
        asyncio.run(ask())
    except OSError:  # CommClosedError, an SSL error or a timeout
        return True
    return False


def _listening(pid: int) -> set[str]:
    """Return the IP addresses a process listens on."""
    conns = psutil.Process(pid).net_connections("inet")
    return {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}


def test_only_the_driver_can_use_the_cluster_it_starts(tmp_path, monkeypatch):
    """Anyone else reaching the LocalCluster's ports gets no session, so runs no code on the
    workers (where the sources' secrets are); everything listens on loopback only, and its
    key stays in memory."""
    from distributed import Client
    from distributed.comm.utils import get_tcp_server_addresses
    from distributed.security import Security

    monkeypatch.chdir(tmp_path)
    env = {"DSREPO_EXECUTOR": "dask", "DSREPO_EXECUTOR_OVERRIDES": "workers=1"}
    with DaskExecutor(load_conf(ROOT / "conf", env)) as ex:
        assert list(ex.map(abs, [-1, -2])) == [1, 2]  # the driver can
        scheduler = ex.client.scheduler.address
        info = ex.client.scheduler_info()["workers"]
        listeners = [scheduler, *info, *(w["nanny"] for w in info.values())]
        assert all(a.startswith("tls://127.0.0.1:") for a in listeners), listeners
        untrusting = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        untrusting.check_hostname, untrusting.verify_mode = False, ssl.CERT_NONE
        for address in listeners:
            assert _refused(address.replace("tls://", "tcp://"))  # no TLS
            assert _refused(address, ssl_context=untrusting)  # TLS, no certificate
            other = Security.temporary().get_connection_args("client")
            assert _refused(address, **other)  # a certificate of another cluster
        for attempt in (
            {"address": scheduler.replace("tls://", "tcp://")},
            {"address": scheduler, "security": Security.temporary()},
        ):
            with pytest.raises(OSError):
                Client(**attempt, timeout=5).run(os.environ.get, "TEST_SAS_TOKEN")
        # The dashboard, the scheduler, the nannies and the workers: loopback only.
        dashboard = get_tcp_server_addresses(ex.cluster.scheduler.http_server)
        assert {host for host, *_ in dashboard} == {"127.0.0.1"}
        for pid in ex.client.run(os.getpid).values():
            nanny = psutil.Process(pid).ppid()
            assert _listening(pid) | _listening(nanny) == {"127.0.0.1"}
    assert list(tmp_path.iterdir()) == []  # no key file in the working directory


@pytest.mark.parametrize(
    "address, refused",
    [
        ("tcp://192.0.2.7:8786", True),
        ("192.0.2.7:8786", True),  # Dask's default scheme: tcp
        ("tcp://scheduler.example.org:8786", True),
        ("ws://192.0.2.7:8786", True),
        ("tcp://127.0.0.1:8786", False),
        ("tcp://localhost:8786", False),
        ("tcp://[::1]:8786", False),
        ("tls://192.0.2.7:8786", False),
    ],
)
def test_an_unencrypted_scheduler_is_refused_unless_it_is_on_this_machine(address, refused):
    from stages.core.cluster import insecure

    assert insecure(address) is refused


def test_the_executor_refuses_an_insecure_remote_scheduler_unless_told(tmp_path, caplog):
    def conf(**over):
        overrides = " ".join(f"{k}={v}" for k, v in {"wait_timeout": 1.0, **over}.items())
        env = {"DSREPO_EXECUTOR": "dask", "DSREPO_EXECUTOR_OVERRIDES": overrides}
        return load_conf(ROOT / "conf", env)

    with pytest.raises(ConfigError, match="not encrypted and not on this machine"):
        DaskExecutor(conf(address="tcp://192.0.2.7:8786"))
    sched = tmp_path / "scheduler.json"
    sched.write_text('{"address": "tcp://192.0.2.7:8786"}')
    with pytest.raises(ConfigError, match="not encrypted and not on this machine"):
        DaskExecutor(conf(scheduler_file=sched))
    with pytest.raises(ConfigError, match="speaks TLS: name this client's certificate"):
        DaskExecutor(conf(address="tls://192.0.2.7:8786"))
    # A cluster class the driver cannot hand TLS settings to is not started at all.
    with pytest.raises(ConfigError, match="takes no `security`"):
        DaskExecutor(conf(cluster="{_target_:argparse.Namespace}"))
    # Told otherwise: a warning, then a connection attempt (to an address that never answers).
    with pytest.raises(StageError, match="cannot reach the Dask scheduler"):
        DaskExecutor(conf(address="tcp://192.0.2.7:8786", allow_insecure="true"))
    assert "unencrypted Dask scheduler at tcp://192.0.2.7:8786" in caplog.text


def test_a_job_cluster_keeps_its_key_outside_the_workspace(tmp_path, monkeypatch):
    """dask-jobqueue hands workers the run's key as files on shared storage: in a private
    folder of the download cache, never the working directory, and gone after the run."""
    pytest.importorskip("dask_jobqueue")
    from distributed.comm.utils import get_tcp_server_addresses

    workspace, cache = tmp_path / "repo", tmp_path / "cache"
    workspace.mkdir()
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("DSREPO_CACHE_DIR", str(cache))
    overrides = "adapt=null wait_workers=0 +cluster.scheduler_options={host:127.0.0.1}"
    env = {"DSREPO_EXECUTOR": "slurm", "DSREPO_EXECUTOR_OVERRIDES": overrides}
    cfg = load_conf(ROOT / "conf", env)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "writing temp files to current working directory"
        ex = DaskExecutor(cfg)
    with ex:
        assert ex.client.scheduler.address.startswith("tls://")
        script = ex.cluster.job_script()
        flags = dict(re.findall(r"--tls-(ca-file|cert|key) (\S+)", script))
        assert set(flags) == {"ca-file", "cert", "key"}, script
        key = Path(flags["key"])
        assert key.parent.parent == cache and key.parent.name.startswith("dask-tls-")
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.parent.stat().st_mode & 0o777 == 0o700
        dashboard = get_tcp_server_addresses(ex.cluster.scheduler.http_server)
        assert {host for host, *_ in dashboard} == {"127.0.0.1"}
        assert list(workspace.iterdir()) == []
    assert not key.parent.exists()
    assert list(workspace.iterdir()) == []


# --- the executor's conf: every value from conf/executor/ ------------------------------------


def test_without_conf_executor_the_executor_is_one_clear_error(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf, ignore=shutil.ignore_patterns("executor"))
    with pytest.raises(ConfigError, match=r"conf/executor not found: every executor setting"):
        load_conf(conf, {})


def test_items_per_task_comes_from_the_conf_for_both_executors(dask_client):
    common = yaml.safe_load((ROOT / "conf" / "executor" / "_common.yaml").read_text())
    local = load_conf(ROOT / "conf", {"DSREPO_EXECUTOR": "local"})
    assert open_executor(local).items_per_task == common["items_per_task"]
    env = {"DSREPO_EXECUTOR": "local", "DSREPO_EXECUTOR_OVERRIDES": "items_per_task=7 workers=3"}
    with open_executor(load_conf(ROOT / "conf", env)) as ex:
        assert (ex.items_per_task, ex.workers) == (7, 3)
    with executor_for(dask_client, items_per_task=7) as ex:
        assert ex.items_per_task == 7
