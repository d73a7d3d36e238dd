"""The import side: tator.util.upload_media's requests, and creating media, sections and labels.

The upload path follows ../shared/notes/tator.md, section 8: UploadInfo hands out presigned
part URLs on this server (a PUT there needs no token: the URL is the grant), a multipart
upload is assembled from the parts its completion lists with their ETags, DownloadInfo names
the stored file, and a Transcode creates the video's media row at once (frames would come
after the asynchronous transcode). Creation is all or nothing, as the server's transaction;
attributes a type does not declare are dropped silently and datetimes are re-rendered as ISO
8601; a media spec naming a missing section by name creates it, with the server's path rule
(non-`[A-Za-z0-9_.]` become `_`, so `cam-1` and `cam_1` collide).
For make demo, media ids can come from content instead of a sequence (`stable_ids`), and an
annotator can label each new media (`annotate`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from standins.tator.model import BOX_TYPE, EVENT_TYPE, PROJECT, TatorData
from standins.tator.rest import BadRequest, NotFound

if TYPE_CHECKING:
    from standins.tator.server import TatorStandin

ANNOTATED = ("person", "vehicle", "animal")  # what --annotate's annotators see in imports


def _blob(data: bytes) -> dict:
    """Return what the stand-in keeps of a stored file: its digest and size."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


class ImportRoutes:
    """Answer POSTs and presigned part PUTs, for the stand-in's request handler."""

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


class Uploads:
    """The stand-in's side of upload_media: presigned parts, completion, transcodes."""

    url: str
    write_lock: threading.Lock
    uploads: dict[str, dict]
    blobs: dict[int, dict]
    transcodes: int
    hold_after: int | None
    release: threading.Event
    media_by_id: dict[int, dict]

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


class Creation:
    """Create media, sections, localizations and states from specs, as the server does."""

    data: TatorData
    write_lock: threading.Lock
    blobs: dict[int, dict]
    media_by_id: dict[int, dict]
    stable_ids: bool
    annotate: bool

    def _next_id(self, rows: list[dict], floor: int) -> int:
        return max([floor, *(r["id"] for r in rows)]) + 1

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
