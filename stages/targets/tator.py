"""The `tator` import target: files sent to a Tator project with the real client's upload path.

Each camera gets a folder section (found by name, else created, serially before any upload,
since a media creation naming a missing section races its twins). Each file goes through
`tator.util.upload_media` (media type, presigned upload, download info, transcode) with its
sha256, camera and UTC timestamp as media attributes. Files already there are found by the
hash attribute, compared here: Tator ignores a filter on an attribute its media type does
not declare, so the media type is checked to declare every attribute first.

Every API call goes through the Tator source's `Api` (timeouts, a deadline, a size cap,
retries honouring Retry-After); an upload is retried as a whole, after asking the server
whether the lost attempt created the media after all. Labels come back through the Tator
source's own reading of localizations and states.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import tator

from stages.core.config import FetchConf, ImportConf, TatorImport
from stages.core.errors import MetadataError, StageError
from stages.net.credentials import Credentials, from_env
from stages.net.retry import SessionBlocked
from stages.sources.tator.api import Api
from stages.sources.tator.fetch import annotations, checked, class_name, track_classes, valid_box
from stages.targets import Target, TargetLabel, Upload, gone_message

log = logging.getLogger("stages.targets.tator")
HEX = re.compile(r"[0-9a-f]{64}")
ATTRIBUTE_TYPES = {"hash": ("string",), "camera": ("string", "enum"), "timestamp": ("datetime",)}
ATTRIBUTE_TYPES["short_side"] = ("int", "float")
CHUNK_SIZE = 10 << 20  # upload_media's part size (larger files go up in parts, in parallel)
# upload_media guesses a file's type from its name with `mimetypes`, and fails on an
# unknown one after sending the bytes; without /etc/mime.types Python lacks some of the
# video extensions the video-folder source takes.
VIDEO_TYPES = {".mkv": "video/x-matroska", ".webm": "video/webm", ".mov": "video/quicktime",
               ".avi": "video/x-msvideo", ".mp4": "video/mp4", ".ts": "video/MP2T",
               ".mts": "video/MP2T", ".m2ts": "video/MP2T"}  # fmt: skip


for _ext, _kind in VIDEO_TYPES.items():  # taught once, process-wide, where it lacks them
    if mimetypes.guess_type(f"x{_ext}")[0] is None:
        mimetypes.add_type(_kind, _ext)


def media_kind(name: str) -> str | None:
    """Return the MIME type upload_media will guess from a file name."""
    return mimetypes.guess_type(name.lower())[0]


class MediaTypeUnfit(StageError):
    """Raise when the media type cannot carry what the importer must find files by."""


class TatorTarget(Target):
    """A Tator project: one folder section per camera, media found by their sha256."""

    def __init__(self, cfg: TatorImport, retry: FetchConf, workers: int = 4):
        self.cfg = cfg
        where = "import_to.tator.token_env"
        cred = from_env(cfg.token_env, [cfg.host], where, header="Authorization", prefix="Token ")
        self.api = Api(
            cfg.host, Credentials([cred]), cfg.token_env, retry, cfg.max_response_bytes,
            pool=workers,
        )  # fmt: skip
        self.tmp = Path(tempfile.mkdtemp(prefix="import-tator-"))
        try:
            self.attributes = self._check_media_type()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close connections; remove the temporary copies."""
        self.api.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _check_media_type(self) -> dict[str, str]:
        """Return our field -> attribute name, after checking the media type declares each."""
        cfg = self.cfg
        mtype = self.api.call("get_media_type", cfg.media_type)
        if not isinstance(mtype, dict) or mtype.get("project") != cfg.project:
            raise MediaTypeUnfit(
                f"Tator media type {cfg.media_type} is not a type of project {cfg.project}"
            )
        declared = {
            a.get("name"): a.get("dtype")
            for a in mtype.get("attribute_types") or []
            if isinstance(a, dict)
        }
        wanted = {
            key: getattr(cfg, f"{key}_attribute")
            for key in ATTRIBUTE_TYPES
            if getattr(cfg, f"{key}_attribute") is not None
        }
        wrong = [
            f"{name} ({'undeclared' if name not in declared else declared[name]}; "
            f"needs {' or '.join(ATTRIBUTE_TYPES[key])})"
            for key, name in wanted.items()
            if declared.get(name) not in ATTRIBUTE_TYPES[key]
        ]
        if wrong:
            raise MediaTypeUnfit(
                f"Tator media type {cfg.media_type} ({mtype.get('name')!r}) cannot carry the "
                f"import's attributes: {', '.join(wrong)}. Tator drops undeclared attributes "
                "and ignores filters on them, so files could not be found again: add them to "
                "the media type, or set import_to.tator.*_attribute"
            )
        return wanted

    def register(self, camera: str, settings: dict) -> str:
        """Find the camera's section by name (exactly), else create it; return its id."""
        name = str(settings.get("section") or camera)
        project = self.cfg.project
        try:
            found = checked("section", self.api.call("get_section_list", project, name=name))
            same = [s for s in found if s["name"] == name]
            if same:
                return str(same[0]["id"])
            made = self.api.call("create_section", project, section_spec={"name": name})
        except MetadataError as exc:  # that camera's files fail; the others go on
            raise OSError(f"section {name!r}: {exc}") from None
        return str(made["id"])

    def existing(self) -> dict[str, str]:
        """Return sha256 -> media id of every media of the type carrying a hash."""
        found: dict[str, str] = {}
        media = self.api.by_id(
            "get_media_list",
            self.cfg.project,
            page_size=self.cfg.page_size,
            type=self.cfg.media_type,
            sort_by=["$id"],
        )
        for m in checked("media", list(media)):
            sha = (m["attributes"] or {}).get(self.attributes["hash"])
            if isinstance(sha, str) and HEX.fullmatch(sha):
                found.setdefault(sha, str(m["id"]))  # the oldest copy, if some were duplicated
        return found

    def _find(self, sha256: str) -> str | None:
        """Return the id of a media holding this hash (compared here, not trusted to filter)."""
        name = self.attributes["hash"]
        hits = self.api.call(
            "get_media_list",
            self.cfg.project,
            type=self.cfg.media_type,
            attribute=[f"{name}::{sha256}"],
            sort_by=["$id"],
        )
        for m in checked("media", hits):
            if (m["attributes"] or {}).get(name) == sha256:
                return str(m["id"])
        return None

    def upload(self, item: Upload, place: str) -> str:
        """Upload one file with its attributes into its section; return the media id."""
        if item.size == 0:  # tator's md5sum raises on it, after nothing useful
            raise OSError(f"{item.name} is empty (0 bytes): Tator cannot take it")
        ext = Path(item.name).suffix.lower()
        kind = media_kind(item.name)
        if kind is None or not kind.startswith(("video/", "image/")):
            raise OSError(f"{item.name}: Tator cannot tell its media type from {ext or 'no'!r}")
        path = self.tmp / f"{item.sha256}{ext}"
        with item.open() as src, open(path, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        values = {
            "hash": item.sha256,
            "camera": item.camera,
            "timestamp": item.timestamp,
            "short_side": item.settings.get("short_side"),
        }
        attrs = {name: values[key] for key, name in self.attributes.items()}
        attrs = {k: v for k, v in attrs.items() if v is not None}
        tries = 0

        def attempt() -> str:
            nonlocal tries
            tries += 1
            if tries > 1:  # the last attempt may have created the media before failing
                there = self._find(item.sha256)
                if there is not None:
                    return there
            steps = tator.util.upload_media(
                self.api.client,
                self.cfg.media_type,
                str(path),
                fname=item.name,
                section_id=int(place),
                attributes=attrs,
                timeout=self.api.cfg.low_speed_time,
                chunk_size=CHUNK_SIZE,
            )
            *_, (_, response) = steps  # a generator: nothing is sent until it is run out
            media_id = _media_id(response)
            return media_id if media_id is not None else self._find(item.sha256) or ""

        try:
            media_id = self.api.retrying(f"upload of {item.name}", attempt)
        except SessionBlocked:
            raise  # the session is refused (the token): the run's failure, not this file's
        except StageError as exc:
            raise OSError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - tator's own failures: one file's failure
            # tator's part uploads give up with RuntimeError after their retries; its
            # helpers raise bare Exception and AttributeError on what they cannot read.
            raise OSError(f"upload of {item.name}: {type(exc).__name__}: {exc}") from None
        finally:
            path.unlink(missing_ok=True)
        if not media_id:
            raise OSError(f"upload of {item.name}: Tator created no media findable by its hash")
        return media_id

    def labels(self, ids: list[str]) -> tuple[list[TargetLabel], dict[str, int]]:
        """Return the classed boxes and states on these media (through the Tator source)."""
        cfg, api = self.cfg, self.api
        types = checked("localization type", api.call("get_localization_type_list", cfg.project))
        boxes = {t["id"] for t in types if t.get("dtype") == "box"}
        wanted = {int(i) for i in ids}
        self._check_present(sorted(wanted))
        locs, states = annotations(api, cfg, sorted(wanted), {t["id"] for t in types})
        skipped: Counter = Counter()
        attr = cfg.class_attribute
        track_class = track_classes(states, {loc["id"] for loc in locs}, attr, skipped)
        frames = {loc["id"]: loc["frame"] for loc in locs}
        out = []
        for loc in locs:
            if loc["media"] not in wanted:
                continue
            if loc["type"] not in boxes:
                skipped["not_boxes"] += 1
                continue
            label = class_name((loc["attributes"] or {}).get(attr)) or track_class.get(loc["id"])
            frame = loc["frame"]
            if label is None or not valid_box(loc) or frame is None or frame < 0:
                skipped["boxes_without_class_or_geometry"] += 1
                continue
            box = tuple(float(loc[k]) for k in ("x", "y", "width", "height"))
            out.append(TargetLabel(str(loc["media"]), label, frame, None, box))
        for state in states:
            label = class_name((state["attributes"] or {}).get(attr))
            if label is None:
                skipped["states_without_class"] += 1
                continue
            spans = [frames[i] for i in state["localizations"] or [] if frames.get(i) is not None]
            first, last = (min(spans), max(spans)) if spans else (state.get("frame"), None)
            for mid in state.get("media") or []:
                if mid in wanted:
                    out.append(TargetLabel(str(mid), label, first, last, None))
        return out, dict(sorted(skipped.items()))

    def _check_present(self, ids: list[int]) -> None:
        """Refuse to read labels when imported media are gone (their labels would be too)."""
        cfg, present = self.cfg, set()
        for first in range(0, len(ids), cfg.media_per_query):
            batch = ids[first : first + cfg.media_per_query]
            pages = self.api.by_id(
                "get_media_list",
                cfg.project,
                page_size=cfg.page_size,
                media_id=batch,
                sort_by=["$id"],  # by_id pages by id; media sort by name otherwise
            )
            present.update(m["id"] for m in pages)
        gone = sorted(set(ids) - present)
        if gone:
            raise MetadataError(gone_message(gone))


def _media_id(response) -> str | None:
    """Return the media id a transcode (or media creation) response names, if it does."""
    obj = response.get("object") if isinstance(response, dict) else None
    spec = obj.get("spec") if isinstance(obj, dict) else None
    mid = spec.get("media_id") if isinstance(spec, dict) else None
    if isinstance(mid, int) and not isinstance(mid, bool):
        return str(mid)
    ids = response.get("id") if isinstance(response, dict) else None
    if isinstance(ids, list) and len(ids) == 1 and isinstance(ids[0], int):
        return str(ids[0])  # create_media_list (non-video files)
    return None


def build(cfg: ImportConf, retry: FetchConf) -> TatorTarget:
    """Return the Tator target import_to describes."""
    return TatorTarget(cfg.tator, retry, workers=cfg.workers)
