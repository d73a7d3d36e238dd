"""Deterministic npz files: fixed zip metadata, so equal arrays give equal bytes."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from stages.core.files import atomic_path

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool) -> None:
    """Write arrays (no pickles) as an npz with fixed metadata, atomically."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=method) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            zf.writestr(info, buf.getvalue())
