"""Put a failed stage's outputs back as dvc.lock records its last build.

DVC deletes a stage's outputs before it runs the stage, and a stage that then fails leaves
them deleted (or half written): tracked metrics show as deleted in `git status` and the data
is gone from the workspace. The last build dvc.lock records is in DVC's cache (cached outputs
always; a stage's small git-tracked files because it puts a copy there when it succeeds,
`remember`: a report declared `cache: false` turns DVC's run-cache off, which otherwise did
that), or in git. A failed stage puts those bytes back before it exits, so a failed
`dvc repro` leaves every output present and `git status` showing only what the user changed.
What the failed run wrote to its small files (metrics, reports, the gates' CSV) is kept beside
them under `data/<source>/failed/` (git-ignored) for the user to read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

from stages.core.files import file_digest

log = logging.getLogger("stages.pipeline.restore")

FAILED = "failed"  # data/<source>/failed/<rest of the output's path>: the failed run's files


def locked_stages(root: Path) -> dict[str, list[dict]]:
    """Return each stage's outs as dvc.lock records them ({} without a readable lock)."""
    from dvc.utils.serialize import load_yaml

    try:
        doc = load_yaml(Path(root) / "dvc.lock")
    except Exception:  # noqa: BLE001 - no readable lock file: no build recorded
        return {}
    stages = doc.get("stages") if isinstance(doc, dict) else None
    return {
        name: [o for o in entry.get("outs") or [] if isinstance(o, dict) and o.get("path")]
        for name, entry in (stages if isinstance(stages, dict) else {}).items()
        if isinstance(entry, dict)
    }


def locked_outs(root: Path, stage: str) -> list[dict] | None:
    """Return the outs dvc.lock records for a stage, or None when it records no build."""
    return locked_stages(root).get(stage) or None


def failed_copy_path(rel: str) -> Path:
    """Return where the failed run's version of a small output is kept (git-ignored)."""
    parts = Path(rel).parts
    if len(parts) > 2 and parts[0] == "data":
        return Path(parts[0], parts[1], FAILED, *parts[2:])
    return Path(FAILED, rel)


def from_git(root: Path, rel: str, md5: str) -> bytes | None:
    """Return a file's bytes from git (index, then HEAD) when they have the locked md5."""
    for spec in (f":{rel}", f"HEAD:{rel}"):
        try:
            data = subprocess.run(
                ["git", "cat-file", "blob", spec],
                cwd=root,
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if hashlib.md5(data).hexdigest() == md5:
            return data
    return None


def place(src: Path, dest: Path, link: bool) -> None:
    """Put a cache object at dest: a hard link when the cache allows it, else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dest)
            return
        except OSError:  # another file system, or links refused: copy as DVC falls back
            pass
    shutil.copyfile(src, dest)


def remove(path: Path) -> None:
    """Remove a file or a directory tree, if present."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def restore_dir(odb, root: Path, rel: str, md5: str, link: bool) -> bool:
    """Rebuild a directory output from its `.dir` listing in DVC's cache; return success."""
    try:
        listing = json.loads(Path(odb.oid_to_path(md5)).read_text(encoding="utf-8"))
        objects = [(e["relpath"], Path(odb.oid_to_path(e["md5"]))) for e in listing]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not all(src.is_file() for _, src in objects):
        return False
    path = root / rel
    tmp = path.with_name(f".{path.name}.restore")
    remove(tmp)
    tmp.mkdir(parents=True)
    for relpath, src in objects:
        place(src, tmp / relpath, link)
    remove(path)
    os.replace(tmp, path)
    return True


def restore_file(odb, root: Path, rel: str, md5: str) -> str | None:
    """Put a file output back from DVC's cache or git, moving the failed run's version aside
    (under data/<source>/failed/); return where it went, or "" if none. None: not restorable,
    and the file is left as it is."""
    path = root / rel
    if path.is_file() and file_digest(path, "md5") == md5:  # as DVC hashes a file's bytes
        return ""
    src = Path(odb.oid_to_path(md5))
    data = src.read_bytes() if src.is_file() else None
    if data is None or hashlib.md5(data).hexdigest() != md5:
        data = from_git(root, rel, md5)
    if data is None:
        return None
    moved = ""
    if path.is_file():
        dest = root / failed_copy_path(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        moved = failed_copy_path(rel).as_posix()
    tmp = path.with_name(f".{path.name}.restore")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(data)
    remove(path)
    os.replace(tmp, path)
    return moved


def restore(root: Path, stage: str) -> None:
    """Put the stage's outputs back as dvc.lock records them; keep the failed run's small
    files under data/<source>/failed/; log what could not be restored."""
    from dvc.repo import Repo

    root = Path(root)
    outs = locked_outs(root, stage)
    if outs is None:
        return  # no earlier build: nothing to go back to
    repo = Repo(str(root))
    try:
        odb = repo.cache.local
        cache_types = repo.config.get("cache", {}).get("type") or ["copy"]
        link = "hardlink" in (cache_types if isinstance(cache_types, list) else [cache_types])
        kept, lost = [], []
        for out in outs:
            rel, md5 = str(out["path"]), out.get("md5")
            if not isinstance(md5, str) or not md5:
                continue
            if md5.endswith(".dir"):
                if not restore_dir(odb, root, rel, md5, link):
                    lost.append(rel)
                continue
            moved = restore_file(odb, root, rel, md5)
            if moved is None:
                lost.append(rel)
            elif moved:
                kept.append(moved)
    finally:
        repo.close()
    if kept:
        log.warning("%s: what the failed run wrote is kept in %s", stage, ", ".join(kept))
    if lost:
        log.warning(
            "%s: could not restore %s from DVC's cache or git; recover the last build with "
            "`git checkout -- dvc.lock params.yaml data/ && dvc checkout`",
            stage,
            ", ".join(lost),
        )
    else:
        log.info("%s failed: its outputs are back as dvc.lock records them", stage)


def restore_after_failure() -> None:
    """Restore the outputs of the DVC stage this process runs, if DVC runs it."""
    stage, root = os.environ.get("DVC_STAGE"), os.environ.get("DVC_ROOT")
    if not stage or not root:
        return  # run by hand: DVC deleted nothing
    try:
        restore(Path(root), stage)
    except Exception as exc:  # noqa: BLE001 - the stage's own error is what the user needs
        log.warning(
            "%s: restoring the last build failed (%s); recover it with "
            "`git checkout -- dvc.lock params.yaml data/ && dvc checkout`",
            stage,
            exc,
        )


def remember(paths: list[Path]) -> None:
    """Put a copy of each small output file in DVC's cache under its md5, as the run-cache
    would, so a later failure of this stage can put this build back (DVC runs it only)."""
    root = os.environ.get("DVC_ROOT")
    if not os.environ.get("DVC_STAGE") or not root:
        return
    from dvc.repo import Repo

    repo = Repo(root)
    try:
        odb = repo.cache.local
        for path in paths:
            path = Path(root) / path
            if not path.is_file():
                continue
            data = path.read_bytes()
            dest = Path(odb.oid_to_path(hashlib.md5(data).hexdigest()))
            if dest.is_file():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.chmod(0o444)  # as DVC keeps its objects
            os.replace(tmp, dest)
    finally:
        repo.close()


def forget_failed() -> None:
    """Remove what an earlier failed run of this DVC stage left under data/<source>/failed/."""
    stage, root = os.environ.get("DVC_STAGE"), os.environ.get("DVC_ROOT")
    if not stage or not root:
        return
    for out in locked_outs(Path(root), stage) or []:
        (Path(root) / failed_copy_path(str(out["path"]))).unlink(missing_ok=True)
