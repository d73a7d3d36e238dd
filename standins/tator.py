"""A Tator stand-in: the REST API the `tator` client reads, on loopback.

It serves the OpenAPI document at /schema (no auth, with `components`, so tator 1.8 builds
real model classes), the /rest routes of ../shared/notes/tator.md with the server's ordering
and filters, `Authorization: Token` checks, and GetFrame as PNG by default or JPEG with
`format=jpg`, at a "streaming" resolution that differs from `media.width/height`. A storm
switch answers 429 (with Retry-After) or 500 for a while, `delay` adds a round trip to every
response, and `frame_redirect` answers GetFrame with a redirect to a presigned URL on another
origin, the way Tator hands out object-store links.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import io
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import simplejpeg
from PIL import Image

from standins.http import Handler, Standin, serve_until_signalled

CLASSES = (
    "Sebastes miniatus",
    "Sebastolobus",
    "Chionoecetes tanneri",
    "Merluccius productus",
)
ANNOTATED = ("person", "vehicle", "animal")  # what --annotate's annotators see in imports
BOX_TYPE, DOT_TYPE, LINE_TYPE, POLY_TYPE = 7, 8, 9, 10
TRACK_TYPE = 20
EVENT_TYPE = 21  # states over frames (association "Frame"), without localizations
MEDIA_TYPE = 3
IMPORT_TYPE = 4  # a video type declaring what an import sends: sha256, Camera, Timestamp
PROJECT = 1
LIST_PARAMS = ("media_id", "type", "version", "after", "start", "stop", "attribute")


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class TatorData:
    """One project's rows, as the server's database would hold them."""

    media: list[dict] = field(default_factory=list)
    localizations: list[dict] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)
    sections: list[dict] = field(default_factory=list)
    localization_types: list[dict] = field(default_factory=list)
    state_types: list[dict] = field(default_factory=list)
    media_types: list[dict] = field(default_factory=list)
    # Streaming size of each media's frames: (width, height), unlike media.width/height.
    frame_size: dict[int, tuple[int, int]] = field(default_factory=dict)


def _media_types() -> list[dict]:
    def attrs(*pairs):
        return [{"name": n, "dtype": d, "order": i} for i, (n, d) in enumerate(pairs)]

    return [
        {"id": MEDIA_TYPE, "project": PROJECT, "name": "Video", "dtype": "video",
         "attribute_types": attrs(("Camera", "string"), ("Flag", "bool"), ("Depth", "float"))},
        {"id": IMPORT_TYPE, "project": PROJECT, "name": "Imported video", "dtype": "video",
         "attribute_types": attrs(("sha256", "string"), ("Camera", "string"),
                                  ("Timestamp", "datetime"), ("ShortSide", "int"))},
    ]  # fmt: skip


def _types(media=(MEDIA_TYPE,), events: bool = False) -> tuple[list[dict], list[dict]]:
    media = list(media)
    attr = [{"name": "ScientificName", "dtype": "string", "order": 0}]
    locs = [
        {"id": t, "project": PROJECT, "name": n, "dtype": d, "media": media,
         "visible": True, "attribute_types": attr}
        for t, n, d in (
            (BOX_TYPE, "Boxes", "box"),
            (DOT_TYPE, "Points", "dot"),
            (LINE_TYPE, "Lines", "line"),
            (POLY_TYPE, "Outlines", "poly"),
        )
    ]  # fmt: skip
    states = [
        {"id": TRACK_TYPE, "project": PROJECT, "name": "Tracks", "association": "Localization",
         "interpolation": "none", "media": media, "attribute_types": attr},
    ]  # fmt: skip
    if events:
        states.append(
            {"id": EVENT_TYPE, "project": PROJECT, "name": "Events", "association": "Frame",
             "interpolation": "none", "media": media, "attribute_types": attr}
        )  # fmt: skip
    return locs, states


class _Builder:
    """Add rows with increasing ids, the way the server's sequences would."""

    def __init__(self, data: TatorData):
        self.data = data
        self.next_loc = 1
        self.next_state = 100

    def media(self, mid, name, width, height, frames, stream, attrs=None, section=None):
        self.data.media.append(
            {
                "id": mid,
                "project": PROJECT,
                "type": MEDIA_TYPE,
                "name": name,
                "width": width,
                "height": height,
                "num_frames": frames,
                "fps": 30.0,
                "attributes": dict(attrs or {}),
                "primary_section": section,
                "media_files": {
                    "streaming": [
                        {
                            "path": f"/media/{mid}/{stream[1]}.mp4",
                            "resolution": [stream[1], stream[0]],  # [height, width]
                            "codec": "h264",
                            "mime": 'video/mp4; codecs="avc1.64001e"',
                        }
                    ]
                },
                "archive_state": "live",
            }
        )
        self.data.frame_size[mid] = stream

    def loc(self, media, frame, dtype=BOX_TYPE, cls=None, version=1, **geom) -> int:
        lid = self.next_loc
        self.next_loc += 1
        row = {
            "id": lid,
            "project": PROJECT,
            "media": media,
            "frame": frame,
            "type": dtype,
            "version": version,
            "x": None,
            "y": None,
            "width": None,
            "height": None,
            "u": None,
            "v": None,
            "points": None,
            "attributes": {} if cls is None else {"ScientificName": cls},
            "elemental_id": f"00000000-0000-0000-0000-{lid:012d}",
            "mark": 0,
            "variant_deleted": False,
            "parent": None,
        }
        row.update(geom)
        self.data.localizations.append(row)
        return lid

    def track(self, media, loc_ids, frames, cls=None) -> int:
        media = media if isinstance(media, list) else [media]
        sid = self.next_state
        self.next_state += 1
        self.data.states.append(
            {
                "id": sid,
                "type": TRACK_TYPE,
                "media": media,
                "localizations": list(loc_ids),
                "segments": [[min(frames), max(frames)]],
                "frame": None,
                "version": 1,
                "attributes": {} if cls is None else {"ScientificName": cls},
                "elemental_id": f"00000000-0000-0000-0001-{sid:012d}",
                "mark": 0,
                "variant_deleted": False,
                "parent": None,
            }
        )
        return sid


def empty() -> TatorData:
    """Return a project with its types and nothing else (what an import starts from)."""
    data = TatorData(media_types=_media_types())
    data.localization_types, data.state_types = _types((MEDIA_TYPE, IMPORT_TYPE), events=True)
    return data


def generate(
    n_media: int = 4,
    frames_per_media: int = 6,
    seed: int = 0,
    stream_height: int = 270,
    special: bool = True,
) -> TatorData:
    """Return a deterministic project: the special cases first, then seeded random boxes.

    Media 0 holds the cases tests name (border boxes, a box without a class, a track whose
    boxes carry no class of their own, non-box shapes, a version-2 box, a frame holding only a
    dot); the last media (when n_media > 2) has no localizations at all. Without `special`,
    every media holds `frames_per_media` annotated frames of random boxes. Ids are not in name
    order, so a client that pages media by id without sorting by id skips or repeats some.
    """
    data = TatorData(media_types=_media_types()[:1])
    data.localization_types, data.state_types = _types()
    data.sections = [
        {"id": 501, "project": PROJECT, "name": "Dive A", "path": "Dive_A", "dtype": "folder"},
        {"id": 502, "project": PROJECT, "name": "Dive B", "path": "Dive_B", "dtype": "folder"},
    ]  # fmt: skip
    b = _Builder(data)
    rng = np.random.default_rng(seed)
    sw = stream_height * 16 // 9 // 2 * 2
    for i in range(n_media):
        # Ids fall as names rise: name order and id order disagree.
        mid = 10 + (n_media - i) * 3
        name = (
            f"2024-05-0{i % 9 + 1}T10:0{i % 6}:00 dive_{i:03d}.mp4"
            if i % 2
            else f"dive_{i:03d}.mp4"
        )
        frames = max(frames_per_media * 5, 30)
        b.media(mid, name, 1920, 1080, frames, (sw, stream_height),
                attrs={"Camera": f"cam{i % 2}", "Flag": i % 2 == 1, "Depth": float(100 + i)},
                section=501 if i % 2 == 0 else 502)  # fmt: skip
        if special and n_media > 2 and i == n_media - 1:
            continue  # media without boxes
        if special and i == 0:
            _special(b, mid)
            continue
        for k in range(frames_per_media):
            frame = k * 5 + 1
            for _ in range(int(rng.integers(1, 4))):
                w, h = rng.uniform(0.05, 0.3, size=2)
                x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
                cls = CLASSES[int(rng.integers(len(CLASSES)))]
                b.loc(mid, frame, cls=cls, x=float(x), y=float(y), width=float(w), height=float(h))
    if special and n_media > 2:
        # A track over two media: listed once per media batch, kept once.
        first, second = 10 + n_media * 3, 10 + (n_media - 1) * 3
        ids = [
            b.loc(first, 20, x=0.2, y=0.2, width=0.3, height=0.3),
            b.loc(second, 21, x=0.25, y=0.2, width=0.3, height=0.3),
        ]
        b.track([first, second], ids, [20, 21], cls=CLASSES[2])
        b.track(first, [], [0, 29])  # a state for something else: no boxes
    data.media.sort(key=lambda m: m["id"])
    return data


def _special(b: _Builder, mid: int) -> None:
    box = {"x": 0.1, "y": 0.2, "width": 0.25, "height": 0.5}
    b.loc(mid, 0, cls=CLASSES[0], **box)
    b.loc(mid, 0, cls=CLASSES[1], x=0.0, y=0.0, width=0.2, height=0.1)  # touches top-left
    b.loc(mid, 0, cls=CLASSES[2], x=0.9, y=0.8, width=0.2, height=0.3)  # crosses right/bottom
    b.loc(mid, 0, DOT_TYPE, cls=CLASSES[0], x=0.5, y=0.5)
    b.loc(mid, 3, cls=None, x=0.3, y=0.3, width=0.1, height=0.1)  # no class attribute
    b.loc(mid, 3, cls=CLASSES[3], x=-0.05, y=0.4, width=0.1, height=0.1)  # crosses left
    b.loc(mid, 3, cls=CLASSES[0], x=0.5, y=0.5, width=0.0005, height=0.2)  # degenerate
    b.loc(mid, 3, LINE_TYPE, cls=CLASSES[1], x=0.1, y=0.1, u=0.2, v=0.1)
    b.loc(mid, 4, DOT_TYPE, cls=CLASSES[1], x=0.2, y=0.2)  # a frame with only a dot
    b.loc(mid, 5, POLY_TYPE, cls=CLASSES[2], points=[[0.1, 0.1], [0.2, 0.1], [0.2, 0.2]])
    b.loc(mid, 6, cls=CLASSES[2], version=2, x=0.4, y=0.4, width=0.2, height=0.2)
    # A track: its boxes carry no class; the state does.
    frames = [8, 9, 10]
    ids = [
        b.loc(mid, f, x=0.1 + 0.05 * k, y=0.6, width=0.2, height=0.2) for k, f in enumerate(frames)
    ]
    b.track(mid, ids, frames, cls=CLASSES[3])
    # A track holding a box that also has its own class: the box's own class wins.
    own = b.loc(mid, 12, cls=CLASSES[1], x=0.6, y=0.1, width=0.1, height=0.1)
    b.track(mid, [own], [12], cls=CLASSES[0])


# ---------------------------------------------------------------------------------------------
# Frames


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


# ---------------------------------------------------------------------------------------------
# OpenAPI document


def _params(*names: str) -> list[dict]:
    kinds = {"media_id": "array", "version": "array", "frames": "array", "attribute": "array"}
    return [
        {"name": n, "in": "query", "required": False, "schema": {"type": kinds.get(n, "string")}}
        for n in names
    ]


def _op(op_id: str, path_params: tuple[str, ...], query: tuple[str, ...], response) -> dict:
    params = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "integer"}}
        for p in path_params
    ]
    ok = {"description": "Successful retrieval."}
    if response is not None:
        ok["content"] = {"application/json": {"schema": response}}
    return {
        "get": {
            "operationId": op_id,
            "parameters": params + _params(*query),
            "responses": {"200": ok, "400": {"description": "Bad request."}},
        }
    }


def _post(op_id: str, query: tuple[str, ...], body, response, status: str = "201") -> dict:
    """Return a POST operation on a /{project} path: its body, its documented answer."""
    params = [{"name": "project", "in": "path", "required": True, "schema": {"type": "integer"}}]
    return {
        "post": {
            "operationId": op_id,
            "parameters": params + _params(*query),
            "requestBody": {"content": {"application/json": {"schema": body}}},
            "responses": {
                status: {
                    "description": "Successful creation.",
                    "content": {"application/json": {"schema": response}},
                },
                "400": {"description": "Bad request."},
            },
        }
    }


def _one_or_many(name: str) -> dict:
    """A body taking one spec or a list of them (the client passes it as `body`)."""
    return {"oneOf": [_ref(name), _list(name)]}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(name: str) -> dict:
    return {"type": "array", "items": _ref(name)}


def _props(*names: str) -> dict:
    return {"type": "object", "properties": {n: {} for n in names}}


MEDIA_QUERY = (
    "media_id", "type", "name", "section", "dtype", "after", "after_name", "elemental_id",
    "attribute", "attribute_contains", "start", "stop", "sort_by", "fields", "presigned",
)  # fmt: skip
LOC_QUERY = (
    "media_id", "related_id", "section", "type", "version", "after", "elemental_id", "merge",
    "show_deleted", "show_all_marks", "frame", "attribute", "attribute_contains", "start",
    "stop", "sort_by", "encoded_search", "fields",
)  # fmt: skip


def schema() -> dict:
    """Return the OpenAPI document the real client builds its methods and models from."""
    loc_q = LOC_QUERY
    state_q = tuple(q for q in LOC_QUERY if q != "frame")
    types_q = ("media_id", "type", "elemental_id")
    paths = {
        "/rest/Project/{id}": _op("GetProject", ("id",), (), _ref("Project")),
        "/rest/Medias/{project}": _op("GetMediaList", ("project",), MEDIA_QUERY, _list("Media")),
        "/rest/MediaCount/{project}": _op(
            "GetMediaCount", ("project",), MEDIA_QUERY[:-4], {"type": "integer"}
        ),
        "/rest/Media/{id}": _op("GetMedia", ("id",), ("presigned", "no_cache"), _ref("Media")),
        "/rest/Localizations/{project}": _op(
            "GetLocalizationList", ("project",), loc_q, _list("Localization")
        ),
        "/rest/LocalizationCount/{project}": _op(
            "GetLocalizationCount", ("project",), loc_q[:-1], {"type": "integer"}
        ),
        "/rest/States/{project}": _op("GetStateList", ("project",), state_q, _list("State")),
        "/rest/StateCount/{project}": _op(
            "GetStateCount", ("project",), state_q[:-1], {"type": "integer"}
        ),
        "/rest/LocalizationTypes/{project}": _op(
            "GetLocalizationTypeList", ("project",), types_q, _list("LocalizationType")
        ),
        "/rest/StateTypes/{project}": _op(
            "GetStateTypeList", ("project",), types_q, _list("StateType")
        ),
        "/rest/Sections/{project}": _op(
            "GetSectionList", ("project",), ("name", "elemental_id"), _list("Section")
        ),
        "/rest/GetFrame/{id}": _op(
            "GetFrame",
            ("id",),
            ("frames", "tile", "roi", "force_scale", "animate", "quality"),
            None,
        ),
        # The upload path of tator.util.upload_media (../shared/notes/tator.md, section 8).
        "/rest/MediaType/{id}": _op("GetMediaType", ("id",), (), _ref("MediaType")),
        "/rest/UploadInfo/{project}": _op(
            "GetUploadInfo",
            ("project",),
            ("expiration", "num_parts", "media_id", "file_id", "filename", "bucket_id"),
            _ref("UploadInfo"),
        ),
        "/rest/UploadCompletion/{project}": _post(
            "CompleteUpload", (), _ref("UploadCompletionSpec"), _ref("MessageResponse")
        ),
        "/rest/DownloadInfo/{project}": _post(
            "GetDownloadInfo", ("expiration",), _ref("DownloadInfoSpec"), _list("DownloadInfo")
        ),
        "/rest/Transcodes/{project}": _post(
            "Transcode", (), _ref("TranscodeSpec"), _ref("TranscodeResponse")
        ),
    }
    # Creation beside the list routes: one path item, two methods.
    creates = {
        "/rest/Medias/{project}": _post(
            "CreateMediaList", (), _one_or_many("MediaSpec"), _ref("CreateListResponse")
        ),
        "/rest/Sections/{project}": _post(
            "CreateSection", (), _ref("SectionSpec"), _ref("CreateResponse")
        ),
        "/rest/Localizations/{project}": _post(
            "CreateLocalizationList",
            (),
            _one_or_many("LocalizationSpec"),
            _ref("CreateListResponse"),
        ),  # fmt: skip
        "/rest/States/{project}": _post(
            "CreateStateList", (), _one_or_many("StateSpec"), _ref("CreateListResponse")
        ),
    }
    for path, item in creates.items():
        paths[path] = {**paths[path], **item}
    fields = {
        "Project": "id name organization",
        "Media": "id project type name width height num_frames fps attributes primary_section "
        "media_files archive_state",
        "Localization": "id project media frame type version x y width height u v points "
        "attributes elemental_id mark variant_deleted parent",
        "State": "id type media localizations segments frame version attributes elemental_id "
        "mark variant_deleted parent",
        "LocalizationType": "id project name dtype media attribute_types",
        "StateType": "id project name association interpolation media attribute_types",
        "Section": "id project name path dtype",
        "MediaType": "id project name dtype attribute_types",
        "UploadInfo": "urls key upload_id",
        "UploadCompletionSpec": "key upload_id parts bucket_id",
        "MessageResponse": "message",
        "DownloadInfoSpec": "keys",
        "DownloadInfo": "key url",
        "TranscodeSpec": "type uid gid url name section section_id md5 attributes media_id size "
        "email_spec",
        "TranscodeResponse": "message id object",
        "MediaSpec": "type name md5 section section_id attributes url num_frames fps width "
        "height gid uid",
        "SectionSpec": "name path",
        "LocalizationSpec": "type media_id frame version x y width height u v points attributes",
        "StateSpec": "type media_ids localization_ids frame version attributes",
        "CreateResponse": "message id",
        "CreateListResponse": "message id",
    }
    components = {name: _props(*names.split()) for name, names in fields.items()}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Tator REST API (stand-in)", "version": "1.0"},
        "paths": paths,
        "components": {"schemas": components},
    }


# ---------------------------------------------------------------------------------------------
# Server


class BadRequest(Exception):
    """A query the real server answers with 400."""


class NotFound(Exception):
    """A lookup the real server answers with 404."""


def _blob(data: bytes) -> dict:
    """Return what the stand-in keeps of a stored file: its digest and size."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _ints(values: list[str]) -> set[int]:
    try:
        return {int(v) for s in values for v in s.split(",") if v != ""}
    except ValueError:
        raise BadRequest("expected integers") from None


def _attribute_filter(rows: list[dict], specs: list[str], declared: set[str]) -> list[dict]:
    """Keep rows whose attributes equal every `Name::value`, ignoring undeclared names."""
    # As the real server does: the trap a client must check for itself.
    for spec in (s for v in specs for s in v.split(",")):
        name, sep, value = spec.partition("::")
        if not sep:
            raise BadRequest(f"attribute filter {spec!r} is not Name::value")
        if name not in declared:
            continue
        rows = [r for r in rows if _matches((r.get("attributes") or {}).get(name), value)]
    return rows


def _matches(value, text: str) -> bool:
    """Compare an attribute with a filter's text by the attribute's type, as the server does."""
    if isinstance(value, bool):
        return text.lower() == str(value).lower()
    if isinstance(value, int | float):
        try:
            return float(text) == value
        except ValueError:
            raise BadRequest(f"{text!r} is not a number") from None
    return str(value) == text


def _slice(rows: list[dict], q: dict) -> list[dict]:
    """Apply `after` (id greater than) and then `start`/`stop` (a slice of the ordered rows)."""
    if "after" in q:
        after = int(q["after"][0])
        rows = [r for r in rows if r["id"] > after]
    start = int(q.get("start", ["0"])[0])
    stop = q.get("stop")
    return rows[start : int(stop[0])] if stop else rows[start:]


class _TatorHandler(Handler):
    server_version = "tator-standin/1.0"

    def json(self, status: int, obj, extra=()) -> None:
        """Send JSON (gzipped when asked), with this request's body fault if any."""
        # Faults: truncate, corrupt (cut, with a matching length), stall.
        body = json.dumps(obj).encode()
        kind, arg = (getattr(self, "fault", None) if 200 <= status < 300 else None) or ("ok", None)
        if kind == "corrupt":
            body = body[: len(body) * 6 // 10]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if "gzip" in self.headers.get("Accept-Encoding", ""):  # as the server's list views
            body = gzip.compress(body, mtime=0)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        for key, value in extra:
            self.send_header(key, value)
        self.end_headers()
        if kind == "truncate":
            self.close_connection = True
            self.wfile.write(body[: len(body) // 2])
        elif kind == "stall":
            self.close_connection = True
            self.wfile.write(body[:16])
            self.wfile.flush()
            self.server.standin._stopping.wait(arg)
        else:
            self.wfile.write(body)

    def route(self, path: str, query: str, head: bool) -> None:
        standin: TatorStandin = self.server.standin
        self.fault = None
        if standin.delay:
            time.sleep(standin.delay)
        if path.rstrip("/") == "/schema":
            return self.json(200, standin.schema)
        if path.startswith("/presigned/"):
            return self._presigned(path, query, head)
        if path.startswith("/upload/") and self.command == "PUT":
            return self._put_part(standin, path, query)
        if not path.startswith("/rest/"):
            return self.simple(404, b"not found", head)
        try:
            body = self.read_body(limit=64 << 20) if self.command == "POST" else b""
            self.body = json.loads(body) if body else None
        except ValueError:
            return self.json(400, {"message": "the request body is not JSON"})
        if self.headers.get("Authorization") != f"Token {standin.token}":
            if self.headers.get("Authorization"):
                detail = "Invalid token."
            else:
                detail = "Authentication credentials were not provided."
            if standin.auth_status == 400:  # the server's own exception handler
                return self.json(400, {"message": detail, "details": "None"})
            return self.json(standin.auth_status, {"detail": detail})
        storm = standin.storming(path.lstrip("/"))
        if storm is not None:
            kind, retry_after = storm
            if kind == 429:  # a proxy or DRF's own handler in front of the views
                return self.json(
                    429,
                    {"detail": "Request was throttled."},
                    [("Retry-After", f"{retry_after:g}")],
                )
            if kind == 400:  # Tator's views turn DRF's Throttled into a 400
                message = f"Request was throttled. Expected available in {retry_after:g} seconds."
                return self.json(400, {"message": message, "details": "None"})
            return self.json(kind, {"message": "Server error."})
        fault = self.fault = standin.faults.take(path.lstrip("/"))
        if self.pre_fault(fault, head):
            return None
        q = parse_qs(query, keep_blank_values=True)
        parts = path.split("/")[2:]
        try:
            return self._rest(standin, parts, q, head, fault)
        except BadRequest as exc:
            return self.json(400, {"message": str(exc)})
        except NotFound as exc:
            return self.json(404, {"message": str(exc)})
        except (ValueError, IndexError):
            return self.json(400, {"message": "bad request"})

    def _rest(self, standin: TatorStandin, parts, q, head, fault) -> None:
        data = standin.data
        kind, ident = parts[0], int(parts[1]) if len(parts) > 1 and parts[1] else None
        if kind == "Project":
            if ident != PROJECT:
                return self.json(404, {"message": "Not found."})
            return self.json(200, {"id": PROJECT, "name": "Stand-in Project", "organization": 1})
        if kind in ("Medias", "MediaCount", "Localizations", "LocalizationCount", "States",
                    "StateCount", "LocalizationTypes", "StateTypes", "Sections", "UploadInfo",
                    "UploadCompletion", "DownloadInfo", "Transcodes"):  # fmt: skip
            if ident != PROJECT:
                return self.json(403, {"detail": "You do not have permission to do this."})
        if self.command == "POST":
            return self._create(standin, kind, q)
        if kind == "MediaType":
            found = [t for t in data.media_types if t["id"] == ident]
            return self.json(200, found[0]) if found else self.json(404, {"message": "Not found."})
        if kind == "UploadInfo":
            return self.json(200, standin.upload_info(int(q.get("num_parts", ["1"])[0])))
        if kind == "Medias":
            return self.json(200, _slice(standin.media_rows(q), q))
        if kind == "MediaCount":
            return self.json(200, len(standin.media_rows(q)))
        if kind == "Media":
            media = standin.media_by_id.get(ident)
            return self.json(200, media) if media else self.json(404, {"message": "Not found."})
        if kind == "Localizations":
            return self.json(200, _slice(standin.loc_rows(q, data.localizations), q))
        if kind == "LocalizationCount":
            return self.json(200, len(standin.loc_rows(q, data.localizations)))
        if kind == "States":
            return self.json(200, _slice(standin.loc_rows(q, data.states), q))
        if kind == "StateCount":
            return self.json(200, len(standin.loc_rows(q, data.states)))
        if kind == "LocalizationTypes":
            return self.json(200, data.localization_types)
        if kind == "StateTypes":
            return self.json(200, data.state_types)
        if kind == "Sections":
            names = [n.lower() for n in q.get("name", [])]
            rows = [s for s in data.sections if not names or s["name"].lower() in names]
            return self.json(200, rows)
        if kind == "GetFrame":
            return self._frame(standin, ident, q, head, fault)
        return self.json(404, {"message": "Not found."})

    def _create(self, standin: TatorStandin, kind: str, q) -> None:
        """Answer a POST: the upload path's steps, or creating media, sections, annotations."""
        body = self.body
        if kind == "UploadCompletion":
            standin.complete_upload(body)
            return self.json(201, {"message": "Upload completed."})
        if kind == "DownloadInfo":
            keys = body.get("keys") if isinstance(body, dict) else None
            if not isinstance(keys, list):
                raise BadRequest("keys must be a list")
            return self.json(201, [{"key": k, "url": f"{standin.url}/download/{k}"} for k in keys])
        if kind == "Transcodes":
            return self.json(201, standin.transcode(body))
        specs = body if isinstance(body, list) else [body]
        if not all(isinstance(spec, dict) for spec in specs):
            raise BadRequest("expected an object or a list of objects")
        if kind == "Sections":
            sid = standin.create_section(specs[0])
            return self.json(201, {"message": f"Section {sid} created!", "id": sid})
        if kind not in ("Medias", "Localizations", "States"):
            return self.json(405, {"message": "Method not allowed."})
        ids = standin.create(kind, specs)  # all or nothing, as the server's transaction
        return self.json(201, {"message": f"Successfully created {len(ids)} objects!", "id": ids})

    def _put_part(self, standin: TatorStandin, path: str, query: str) -> None:
        """Take one part of an upload at a presigned URL (no token: the URL is the grant)."""
        fault = standin.faults.take(path.lstrip("/"))
        kind = fault[0] if fault else "ok"
        if kind == "reset":  # the connection dies with part of the bytes sent
            self.read_body(upto=int(self.headers.get("Content-Length") or 0) // 2)
            return self.reset()
        data = self.read_body(limit=64 << 20)
        if self.pre_fault(fault, False):
            return None
        key = path[len("/upload/") :]
        part = int(parse_qs(query).get("partNumber", ["1"])[0])
        etag = standin.put_part(key, part, data)
        if etag is None:
            return self.simple(403, b"no such upload\n", False)
        return self.simple(200, b"", False, [("ETag", f'"{etag}"')])

    def _frame(self, standin: TatorStandin, mid: int, q, head, fault) -> None:
        fmt = q.get("format", ["png"])[0]
        media = standin.media_by_id.get(mid)
        # Errors are a picture in the negotiated format, as the server's renderers send them.
        if media is None:
            return self.serve(*error_image(fmt), head, status=404)
        frames = sorted(_ints(q.get("frames", ["0"])))
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


class TatorStandin(Standin):
    """Local Tator server for one project (id 1) holding `data`, requiring `token`."""

    handler = _TatorHandler
    name = "tator-standin"

    def __init__(
        self,
        data: TatorData | None = None,
        *,
        token: str = "standin-token",
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 0.0,
        auth_status: int = 403,
        frame_redirect: str | None = None,
        tls=None,
    ):
        super().__init__(host=host, port=port, tls=tls)
        self.data = data or generate()
        self.token = token
        self.delay = delay
        self.auth_status = auth_status
        self.frame_redirect = frame_redirect
        self.schema = schema()
        self.media_by_id = {m["id"]: m for m in self.data.media}
        self._storm: tuple[float, int, float, str] | None = None
        self.storm_hits = 0
        self._frames: dict[tuple, tuple[bytes, str]] = {}
        self._frames_lock = threading.Lock()
        self.frames_served = 0
        # Uploads: presigned keys, their parts, and the stored files' digests by media id.
        self.write_lock = threading.Lock()
        self.uploads: dict[str, dict] = {}
        self.blobs: dict[int, dict] = {}
        self.transcodes = 0  # Transcode requests received
        self.hold_after: int | None = None  # hold Transcode requests after this many
        self.release = threading.Event()
        # make demo's switches: media ids from content (sequences differ with the order of
        # parallel uploads; the demo's outputs must hash the same everywhere), and labels put
        # on each new media as an annotator would.
        self.stable_ids = False
        self.annotate = False

    # -- switches

    def storm(
        self, status: int = 429, seconds: float = 1.0, retry_after: float = 1.0, paths: str = "*"
    ) -> None:
        """Answer /rest requests matching `paths` with 429, a throttle 400 or a 5xx a while."""
        self._storm = (time.monotonic() + seconds, status, retry_after, paths)

    def storming(self, path: str) -> tuple[int, float] | None:
        """Return (status, retry_after) while a storm lasts over this path; count the hit."""
        storm = self._storm
        if storm is None or time.monotonic() >= storm[0] or not fnmatch.fnmatch(path, storm[3]):
            return None
        with self._lock:
            self.storm_hits += 1
        return storm[1], storm[2]

    # -- the upload path and creation

    def _next_id(self, rows: list[dict], floor: int) -> int:
        return max([floor, *(r["id"] for r in rows)]) + 1

    def declared(self, type_id, kinds: list[dict]) -> set[str]:
        """Return the attribute names a type declares (all types' when type_id is None)."""
        return {
            a["name"]
            for t in kinds
            if type_id is None or t["id"] == type_id
            for a in t.get("attribute_types") or []
        }

    def _attributes(self, spec: dict, type_id: int, kinds: list[dict]) -> dict:
        """Keep the declared attributes only (the rest are dropped silently, as the server
        does); render datetimes as ISO 8601."""
        attrs = spec.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise BadRequest("attributes must be an object")
        dtypes = {
            a["name"]: a["dtype"]
            for t in kinds
            if t["id"] == type_id
            for a in t.get("attribute_types") or []
        }
        out = {}
        for name, value in attrs.items():
            if name not in dtypes:
                continue
            if dtypes[name] == "datetime" and isinstance(value, str):
                try:
                    value = datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()
                except ValueError:
                    raise BadRequest(f"{name}: {value!r} is not a datetime") from None
            out[name] = value
        return out

    def upload_info(self, num_parts: int) -> dict:
        """Return presigned part URLs on this server for a new upload."""
        if not 1 <= num_parts <= 10000:
            raise BadRequest("num_parts must be 1..10000")
        with self.write_lock:
            number = len(self.uploads) + 1
            key = f"{PROJECT}/uploads/{number:06d}"
            self.uploads[key] = {
                "id": f"upload-{number}", "num_parts": num_parts, "parts": {}, "blob": None
            }  # fmt: skip
        urls = [
            f"{self.url}/upload/{key}?partNumber={i}&X-Amz-Signature=standin"
            for i in range(1, num_parts + 1)
        ]
        return {"urls": urls, "key": key, "upload_id": f"upload-{number}"}

    def put_part(self, key: str, part: int, data: bytes) -> str | None:
        """Store one part; return its ETag (None: no such upload or part)."""
        digest = hashlib.md5(data).hexdigest()  # noqa: S324 - S3's ETag of a part
        with self.write_lock:
            upload = self.uploads.get(key)
            if upload is None or not 1 <= part <= upload["num_parts"]:
                return None
            if upload["num_parts"] == 1:  # a single PUT is the whole file
                upload["blob"] = _blob(data)
            else:
                upload["parts"][part] = (digest, data)
        return digest

    def complete_upload(self, spec) -> None:
        """Assemble a multipart upload from the parts its client lists."""
        if not isinstance(spec, dict) or not isinstance(spec.get("parts"), list):
            raise BadRequest("parts must be a list")
        with self.write_lock:
            upload = self.uploads.get(spec.get("key"))
            if upload is None or upload["id"] != spec.get("upload_id"):
                raise BadRequest("no such upload")
            chunks = []
            for number, item in enumerate(spec["parts"], 1):
                got = upload["parts"].get(item.get("PartNumber"))
                if item.get("PartNumber") != number or got is None:
                    raise BadRequest(f"part {number} is missing")
                if str(item.get("ETag", "")).strip('"') != got[0]:
                    raise BadRequest(f"part {number}: ETag does not match")
                chunks.append(got[1])
            upload["blob"] = _blob(b"".join(chunks))
            upload["parts"] = {}

    def _blob_of(self, url) -> dict:
        """Return the stored file a download URL of this server names."""
        prefix = f"{self.url}/download/"
        upload = self.uploads.get(url[len(prefix) :]) if isinstance(url, str) else None
        if not isinstance(url, str) or not url.startswith(prefix) or upload is None:
            raise BadRequest("url: not a file of this server")
        blob = upload["blob"]
        if blob is None:
            raise BadRequest("url: the upload is not complete")
        return blob

    def transcode(self, spec) -> dict:
        """Create (or complete) a video's media row at once; frames would come later."""
        if not isinstance(spec, dict):
            raise BadRequest("expected a transcode spec")
        with self._lock:
            self.transcodes += 1
            held = self.hold_after is not None and self.transcodes > self.hold_after
        if held:  # a test kills the client meanwhile; the server still finishes the request
            while not (self.release.wait(0.05) or self._stopping.is_set()):
                pass
        blob = self._blob_of(spec.get("url"))
        if spec.get("media_id") is not None:
            with self.write_lock:
                media = self.media_by_id.get(spec["media_id"])
                if media is None:
                    raise NotFound("no such media")
                self.blobs[media["id"]] = blob
                mid = media["id"]
        else:
            mid = self.create("Medias", [spec], blob=blob)[0]
        return {
            "message": "Transcode started successfully!",
            "id": spec.get("uid"),
            "object": {"id": spec.get("uid"), "spec": {**spec, "media_id": mid}},
        }

    def _section_id(self, spec: dict) -> int | None:
        """Return the section a media spec names (by id, or by name: created if missing)."""
        if spec.get("section_id") is not None:
            if not any(s["id"] == spec["section_id"] for s in self.data.sections):
                raise BadRequest("section_id: no such section")
            return spec["section_id"]
        name = spec.get("section")
        if not name:
            return None
        for sec in self.data.sections:
            if sec["name"].lower() == str(name).lower():
                return sec["id"]
        return self._add_section({"name": name})

    def create_section(self, spec: dict) -> int:
        """Create a folder section; its path must be new."""
        with self.write_lock:
            return self._add_section(spec)

    def _add_section(self, spec: dict) -> int:
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadRequest("name is required")
        path = spec.get("path") or re.sub(r"[^A-Za-z0-9_.]", "_", name)
        if any(s["path"] == path for s in self.data.sections):
            raise BadRequest(f"a section with path {path!r} exists")
        sid = self._next_id(self.data.sections, 500)
        row = {"id": sid, "project": PROJECT, "name": name, "path": path, "dtype": "folder"}
        self.data.sections.append(row)
        return sid

    def create(self, kind: str, specs: list[dict], blob: dict | None = None) -> list[int]:
        """Create media, localizations or states from specs; return their ids."""
        with self.write_lock:
            rows = [getattr(self, f"_new_{kind.lower()}")(spec) for spec in specs]
            table = {
                "Medias": self.data.media,
                "Localizations": self.data.localizations,
                "States": self.data.states,
            }[kind]
            ids = []
            for row in rows:
                row["id"] = self._next_id(table, 100 if kind == "States" else 0)
                if kind == "Medias" and self.stable_ids:
                    row["id"] = self._stable_id(row)
                if kind == "Medias":
                    row["primary_section"] = self._section_id(row.pop("_section"))
                    self.media_by_id[row["id"]] = row
                    if blob is not None:
                        self.blobs[row["id"]] = blob
                table.append(row)
                ids.append(row["id"])
                if kind == "Medias" and self.annotate:
                    self._annotate(row)
            table.sort(key=lambda r: r["id"])
            return ids

    def _stable_id(self, row: dict) -> int:
        """Return a media id derived from its content hash (or name), unused so far."""
        seed = json.dumps([row["attributes"], row["name"]], sort_keys=True)
        mid = 1000 + int(hashlib.sha256(seed.encode()).hexdigest()[:6], 16)
        while mid in self.media_by_id:
            mid += 1
        return mid

    def _annotate(self, media: dict) -> None:
        """Label a new media as an annotator would: a box and an event on early frames."""
        digest = int(hashlib.sha256(str(media["id"]).encode()).hexdigest()[:8], 16)
        name = ANNOTATED[digest % len(ANNOTATED)]
        loc = self._new_localizations(
            {"type": BOX_TYPE, "media_id": media["id"], "frame": digest % 5,
             "x": 0.25, "y": 0.25, "width": 0.5, "height": 0.4,
             "attributes": {"ScientificName": name}}
        )  # fmt: skip
        loc["id"] = self._next_id(self.data.localizations, 0)
        self.data.localizations.append(loc)
        if any(t["id"] == EVENT_TYPE for t in self.data.state_types):
            state = self._new_states(
                {"type": EVENT_TYPE, "media_ids": [media["id"]], "frame": digest % 7,
                 "attributes": {"ScientificName": ANNOTATED[(digest >> 4) % len(ANNOTATED)]}}
            )  # fmt: skip
            state["id"] = self._next_id(self.data.states, 100)
            self.data.states.append(state)

    # -- state kept between runs (make demo)

    def save(self, path) -> None:
        """Write the project's rows and stored files' digests to a JSON file."""
        with self.write_lock:
            doc = {
                "media": self.data.media,
                "localizations": self.data.localizations,
                "states": self.data.states,
                "sections": self.data.sections,
                "blobs": {str(k): v for k, v in sorted(self.blobs.items())},
            }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)

    def load(self, path) -> None:
        """Read what save() wrote, if the file exists."""
        if not Path(path).is_file():
            return
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        for key in ("media", "localizations", "states", "sections"):
            setattr(self.data, key, doc[key])
        self.blobs = {int(k): v for k, v in doc["blobs"].items()}
        self.media_by_id = {m["id"]: m for m in self.data.media}

    def _new_medias(self, spec: dict) -> dict:
        types = {t["id"]: t for t in self.data.media_types}
        if spec.get("type") not in types or not spec.get("name") or not spec.get("md5"):
            raise BadRequest("type, name and md5 are required (type: a media type)")
        return {
            "project": PROJECT,
            "type": spec["type"],
            "name": str(spec["name"]),
            "width": spec.get("width"),
            "height": spec.get("height"),
            "num_frames": spec.get("num_frames"),
            "fps": spec.get("fps"),
            "md5": spec["md5"],
            "gid": spec.get("gid"),
            "uid": spec.get("uid"),
            "attributes": self._attributes(spec, spec["type"], self.data.media_types),
            "media_files": None,
            "archive_state": "live",
            "_section": {k: spec.get(k) for k in ("section", "section_id")},
        }

    def _new_localizations(self, spec: dict) -> dict:
        types = {t["id"] for t in self.data.localization_types}
        if spec.get("type") not in types or spec.get("media_id") not in self.media_by_id:
            raise BadRequest("type and media_id must name a localization type and a media")
        row = {
            "project": PROJECT,
            "media": spec["media_id"],
            "frame": spec.get("frame", 0),
            "type": spec["type"],
            "version": spec.get("version", 1),
            "attributes": self._attributes(spec, spec["type"], self.data.localization_types),
            "elemental_id": None,
            "mark": 0,
            "variant_deleted": False,
            "parent": None,
        }
        for key in ("x", "y", "width", "height", "u", "v", "points"):
            row[key] = spec.get(key)
        return row

    def _new_states(self, spec: dict) -> dict:
        types = {t["id"] for t in self.data.state_types}
        media = spec.get("media_ids")
        if spec.get("type") not in types or not isinstance(media, list) or not media:
            raise BadRequest("type and media_ids are required")
        if any(m not in self.media_by_id for m in media):
            raise BadRequest("media_ids: no such media")
        locs = spec.get("localization_ids") or []
        known = {loc["id"] for loc in self.data.localizations}
        if any(lid not in known for lid in locs):
            raise BadRequest("localization_ids: no such localization")
        return {
            "type": spec["type"],
            "media": list(media),
            "localizations": list(locs),
            "segments": None,
            "frame": spec.get("frame"),
            "version": spec.get("version", 1),
            "attributes": self._attributes(spec, spec["type"], self.data.state_types),
            "elemental_id": None,
            "mark": 0,
            "variant_deleted": False,
            "parent": None,
        }

    # -- queries, with the real server's ordering

    def media_rows(self, q: dict) -> list[dict]:
        """Filter media (media_id, type, name, section, attribute); order by name, then id."""
        rows = list(self.data.media)
        if "media_id" in q:
            ids = _ints(q["media_id"])
            rows = [m for m in rows if m["id"] in ids]
        if "name" in q:  # exact, ignoring case (name__iexact)
            rows = [m for m in rows if m["name"].lower() == q["name"][0].lower()]
        if "section" in q:  # a folder section: the media's primary_section
            sid = int(q["section"][0])
            if not any(s["id"] == sid for s in self.data.sections):
                raise NotFound("")
            rows = [m for m in rows if m.get("primary_section") == sid]
        if "type" in q:
            t = int(q["type"][0])
            rows = [m for m in rows if m["type"] == t]
        if "attribute" in q:
            type_id = int(q["type"][0]) if "type" in q else None
            declared = self.declared(type_id, self.data.media_types)
            rows = _attribute_filter(rows, q["attribute"], declared)
        sort = q.get("sort_by", [""])[0]
        if sort in ("$id", "id"):
            return sorted(rows, key=lambda m: m["id"])
        if sort in ("-$id", "-id"):
            return sorted(rows, key=lambda m: -m["id"])
        return sorted(rows, key=lambda m: (m["name"], m["id"]))

    def loc_rows(self, q: dict, rows: list[dict]) -> list[dict]:
        """Filter localizations or states (media_id, type, version, frame, attribute); by id."""
        if "media_id" in q:
            ids = _ints(q["media_id"])
            rows = [
                r
                for r in rows
                if (set(r["media"]) if isinstance(r["media"], list) else {r["media"]}) & ids
            ]
        if "type" in q:
            t = int(q["type"][0])
            rows = [r for r in rows if r["type"] == t]
        if "version" in q:
            versions = _ints(q["version"])
            rows = [r for r in rows if r["version"] in versions]
        if "frame" in q:
            f = int(q["frame"][0])
            rows = [r for r in rows if r.get("frame") == f]
        if "attribute" in q:
            rows = _attribute_filter(rows, q["attribute"], {"ScientificName"})
        return sorted(rows, key=lambda r: r["id"])

    # -- frames

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


def main(argv=None) -> int:
    """Run the stand-in from the command line."""
    parser = argparse.ArgumentParser(prog="python -m standins.tator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a generated project")
    serve.add_argument("--root", help="where an --empty project is kept between runs")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8767)
    serve.add_argument("--media", type=int, default=4)
    serve.add_argument("--frames-per-media", type=int, default=6)
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--token", default="standin-token")
    serve.add_argument("--stream-height", type=int, default=270)
    serve.add_argument("--plain", action="store_true", help="random boxes only, no edge cases")
    serve.add_argument("--warm", action="store_true", help="render every annotated frame first")
    serve.add_argument("--delay", type=float, default=0.0, help="seconds added to responses")
    serve.add_argument(
        "--empty",
        action="store_true",
        help="a project with types only (to import into), kept in --root between runs",
    )
    serve.add_argument("--stable-ids", action="store_true", help="media ids from content")
    serve.add_argument("--annotate", action="store_true", help="label each new media")
    args = parser.parse_args(argv)
    if args.empty:
        data = empty()
    else:
        data = generate(
            args.media,
            args.frames_per_media,
            args.seed,
            args.stream_height,
            special=not args.plain,
        )
    server = TatorStandin(data, token=args.token, host=args.host, port=args.port, delay=args.delay)
    server.stable_ids, server.annotate = args.stable_ids, args.annotate
    state = Path(args.root, "project.json") if args.empty and args.root else None
    if state is not None:
        server.load(state)
    if args.warm:
        server.warm()
    serve_until_signalled(server, f"Tator stand-in serving {server.url}")
    if state is not None:
        server.save(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
