"""Shared fixtures: a generated LILA stand-in, its server, a scratch copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stages.pipeline.compose import source_defaults
from stages.sources.lila import LilaConf
from standins.lila import LilaStandin, generate_dataset

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# A SAS token the private stand-ins require, and its signature (what must never leak).
SECRET = "sv=2034-01-01&sig=Zm9vYmFyc2VjcmV0"
SIG = "Zm9vYmFyc2VjcmV0"


def lila_conf(classes=("mule deer", "cougar", "wild turkey", "empty"), **fetch) -> LilaConf:
    """The project's conf/source/lila.yaml with other classes and some fetch settings."""
    fetch = {"dataset": "T", "est_bytes_per_image": 100, "caps": {}, **fetch}
    return source_defaults("lila", classes=list(classes), fetch=fetch)


@pytest.fixture(scope="session")
def standin_root(tmp_path_factory) -> Path:
    """Generate one small NACTI-like dataset for the whole session."""
    root = tmp_path_factory.mktemp("standin")
    generate_dataset(root, n_images=60, seed=0)
    return root


@pytest.fixture
def server(standin_root):
    """Serve the stand-in on an ephemeral loopback port."""
    with LilaStandin(standin_root) as srv:
        yield srv


@pytest.fixture
def four_origins(standin_root):
    """Index on 127.0.0.1, metadata on .2, images on .3 (both want the token), spare on .4."""
    with (
        LilaStandin(standin_root, host="127.0.0.2", token=SECRET) as meta,
        LilaStandin(standin_root, host="127.0.0.3", token=SECRET) as imgs,
        LilaStandin(standin_root, host="127.0.0.4") as elsewhere,
        LilaStandin(standin_root, metadata_base=meta.url, images_base=imgs.url) as index,
    ):
        yield index, meta, imgs, elsewhere


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Give each test its own download cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv("DSREPO_CACHE_DIR", str(path))
    return path


def git(cwd: Path, *args: str) -> str:
    """Run git quietly with a fixed identity."""
    out = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def tracked_files() -> list[str]:
    """List the project's files as a fresh clone would have them (tracked + unignored)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def dvc_env(cache: Path) -> dict:
    """Return an environment where `python` and `dvc` are this venv's."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DSREPO_CACHE_DIR"] = str(cache)
    env.pop("PYTHONPATH", None)
    # `dvc exp run` commits; a fresh machine has no git identity.
    for who in ("AUTHOR", "COMMITTER"):
        env.setdefault(f"GIT_{who}_NAME", "test")
        env.setdefault(f"GIT_{who}_EMAIL", "test@localhost")
    return env


class Project:
    """A scratch git+DVC copy of this project, pointed at a stand-in server."""

    def __init__(self, path: Path, cache: Path):
        self.path, self.cache = path, cache
        self.env = dvc_env(cache)

    def run(self, *args: str, check: bool = True, env: dict | None = None, timeout=600):
        """Run a command in the project; return the CompletedProcess."""
        proc = subprocess.run(
            list(args),
            cwd=self.path,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def dvc(self, *args: str, **kw):
        """Run the venv's dvc."""
        return self.run(str(BIN / "dvc"), *args, **kw)

    def git(self, *args: str) -> str:
        """Run git."""
        return git(self.path, *args)

    def wait_for_queue(self, timeout: float = 420) -> str:
        """Wait until `dvc queue` runs nothing and holds nothing queued; return its status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.dvc("queue", "status").stdout
            if not any(word in status for word in ("Queued", "Running")):
                return status
            assert time.monotonic() < deadline, status
            time.sleep(2)

    def set_conf(self, rel: str, old: str, new: str) -> None:
        """Edit a conf file by exact text replacement."""
        p = self.path / rel
        text = p.read_text()
        assert old in text, f"{old!r} not in {rel}"
        p.write_text(text.replace(old, new, 1))

    def compose(self) -> None:
        """Recompose params.yaml after editing conf/ outside DVC."""
        self.run(sys.executable, "-m", "stages.compose", "params.yaml", "--force")


VIDEO_SOURCES = ("kinetics", "videodir")
IMPORT_ON = "  enabled: true              # true adds the import@videodir"


def make_project(
    dest: Path,
    cache: Path,
    index_url: str,
    remote: Path | None = None,
    *,
    kinetics_url: str | None = None,
    tator_url: str | None = None,
    figure8_url: str | None = None,
    import_url: str | None = None,
    disable: tuple[str, ...] = (),
) -> Project:
    """Copy the project to dest, point its LILA config at index_url, commit it.

    The video sources stay enabled only with `kinetics_url` (a Kinetics stand-in), which also
    writes the demo's video folder into data/videodir/input; the Tator source only with
    `tator_url` (a Tator stand-in); the Figure Eight source only with `figure8_url` (its
    stand-in serving the default generated job, whose input folder is written here); the
    video folder's import to Tator (and labels back) only with `import_url` too (a Tator
    stand-in holding an empty project)."""
    for rel in tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    proj = Project(dest, cache)
    proj.set_conf(
        "conf/source/lila.yaml",
        "index_url: http://127.0.0.1:8765/lila_camera_trap_datasets.csv",
        f"index_url: {index_url}",
    )
    if kinetics_url is None:
        for name in VIDEO_SOURCES:
            proj.set_conf(f"conf/source/{name}.yaml", "enabled: true", "enabled: false")
    else:
        text = (dest / "conf/source/kinetics.yaml").read_text()
        (dest / "conf/source/kinetics.yaml").write_text(
            text.replace("http://127.0.0.1:8766", kinetics_url)
        )
        from standins.video import make_folder

        make_folder(dest / "data" / "videodir" / "input")
    if import_url is None:
        proj.set_conf("conf/source/videodir.yaml", IMPORT_ON, IMPORT_ON.replace("true", "false"))
    else:
        proj.set_conf("conf/source/videodir.yaml", "http://127.0.0.1:8769", import_url)
    if tator_url is None:
        proj.set_conf("conf/source/tator.yaml", "enabled: true", "enabled: false")
    else:
        proj.set_conf("conf/source/tator.yaml", "http://127.0.0.1:8767", tator_url)
    if figure8_url is None:
        proj.set_conf("conf/source/figure8.yaml", "enabled: true", "enabled: false")
    else:
        proj.set_conf("conf/source/figure8.yaml", "http://127.0.0.1:8768", figure8_url)
        from standins.figure8 import generate_job

        generate_job().write_inputs(dest / "data" / "figure8" / "input")
    for name in disable:
        proj.set_conf(f"conf/source/{name}.yaml", "enabled: true", "enabled: false")
    # The local-input sources' folders are tracked by committed .dvc files: a project without
    # the source has no folder to track, one with it puts the folder in its DVC cache.
    inputs = []
    for name, on in (("videodir", kinetics_url), ("figure8", figure8_url)):
        if on is None or name in disable:
            (dest / "data" / name / "input.dvc").unlink(missing_ok=True)
        else:
            inputs.append(f"data/{name}/input")
    # A changed set of sources makes compose ask for a second run (DVC re-expands stages).
    proj.run(sys.executable, "-m", "stages.compose", "params.yaml", "--force", check=False)
    proj.compose()
    git(dest, "init", "-q", "-b", "main")
    if remote is not None:
        proj.dvc("remote", "add", "-f", "-d", "local", str(remote))
    if inputs:
        proj.dvc("add", "--quiet", *inputs)
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "init")
    return proj


@pytest.fixture
def project(tmp_path, server, cache_dir) -> Project:
    """A committed scratch project whose LILA source points at the stand-in."""
    return make_project(tmp_path / "repo", cache_dir, server.index_url, tmp_path / "remote")


@pytest.fixture(scope="session")
def fetched(tmp_path_factory) -> Path:
    """The demo's video folder, fetched once: 6 files by content (one under two names)."""
    from stages.core.executor import LocalExecutor
    from stages.fetch import fetch
    from stages.pipeline.compose import group_defaults, source_defaults
    from stages.sources import load
    from standins.video import make_folder

    tmp = tmp_path_factory.mktemp("import")
    make_folder(tmp / "input")
    cfg = source_defaults("videodir", fetch={"root": str(tmp / "input")})
    fetch(
        load("videodir"),
        cfg,
        group_defaults("fetch"),
        group_defaults("store"),
        tmp / "fetch",
        tmp / "c",
        executor=LocalExecutor(2),
    )
    return tmp / "fetch"


@pytest.fixture(scope="session")
def dask_client():
    """One 2-worker Dask cluster of processes for the session (about 1 s to start).

    Set up as the executor sets up a cluster it starts (conf/executor/dask.yaml), except that
    a task may kill its worker only once before it is lost, which keeps crash tests short.
    """
    from distributed import Client

    from stages.core.cluster import local_cluster
    from stages.pipeline.executors import load_conf

    env = {"DSREPO_EXECUTOR": "dask", "DSREPO_EXECUTOR_OVERRIDES": "workers=2 allowed_failures=1"}
    with local_cluster(load_conf(ROOT / "conf", env)) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


BUILT_TOKEN = "built-token-5ecret"  # both Tator stand-ins (fetch and import) accept it
BUILT_KEY = "built-key-5ecret"  # the Figure Eight stand-in's key


class Built:
    """A project whose five sources are built by `dvc repro`, pushed and committed once per
    session, with the stand-ins it was built from still serving (tests read it or clone it;
    none changes it)."""

    def __init__(self, project: Project, remote: Path):
        self.project, self.remote = project, remote
        self.path = project.path

    def clone(self, dest: Path, cache: Path | None = None, pull: bool = True) -> Project:
        """Return a teammate's clone: `git clone`, the same remote, `dvc pull`."""
        git(dest.parent, "clone", "-q", str(self.path), str(dest))
        # What `make .venv` builds in a clone: the plots page template (git-ignored).
        page = Path(".dvc", "plots-page", "template.html")
        shutil.copyfile(ROOT / page, dest / page)
        proj = Project(dest, cache or dest.parent / f"{dest.name}-cache")
        proj.env.update(TATOR_TOKEN=BUILT_TOKEN, FIGURE_EIGHT_KEY=BUILT_KEY)
        if pull:
            proj.dvc("pull", "--quiet")
        return proj


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Built:
    """Every source built as `make demo` builds it (the same generated data), against
    stand-ins serving all session."""
    from stages.demo import N_IMAGES
    from standins.figure8 import Figure8Standin
    from standins.kinetics import KineticsStandin
    from standins.kinetics import generate as generate_kinetics
    from standins.tator import TatorStandin, empty
    from standins.tator import generate as generate_tator

    tmp = tmp_path_factory.mktemp("built")
    generate_dataset(tmp / "lila", n_images=N_IMAGES, seed=0)
    generate_kinetics(tmp / "kinetics")
    with (
        LilaStandin(tmp / "lila") as lila,
        KineticsStandin(tmp / "kinetics") as kinetics,
        TatorStandin(generate_tator(n_media=6), token=BUILT_TOKEN) as tator,
        Figure8Standin(key=BUILT_KEY) as figure8,
        TatorStandin(empty(), token=BUILT_TOKEN) as into,
    ):
        into.stable_ids = into.annotate = True
        proj = make_project(
            tmp / "repo",
            tmp / "cache",
            lila.index_url,
            tmp / "remote",
            kinetics_url=kinetics.url,
            tator_url=tator.url,
            figure8_url=figure8.url,
            import_url=into.url,
        )
        proj.env.update(TATOR_TOKEN=BUILT_TOKEN, FIGURE_EIGHT_KEY=BUILT_KEY)
        proj.dvc("repro")
        proj.dvc("push", "--quiet")
        proj.git("add", "-A")
        proj.git("commit", "-qm", "build")
        yield Built(proj, tmp / "remote")
