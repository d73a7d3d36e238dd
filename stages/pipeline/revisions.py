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
    """Run git in root, capturing its output."""
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=60
    )


def experiments(root: Path) -> dict[str, str]:
    """Return the commit of each `dvc exp` by name (refs/exps/.../<name>)."""
    out = git(root, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps")
    found: dict[str, str] = {}
    for line in out.stdout.splitlines():
        commit, ref = line.split(" ", 1)
        parts = ref.split("/")
        if len(parts) >= 4 and not parts[-1].startswith("exec"):  # exec refs: runs in flight
            found.setdefault(parts[-1], commit)
    return found


def resolve(root: Path, name: str | None) -> Revision:
    """Return the revision a git name (commit, branch, tag) or a `dvc exp` name means; None
    or "workspace" is the workspace."""
    if name in (None, WORKSPACE):
        return Revision(WORKSPACE, None)
    if name.startswith("-"):
        raise RevisionError(f"unknown revision or experiment {name!r}")
    out = git(root, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    if out.returncode == 0:
        return Revision(name, out.stdout.strip())
    exps = experiments(root)
    if name in exps:
        return Revision(name, exps[name])
    known = ", ".join(sorted(exps)) or "none"
    raise RevisionError(
        f"unknown revision or experiment {name!r} (not a git commit, branch or tag; "
        f"experiments: {known})"
    )


def read_params(root: Path, rev: Revision) -> dict:
    """Return params.yaml at a revision ({} where it has none)."""
    if rev.commit is None:
        path = root / "params.yaml"
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    else:
        out = git(root, "show", f"{rev.commit}:params.yaml")
        text = out.stdout if out.returncode == 0 else ""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RevisionError(f"params.yaml at {rev.label} is not YAML: {exc}") from None
    return data if isinstance(data, dict) else {}


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
    except FileNotFoundError:
        raise RevisionError(
            f"{rel} is not tracked at {rev.label}: that revision predates this source or stage"
        ) from None
    except DataIndexDirError:  # the output's directory listing could not be fetched
        raise RevisionError(absent) from None
    except DvcException as exc:
        text = str(exc)
        if "missing" in text.lower() or "not in cache" in text.lower():
            raise RevisionError(f"{absent}: {text}") from None
        raise RevisionError(f"cannot read {rel} at {rev.label}: {text}") from None


def read_rows(root: Path, rev: Revision, out_dir: str) -> list[Row]:
    """Return the rows of a stage output's manifest at a revision."""
    data = manifest_bytes(root, rev, out_dir)
    try:
        # One thread: pyarrow 26 aborts the process at exit now and then ("terminate called
        # without an active exception") after a threaded read of an in-memory file.
        table = pq.read_table(pa.BufferReader(data), use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise RevisionError(f"{out_dir}/{MANIFEST} at {rev.label} is not Parquet: {exc}") from None
    return [Row.from_record(r) for r in table.to_pylist()]


def payload(root: Path, rev: Revision, out_dir: str, row: Row) -> bytes | None:
    """Return one item's payload at a revision (None when it has none or it cannot be read)."""
    if row.shard is None or row.offset is None or row.bytes is None:
        return None
    rel = posixpath.normpath(f"{out_dir}/{row.shard}")  # shards may sit in an upstream output
    try:
        if rev.commit is None:
            with open(root / rel, "rb") as fh:
                fh.seek(row.offset)
                return fh.read(row.bytes)
        import dvc.api

        with dvc.api.open(rel, repo=str(root), rev=rev.commit, mode="rb") as fh:
            fh.seek(row.offset)
            return fh.read(row.bytes)
    except Exception:  # a picture for a gallery: drawn as missing, never a crash
        return None
