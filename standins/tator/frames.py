"""Frames as GetFrame serves them: rendered, encoded, tiled, cached, or redirected.

As the server's renderers do (../shared/notes/tator.md, section 4): PNG by default or JPEG
with `format=jpg`, at the media's streaming resolution rather than `media.width/height`,
several frames tiled into one image, and an error as a picture in the requested format (404
for a missing media, 400 for a frame past the end or too many frames). `frame_redirect`
answers GetFrame with a redirect to a presigned URL on another origin, the way Tator hands
out object-store links; that origin serves the frame without a token.
"""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING

import numpy as np
import simplejpeg
from PIL import Image

from standins.tator.model import BOX_TYPE, TatorData
from standins.tator.rest import ints

if TYPE_CHECKING:
    from standins.tator.server import TatorStandin


def render(mid: int, frame: int, size: tuple[int, int], boxes: list[dict]) -> np.ndarray:
    """Return one frame's RGB pixels: a gradient unique to (media, frame) plus its boxes."""
    w, h = size
    x = np.arange(w, dtype=np.int32)[None, :]
    y = np.arange(h, dtype=np.int32)[:, None]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (x * 255 // max(w - 1, 1) + frame * 7) % 256
    img[..., 1] = (y * 255 // max(h - 1, 1) + mid * 13) % 256
    img[..., 2] = ((x + y) // 4 + frame) % 256
    for box in boxes:
        x0, y0 = int(max(box["x"], 0) * w), int(max(box["y"], 0) * h)
        x1 = int(min(box["x"] + box["width"], 1) * w)
        y1 = int(min(box["y"] + box["height"], 1) * h)
        img[y0:y1, x0:x1] = (255, 255, 255)
    return img


def encode(img: np.ndarray, fmt: str, quality: int = 90) -> tuple[bytes, str]:
    """Encode pixels as the GetFrame renderer would: PNG by default, JPEG on request."""
    if fmt == "jpg":
        return simplejpeg.encode_jpeg(img, quality=quality, colorspace="RGB"), "image/jpeg"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), "image/png"


def error_image(fmt: str) -> tuple[bytes, str]:
    """Return the picture GetFrame sends with a 4xx (the real one is 1024x1024)."""
    return encode(np.full((64, 64, 3), 200, np.uint8), "jpg" if fmt in ("jpg", "jpeg") else "png")


def tile(images: list[np.ndarray]) -> np.ndarray:
    """Tile several frames into one image, row-major on a square grid (GetFrame's `tile`)."""
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w, _ = images[0].shape
    out = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    return out


class FrameRoutes:
    """GetFrame and the presigned frame URLs, for the stand-in's request handler."""

    def _frame(self, standin: TatorStandin, mid: int, q, head, fault) -> None:
        fmt = q.get("format", ["png"])[0]
        media = standin.media_by_id.get(mid)
        # Errors are a picture in the negotiated format, as the server's renderers send them.
        if media is None:
            return self.serve(*error_image(fmt), head, status=404)
        frames = sorted(ints(q.get("frames", ["0"])))
        if not frames or len(frames) > 32 or frames[-1] >= media["num_frames"]:
            return self.serve(*error_image(fmt), head, status=400)
        if standin.frame_redirect and len(frames) == 1:
            target = f"{standin.frame_redirect}/presigned/{mid}/{frames[0]}.{fmt}?sig=abc"
            return self.simple(302, b"moved\n", head, [("Location", target)])
        body, ctype = standin.frame_bytes(mid, frames, fmt)
        if fault and fault[0] == "corrupt":
            body = body[: len(body) * 6 // 10]
        return self.serve(body, ctype, head, fault)

    def _presigned(self, path: str, query: str, head: bool) -> None:
        standin: TatorStandin = self.server.standin
        try:
            _, _, mid, name = path.split("/")
            frame, fmt = name.split(".")
            body, ctype = standin.frame_bytes(int(mid), [int(frame)], fmt)
        except (ValueError, KeyError):
            return self.simple(404, b"not found", head)
        return self.serve(body, ctype, head)


class Frames:
    """The stand-in's frames: rendered from its rows once, then served from a cache."""

    data: TatorData
    _frames: dict[tuple, tuple[bytes, str]]
    _frames_lock: threading.Lock
    frames_served: int

    def warm(self) -> None:
        """Render every annotated frame as JPEG and PNG now, so serving costs no rendering."""
        for mid, frame in sorted({(loc["media"], loc["frame"]) for loc in self.data.localizations}):
            for fmt in ("jpg", "png"):
                self.frame_bytes(mid, [frame], fmt)
        self.frames_served = 0

    def frame_bytes(self, mid: int, frames: list[int], fmt: str) -> tuple[bytes, str]:
        """Return one frame (or a tile of several) encoded as PNG or JPEG; cached."""
        key = (mid, tuple(frames), fmt)
        with self._frames_lock:
            hit = self._frames.get(key)
        if hit is None:
            size = self.data.frame_size[mid]
            images = []
            for f in frames:
                boxes = [
                    loc
                    for loc in self.data.localizations
                    if loc["media"] == mid and loc["frame"] == f and loc["type"] == BOX_TYPE
                ]
                images.append(render(mid, f, size, boxes))
            img = images[0] if len(images) == 1 else tile(images)
            hit = encode(img, "jpg" if fmt in ("jpg", "jpeg") else "png")
            with self._frames_lock:
                self._frames[key] = hit
        with self._frames_lock:
            self.frames_served += 1
        return hit
