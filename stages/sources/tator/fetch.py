"""fetch@tator: project, types, media, localizations and states, then one row per frame."""

from __future__ import annotations

import difflib
import json
import logging
import math
from collections import Counter, defaultdict
from urllib.parse import urlencode

from stages.core.errors import ConfigError, MetadataError
from stages.core.parallel import pmap
from stages.core.store import Row, safe_name
from stages.formats.voc import xml_text
from stages.sources import Context, Plan
from stages.sources.tator.api import Api
from stages.sources.tator.conf import SUMMARY, IfMissing

log = logging.getLogger("stages.sources.tator")

GEOMETRY = ("x", "y", "width", "height")
API_CONCURRENCY = 4  # metadata calls in flight (Tator throttles a user at ~100 requests/s)
INT, STR, DICT, LIST = (int,), (str,), (dict,), (list,)
# The fields fetch reads from each kind of object, and their JSON types (None allowed where
# the server may send null).
FIELDS = {
    "localization type": {"id": INT, "name": STR, "dtype": STR + (None,)},
    "state type": {"id": INT},
    "section": {"id": INT, "name": STR},
    "media": {
        "id": INT,
        "name": STR,
        "width": INT + (None,),
        "height": INT + (None,),
        "num_frames": INT + (None,),
        "attributes": DICT + (None,),
    },
    "localization": {
        "id": INT,
        "media": INT,
        "frame": INT + (None,),
        "type": INT,
        "attributes": DICT + (None,),
    },
    "state": {"id": INT, "localizations": LIST + (None,), "attributes": DICT + (None,)},
}


def plan(cfg, ctx: Context) -> Plan:
    """Read the project's metadata through the tator client; return rows and statistics."""
    f = cfg.fetch
    # The token the fetch stage read from the environment, scoped to the host (credentials()).
    api = Api(f.host, ctx.credentials, f.token_env, ctx.fetch_conf, f.max_response_bytes)
    try:
        # Independent calls go out together: each costs a round trip to the server.
        _, loc_types, state_types, (media, missing) = together(
            lambda: api.call("get_project", f.project),
            lambda: checked("localization type", api.call("get_localization_type_list", f.project)),
            lambda: checked("state type", api.call("get_state_type_list", f.project)),
            lambda: select_media(api, f),
        )
        boxes, other = pick_types(loc_types, f.localization_types)
        locs, states = annotations(api, f, [m["id"] for m in media], boxes | other)
    finally:
        api.close()
    rows, names, stats = build_rows(cfg, media, locs, states, boxes, other, loc_types)
    if not rows:
        raise MetadataError(
            f"no frame of the {len(media)} selected media holds a selected box "
            f"({stats.get('localizations', 0)} localizations): check the media, type, version "
            "and class filters in conf/source/tator.yaml"
        )
    stats.update(media_missing=missing, api_calls=api.calls)
    files = {
        "tator/project.json": _json({"host": f.host, "project": f.project}),
        "tator/media.json": _json(media),
        "tator/localization_types.json": _json(loc_types),
        "tator/state_types.json": _json(state_types),
        "tator/localizations.jsonl": _jsonl(locs),
        "tator/states.jsonl": _jsonl(states),
        SUMMARY: _json({k: stats[k] for k in ("non_box_localizations", "media_without_boxes")}),
    }
    log.info(
        "tator: %d media, %d localizations, %d states -> %d annotated frames",
        len(media),
        len(locs),
        len(states),
        len(rows),
    )
    return Plan(rows, stats, files=files, classes=names)


def annotations(api: Api, f, media_ids: list[int], types: set[int]) -> tuple[list, list]:
    """Return the localizations (of these types) and states of the media, by id, once each."""
    versions = {"version": list(f.versions)} if f.versions else {}
    one_type = {"type": next(iter(types))} if len(types) == 1 else {}  # else filtered later
    queries = []
    for first in range(0, len(media_ids), f.media_per_query):
        page = {
            "media_id": media_ids[first : first + f.media_per_query],
            "page_size": f.page_size,
            **versions,
        }
        queries += [("get_localization_list", {**page, **one_type}), ("get_state_list", page)]
    found = together(
        *(lambda op=op, kw=kw: list(api.by_id(op, f.project, **kw)) for op, kw in queries)
    )
    parts: dict[str, list] = {"get_localization_list": [], "get_state_list": []}
    for (op, _), objs in zip(queries, found, strict=True):
        parts[op] += objs
    locs = checked("localization", _unique(parts["get_localization_list"]))
    return locs, checked("state", _unique(parts["get_state_list"]))


def together(*calls):
    """Return the results of calls made concurrently (a few at a time), in order."""
    return list(pmap(lambda call: call(), calls, workers=API_CONCURRENCY))


def checked(kind: str, objs) -> list:
    """Return API objects sorted by id after checking the fields fetch reads; else raise."""
    if not isinstance(objs, list) or not all(isinstance(o, dict) for o in objs):
        raise MetadataError(f"Tator: expected a list of {kind} objects")
    for obj in objs:
        for key, types in FIELDS[kind].items():
            value = obj.get(key)
            ok = (value is None and None in types) or (
                value is not None
                and isinstance(value, tuple(t for t in types if t is not None))
                and not isinstance(value, bool)
            )
            if not ok:
                raise MetadataError(
                    f"Tator {kind} {obj.get('id')!r}: {key} is {type(value).__name__}, not "
                    + " or ".join("null" if t is None else t.__name__ for t in types)
                )
    return sorted(objs, key=_id)


def _id(obj) -> int:
    return obj["id"]


def _unique(objs: list) -> list:
    """Return objects sorted by id, once each (a state over two media batches comes twice)."""
    return sorted({o["id"]: o for o in objs}.values(), key=_id)


def _json(obj) -> bytes:
    # ASCII escapes: a lone surrogate in some attribute must not stop the stage.
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()


def _jsonl(objs) -> bytes:
    lines = (json.dumps(o, sort_keys=True, separators=(",", ":")) for o in objs)
    return "".join(f"{line}\n" for line in lines).encode()


def pick_types(types: list, wanted: list[str]) -> tuple[set[int], set[int]]:
    """Return the ids of the selected box types and of the other selected types."""
    chosen = []
    for want in wanted:
        hit = [t for t in types if str(t["id"]) == want or t["name"] == want]
        if not hit:
            names = [t["name"] for t in types]
            close = difflib.get_close_matches(want, names, n=3, cutoff=0.6)
            guess = " or ".join(repr(c) for c in close)
            hint = f"; did you mean {guess}?" if close else f"; types: {names}"
            raise ConfigError(f"sources.tator.fetch.localization_types: no type {want!r}{hint}")
        chosen += hit
    chosen = chosen or list(types)  # none listed: every type
    boxes = {t["id"] for t in chosen if t.get("dtype") == "box"}
    if not boxes:
        raise ConfigError(
            "sources.tator.fetch.localization_types: no box type among "
            f"{sorted(t['name'] for t in chosen)} (only boxes give boxes)"
        )
    return boxes, {t["id"] for t in chosen} - boxes


def same_value(value, wanted: str) -> bool:
    """Tell whether an attribute value equals a filter's text, as the server compares them."""
    if isinstance(value, bool):
        return wanted.lower() == str(value).lower()
    if isinstance(value, int | float):
        try:
            return float(wanted) == float(value)
        except ValueError:
            return False
    return value is not None and str(value) == wanted


def select_media(api: Api, f) -> tuple[list, list[str]]:
    """Return the selected media sorted by id, and the configured names not found."""
    sel = f.media
    filters: dict = {}
    if sel.section is not None:
        found = [
            s
            for s in checked("section", api.call("get_section_list", f.project, name=sel.section))
            if s["name"].lower() == sel.section.lower()
        ]
        if len(found) != 1:
            raise MetadataError(
                f"sources.tator.fetch.media.section: {len(found)} sections named "
                f"{sel.section!r} in project {f.project} (need exactly one)"
            )
        filters["section"] = found[0]["id"]
    if sel.attributes:
        filters["attribute"] = list(sel.attributes)
    # Media sort by name by default while `after` filters by id: sort by id to page by id.
    media = list(
        api.by_id("get_media_list", f.project, page_size=f.page_size, sort_by=["$id"], **filters)
    )
    media = checked("media", media)
    # The server ignores a filter on an attribute its media type does not declare: check.
    for spec in sel.attributes:
        name, _, value = spec.partition("::")
        media = [m for m in media if same_value((m["attributes"] or {}).get(name), value)]
    missing: list[str] = []
    if sel.names:
        names = set(sel.names)
        missing = sorted(names - {m["name"] for m in media})
        media = [m for m in media if m["name"] in names]
        if missing and sel.if_missing is IfMissing.error:
            raise MetadataError(
                f"{len(missing)} media named in sources.tator.fetch.media.names are not in "
                f"project {f.project} (with the other media filters): {missing} (set "
                "media.if_missing: warn to go on without them)"
            )
        for name in missing:
            log.warning("media %r is not in project %d", name, f.project)
    if not media:
        raise MetadataError(
            f"no media of project {f.project} match sources.tator.fetch.media ({sel})"
        )
    return media, missing


def media_stem(name: str) -> str:
    """Return a media name without its extension, safe in a file name (`:`, `/`: `_`)."""
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    return safe_name(stem, "media")


def frame_url(host: str, media_id: int, frame: int) -> str:
    """Return the GetFrame URL of one frame as JPEG (the default would be PNG)."""
    query = urlencode({"frames": frame, "format": "jpg"})
    return f"{host}/rest/GetFrame/{int(media_id)}?{query}"


def valid_box(loc) -> bool:
    """Tell whether a box's geometry is four finite numbers."""
    values = [loc.get(k) for k in GEOMETRY]
    return all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


def class_name(value) -> str | None:
    """Return a class attribute's value as a class name, or None for no (usable) class."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    # Characters XML cannot hold are escaped here, so VOC, COCO and the manifest agree.
    text = xml_text(str(value).strip())
    return text or None


def track_classes(states: list, loc_ids: set[int], attr: str, stats: Counter) -> dict[int, str]:
    """Return the class of each box that belongs to a track (a state) with one."""
    out: dict[int, str] = {}
    for state in states:
        label = class_name((state["attributes"] or {}).get(attr))
        for lid in state["localizations"] or []:
            if lid not in loc_ids:
                stats["track_localizations_unresolved"] += 1
            elif label is not None and lid not in out:
                out[lid] = label
    return out


def build_rows(cfg, media, locs, states, box_types, other_types, loc_types):
    """Return one pending row per annotated frame, the class names, and statistics."""
    f = cfg.fetch
    attr, unknown = f.class_attribute, f.unknown_class
    dtype = {t["id"]: str(t.get("dtype")) for t in loc_types}
    by_id = {m["id"]: m for m in media}
    stats: Counter = Counter()
    non_box: Counter = Counter()
    track_class = track_classes(states, {loc["id"] for loc in locs}, attr, stats)
    frames: dict[tuple[int, int], list] = defaultdict(list)
    for loc in locs:
        mid, frame = loc["media"], loc["frame"]
        if mid not in by_id or loc["type"] not in box_types | other_types:
            stats["localizations_not_selected"] += 1
            continue
        if loc["type"] not in box_types:
            non_box[dtype.get(loc["type"], "unknown")] += 1
            continue
        num_frames = by_id[mid]["num_frames"]
        if (
            frame is None
            or frame < 0
            or (num_frames is not None and frame >= num_frames)
            or not valid_box(loc)
        ):
            stats["boxes_invalid"] += 1
            continue
        label = class_name((loc["attributes"] or {}).get(attr))
        if label is None and loc["id"] in track_class:
            label = track_class[loc["id"]]
            stats["boxes_class_from_track"] += 1
        if label is None:
            stats["boxes_without_class"] += 1
            if unknown is None:
                stats["boxes_dropped_without_class"] += 1
                continue
            label = unknown
        frames[mid, frame].append((loc, label))
    discovered = sorted({label for boxes in frames.values() for _, label in boxes})
    names = list(cfg.classes) or discovered
    absent = check_classes(cfg.classes, discovered, loc_types, attr, unknown)
    wanted = set(names)
    rows, per_class = [], Counter()
    for (mid, frame), boxes in sorted(frames.items()):
        if not any(label in wanted for _, label in boxes):
            stats["frames_other_classes_only"] += 1
            continue
        per_class.update(label for _, label in boxes)
        rows.append(frame_row(f.host, by_id[mid], frame, boxes))
    with_boxes = {mid for mid, _ in frames}
    names_seen = Counter(m["name"] for m in media)
    stats.update(
        media=len(media),
        media_without_boxes=sum(m["id"] not in with_boxes for m in media),
        media_names_shared=sum(n for n in names_seen.values() if n > 1),
        localizations=len(locs),
        states=len(states),
        frames=len(rows),
        boxes=sum(per_class.values()),
    )
    return (
        rows,
        names,
        {
            **dict(sorted(stats.items())),
            "classes_discovered": discovered,
            "classes_without_boxes": absent,
            "boxes_per_class": {n: per_class.get(n, 0) for n in names},
            "boxes_unknown_class": per_class.get(unknown, 0) if unknown else 0,
            "non_box_localizations": dict(sorted(non_box.items())),
        },
    )


def frame_row(host: str, media: dict, frame: int, boxes: list) -> Row:
    """Return the pending row of one frame and its boxes (normalised, in localization order)."""
    boxes = sorted(boxes, key=lambda pair: pair[0]["id"])
    mid = media["id"]
    return Row(
        item_id=f"{media_stem(media['name'])}_{mid}_{frame:06d}",
        source="tator",
        source_id=f"{mid}/{frame}",
        url=frame_url(host, mid, frame),
        width=media["width"],
        height=media["height"],
        labels=sorted({label for _, label in boxes}),
        boxes=[
            {
                "label": label,
                "x": float(loc["x"]),
                "y": float(loc["y"]),
                "w": float(loc["width"]),
                "h": float(loc["height"]),
            }
            for loc, label in boxes
        ],
        status="pending",
        meta={
            "ext": ".jpg",
            "box_units": "normalized",
            "media": mid,
            "media_name": media["name"],
            "frame": frame,
            "localizations": [loc["id"] for loc, _ in boxes],
        },
    )


def check_classes(listed, discovered, loc_types, attr: str, unknown: str | None) -> list[str]:
    """Refuse listed classes that look like typos; return those absent from the data."""
    if not listed:
        return []
    choices = {
        str(c)
        for t in loc_types
        for a in t.get("attribute_types") or []
        if isinstance(a, dict) and a.get("name") == attr and a.get("dtype") == "enum"
        for c in a.get("choices") or []
    }
    known = sorted(set(discovered) | choices | ({unknown} if unknown else set()))
    hints = []
    for name in (c for c in listed if c not in known):
        close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
        if choices or close:  # an enum says what exists; a near miss is a typo
            guess = " or ".join(repr(c) for c in close)
            hints.append(f"{name!r}" + (f" (did you mean {guess}?)" if close else ""))
    if hints:
        where = "the enum choices of" if choices else "the selected localizations' values of"
        raise ConfigError(f"classes not in {where} {attr!r}: {', '.join(hints)}")
    return [c for c in listed if c not in discovered]
