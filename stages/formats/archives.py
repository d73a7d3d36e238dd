"""Archives from remote sources: checked member names and sizes, corrupt data as clear errors."""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from stages.core.errors import CorruptMetadata, MetadataError

# What reading a damaged zip member raises: bad CRC, bad deflate data, a cut stream.
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError)


def unsafe_member(name: str) -> bool:
    """Tell whether an archive member name could escape the directory it is extracted to."""
    norm = name.replace("\\", "/")
    return (
        not norm
        or norm.startswith("/")
        or (len(norm) > 1 and norm[1] == ":")
        or "\x00" in norm
        or ".." in norm.split("/")
    )


def single_member(path: Path, suffix: str, max_bytes: int) -> tuple[str | None, int]:
    """Check a zip holding exactly one `suffix` member (or a bare file); return it and its size.

    Returns (None, size) for a file that is not a zip, so callers read it directly.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        if size > max_bytes:
            raise MetadataError(f"{path.name} exceeds the configured limit of {max_bytes} bytes")
        return None, size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CorruptMetadata(f"{path.name}: malformed zip: {exc}") from None
    for info in infos:
        if unsafe_member(info.filename):
            raise MetadataError(f"{path.name}: unsafe member name {info.filename!r} in zip")
    members = [i for i in infos if i.filename.lower().endswith(suffix) and not i.is_dir()]
    if len(members) != 1:
        found = ", ".join(i.filename for i in infos) or "nothing"
        raise MetadataError(
            f"{path.name}: expected exactly one {suffix} member in the zip, found {found}"
        )
    if members[0].file_size > max_bytes:
        raise MetadataError(
            f"{members[0].filename} is {members[0].file_size} bytes, over the configured "
            f"limit of {max_bytes} bytes"
        )
    return members[0].filename, members[0].file_size


@dataclass(frozen=True)
class MemberOpener:
    """Open a checked member (or bare file) afresh on each call; picklable for helpers."""

    path: Path
    member: str | None

    def __call__(self) -> BinaryIO:
        return open_member(self.path, self.member)


def open_member(path: Path, member: str | None) -> BinaryIO:
    """Open a checked zip member (or the file itself, for None) as a binary stream."""
    if member is None:
        return open(path, "rb")
    try:
        # Closing the archive now is safe: the member stream keeps the file open until it
        # is closed itself, and then nothing is left open.
        with zipfile.ZipFile(path) as zf:
            return zf.open(member)
    except ZIP_READ_ERRORS as exc:
        raise CorruptMetadata(f"{Path(path).name}: corrupt zip: {exc}") from None
