"""Arrays as lossless image files: PNG for 8/16-bit, TIFF for the rest (same bytes everywhere)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KINDS = {(np.dtype(np.uint8), 2), (np.dtype(np.uint8), 3), (np.dtype(np.uint16), 2)}


def encode_array(arr: np.ndarray) -> tuple[bytes, str]:
    """Return an image file holding a 2-D array (or H,W,3 uint8) exactly, and its extension.

    uint8 and uint16 are PNG; wider labels (uint32, whose values fit int32) and float32 raw
    frames are TIFF, which Pillow writes without dates, so equal arrays give equal bytes.
    """
    arr = np.ascontiguousarray(arr)
    buf = io.BytesIO()
    if (arr.dtype, arr.ndim) in PNG_KINDS and (arr.ndim == 2 or arr.shape[2] == 3):
        Image.fromarray(arr).save(buf, format="PNG", compress_level=6)
        return buf.getvalue(), ".png"
    if arr.ndim != 2:
        raise ValueError(f"cannot store a {arr.dtype} array of shape {arr.shape} as an image")
    if arr.dtype.kind in "ui":
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max):
            raise ValueError("labels beyond int32 cannot be stored")
        image = Image.fromarray(arr.astype(np.int32), mode="I")
    else:
        image = Image.fromarray(arr.astype(np.float32), mode="F")
    image.save(buf, format="TIFF")
    return buf.getvalue(), ".tif"


def refuse_lossy(data: bytes) -> None:
    """Raise ValueError for images Pillow would read with lost bits: 16-bit RGB(A) PNGs, of
    which it keeps the high bytes only (labels below 256 would turn into background)."""
    # IHDR's bit depth and colour type sit at fixed offsets after the signature.
    if data[:8] == PNG_SIGNATURE and len(data) > 25 and data[24] == 16 and data[25] in (2, 6):
        raise ValueError("16-bit RGB PNGs are not read exactly; save them as 8-bit RGB")


def decode_array(data: bytes) -> np.ndarray:
    """Return an image file's pixels as an array (16-bit and 32-bit kept as such)."""
    refuse_lossy(data)
    with Image.open(io.BytesIO(data)) as im:
        if im.mode == "I;16" or im.mode.startswith("I;16"):
            return np.asarray(im, dtype=np.uint16)
        if im.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "1"):
            return np.asarray(im.convert("RGB"))
        return np.asarray(im)
