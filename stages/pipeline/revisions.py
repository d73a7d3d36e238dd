"""Read a stage's manifest and params.yaml as they were at a git revision or `dvc exp`, without
checking anything out: git for the params, DVC's API for the manifest (local cache, else the
remote, fetching that one file and not the dataset)."""

from __future__ import annotations

import posixpath
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from stages.core.errors import StageError
from stages.core.store import MANIFEST, Row

WORKSPACE = "workspace"


class RevisionError(StageError):
    """Raise for a revision that cannot be read: unknown, too old, or not in any cache."""


@dataclass(frozen=True)
class Revision:
    """A resolved version of the repository: a commit, or the workspace (commit None)."""

    name: str
    commit: str | None

    @property
    def label(self) -> str:
        """Return how reports name it: the name, and the short commit if it differs."""
        if self.commit is None or self.name.startswith(self.commit[:7]):
            return self.name
        return f"{self.name} ({self.commit[:7]})"


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run git in root, capturing its output as bytes."""
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RevisionError(f"cannot run git in {root}: {exc}") from None


def experiments(root: Path) -> list[str]:
    """Return the names of the `dvc exp`s (refs/exps/<sha[:2]>/<sha[2:]>/<name>), sorted."""
    out = git(root, "for-each-ref", "--format=%(refname)", "refs/exps")
    names = set()
    for ref in out.stdout.decode(errors="replace").splitlines():
        parts = ref.split("/")
        if len(parts) == 5 and len(parts[2]) == 2:  # not celery/stash, exec/..., apply/...
            names.add(parts[4])
    return sorted(names)


def resolve(root: Path, name: str | None) -> Revision:
    """Return the revision a git name (commit, branch, tag) or a `dvc exp` name means, as DVC
    resolves it (a branch wins over an experiment; an experiment of HEAD's baseline wins over
    one of another); None or "workspace" is the workspace."""
    if name in (None, WORKSPACE):
        return Revision(WORKSPACE, None)
    if name.startswith("-"):
        raise RevisionError(f"unknown revision or experiment {name!r}")
    if not (root / ".git").exists() and git(root, "rev-parse", "--git-dir").returncode != 0:
        raise RevisionError(f"{root} is not in a git repository")
    from dvc.scm import SCM, RevError, resolve_rev

    try:
        return Revision(name, resolve_rev(SCM(str(root)), name))
    except RevError as exc:
        known = ", ".join(experiments(root)) or "none"
        raise RevisionError(
            f"unknown revision or experiment {name!r} ({exc}; experiments: {known})"
        ) from None


def read_params(root: Path, rev: Revision) -> dict:
    """Return params.yaml at a revision ({} where it has none)."""
    if rev.commit is None:
        path = root / "params.yaml"
        raw = path.read_bytes() if path.is_file() else b""
    else:  # ./ : relative to the project, which may sit in a subfolder of the git repo
        out = git(root, "show", f"{rev.commit}:./params.yaml")
        raw = out.stdout if out.returncode == 0 else b""
    try:
        data = yaml.safe_load(raw.decode("utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RevisionError(f"params.yaml at {rev.label} is not UTF-8 YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RevisionError(f"params.yaml at {rev.label} is not a mapping")
    for key in ("sources", "frame_sources"):
        if not isinstance(data.get(key) or {}, dict):
            raise RevisionError(f"params.yaml at {rev.label}: {key} is not a mapping")
    return data


def storage_missing(exc: BaseException) -> bool:
    """Tell whether a DVC error comes from an object in no cache and no remote."""
    while exc is not None:
        if "No storage files available" in str(exc) or "not in cache" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def manifest_bytes(root: Path, rev: Revision, out_dir: str) -> bytes:
    """Return a stage output's manifest.parquet at a revision."""
    rel = f"{out_dir}/{MANIFEST}"
    if rev.commit is None:
        path = root / rel
        if not path.is_file():
            raise RevisionError(
                f"{rel} is not in the workspace: run `dvc repro` or `dvc pull` first"
            )
        return path.read_bytes()
    import dvc.api
    from dvc.exceptions import DvcException
    from dvc_data.index.index import DataIndexDirError

    absent = (
        f"{rel} at {rev.label} is in neither the local DVC cache nor the remote (run `dvc "
        "push` where it was built, or check the remote's settings)"
    )
    try:
        with dvc.api.open(rel, repo=str(root), rev=rev.commit, mode="rb") as fh:
            return fh.read()
    except DataIndexDirError:  # the output's directory listing could not be fetched
        raise RevisionError(absent) from None
    except DvcException as exc:
        if storage_missing(exc):
            raise RevisionError(absent) from None
        raise RevisionError(
            f"{rel} is not tracked at {rev.label}: that revision predates this source or stage "
            f"({exc})"
        ) from None


def read_rows(root: Path, rev: Revision, out_dir: str) -> list[Row]:
    """Return the rows of a stage output's manifest at a revision."""
    data = manifest_bytes(root, rev, out_dir)
    try:
        # One thread: pyarrow 26 aborts the process at exit now and then ("terminate called
        # without an active exception") after a threaded read of an in-memory file.
        table = pq.read_table(pa.BufferReader(data), use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise RevisionError(f"{out_dir}/{MANIFEST} at {rev.label} is not Parquet: {exc}") from None
    try:
        return [Row.from_record(r) for r in table.to_pylist()]
    except (TypeError, ValueError) as exc:
        raise RevisionError(
            f"{out_dir}/{MANIFEST} at {rev.label} is not a manifest: {exc}"
        ) from None


def payload(
    root: Path, rev: Revision, out_dir: str, row: Row, opened: dict | None = None
) -> bytes | None:
    """Return one item's payload at a revision (None when it has none or it cannot be read);
    `opened` keeps one DVC file system per revision across calls."""
    if row.shard is None or row.offset is None or row.bytes is None:
        return None
    rel = posixpath.normpath(f"{out_dir}/{row.shard}")  # shards may sit in an upstream output
    try:
        if rev.commit is None:
            path = (root / rel).resolve()
            # A manifest names its shards: never a file outside the project, never a device.
            if not path.is_relative_to(root.resolve()) or not path.is_file():
                return None
            size = path.stat().st_size
            with open(path, "rb") as fh:
                fh.seek(row.offset)
                return fh.read(max(0, min(row.bytes, size - row.offset)))
        from dvc.api import DVCFileSystem

        cache = opened if opened is not None else {}
        fs = cache.get(rev.commit) or cache.setdefault(
            rev.commit, DVCFileSystem(url=str(root), rev=rev.commit)
        )
        with fs.open(rel, "rb") as fh:
            fh.seek(row.offset)
            return fh.read(row.bytes)
    except Exception:  # a picture for a gallery: drawn as missing, never a crash
        return None
