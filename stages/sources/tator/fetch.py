"""fetch@tator: project, types, media, localizations and states, then one row per frame."""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections import Counter, defaultdict
from urllib.parse import urlencode

from stages.core.errors import ConfigError, MetadataError
from stages.core.parallel import pmap
from stages.core.store import SAFE, Row
from stages.sources import Context, Plan
from stages.sources.tator.api import Api

log = logging.getLogger("stages.sources.tator")

GEOMETRY = ("x", "y", "width", "height")
API_CONCURRENCY = 4  # metadata calls in flight (Tator throttles a user at ~100 requests/s)


def plan(cfg, ctx: Context) -> Plan:
    """Read the project's metadata through the tator client; return rows and statistics."""
    f = cfg.fetch
    token = os.environ.get(f.token_env, "")  # checked present by the source's credentials()
    api = Api(f.host, token, f.token_env, ctx.downloader.cfg, f.max_response_bytes)
    try:
        # Independent calls go out together: each costs a round trip to the server.
        _, loc_types, state_types, (media, missing) = together(
            lambda: api.call("get_project", f.project),
            lambda: sorted(api.call("get_localization_type_list", f.project), key=_id),
            lambda: sorted(api.call("get_state_type_list", f.project), key=_id),
            lambda: select_media(api, f),
        )
        boxes, other = pick_types(loc_types, f.localization_types)
        locs, states = annotations(api, f, [m["id"] for m in media], boxes | other)
    finally:
        api.close()
    rows, names, stats = build_rows(cfg, media, locs, states, boxes, other, loc_types)
    stats.update(media_missing=missing, api_calls=api.calls)
    files = {
        "tator/project.json": _json({"host": f.host, "project": f.project}),
        "tator/media.json": _json(media),
        "tator/localization_types.json": _json(loc_types),
        "tator/state_types.json": _json(state_types),
        "tator/localizations.jsonl": _jsonl(locs),
        "tator/states.jsonl": _jsonl(states),
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
    return _unique(parts["get_localization_list"]), _unique(parts["get_state_list"])


def together(*calls):
    """Return the results of calls made concurrently (a few at a time), in order."""
    return list(pmap(lambda call: call(), calls, workers=API_CONCURRENCY))


def _id(obj) -> int:
    return obj["id"]


def _unique(objs: list) -> list:
    """Sort by id, once each (a state spanning two media batches is listed twice)."""
    return sorted({o["id"]: o for o in objs}.values(), key=_id)


def _json(obj) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def _jsonl(objs) -> bytes:
    lines = (json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for o in objs)
    return "".join(f"{line}\n" for line in lines).encode()


def pick_types(types: list, wanted: list[str]) -> tuple[set[int], set[int]]:
    """Return (box type ids, other selected type ids) for names or ids in `wanted`
    (empty: every type); an unknown one is an error with close matches."""
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
    chosen = chosen or list(types)
    boxes = {t["id"] for t in chosen if t.get("dtype") == "box"}
    return boxes, {t["id"] for t in chosen} - boxes


def select_media(api: Api, f) -> tuple[list, list[str]]:
    """Return the selected media sorted by id, and the configured names not found."""
    sel = f.media
    filters: dict = {}
    if sel.section is not None:
        found = [
            s
            for s in api.call("get_section_list", f.project, name=sel.section)
            if str(s.get("name", "")).lower() == sel.section.lower()
        ]
        if len(found) != 1:
            raise MetadataError(
                f"sources.tator.fetch.media.section: {len(found)} sections named "
                f"{sel.section!r} in project {f.project} (need exactly one)"
            )
        filters["section"] = found[0]["id"]
    if sel.attributes:
        filters["attribute"] = list(sel.attributes)
    media = api.by_window("get_media_list", f.project, page_size=f.page_size, **filters)
    # The server ignores a filter on an attribute its media type does not declare: check.
    for spec in sel.attributes:
        name, _, value = spec.partition("::")
        media = [m for m in media if str((m.get("attributes") or {}).get(name)) == value]
    missing: list[str] = []
    if sel.names:
        names = set(sel.names)
        missing = sorted(names - {m["name"] for m in media})
        media = [m for m in media if m["name"] in names]
        if missing and sel.if_missing.value == "error":
            raise MetadataError(
                f"{len(missing)} media named in sources.tator.fetch.media.names are not in "
                f"project {f.project} (with the other media filters): {missing} (set "
                "media.if_missing: warn to go on without them)"
            )
        for name in missing:
            log.warning("media %r is not in project %d", name, f.project)
    return media, missing


def media_stem(name: str) -> str:
    """Return a media name safe as part of a file name (`:` and `/` become `_`)."""
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    return SAFE.sub("_", stem).strip("._") or "media"


def frame_url(host: str, media_id: int, frame: int) -> str:
    """Return the GetFrame URL of one frame as JPEG (the default would be PNG)."""
    query = urlencode({"frames": frame, "format": "jpg"})
    return f"{host.rstrip('/')}/rest/GetFrame/{int(media_id)}?{query}"


def _valid_box(loc) -> bool:
    values = [loc.get(k) for k in GEOMETRY]
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def build_rows(cfg, media, locs, states, box_types, other_types, loc_types):
    """Return one pending row per (media, frame) holding a selected box, the class names
    (as listed, else discovered: sorted) and statistics."""
    f = cfg.fetch
    attr, unknown = f.class_attribute, f.unknown_class
    dtype = {t["id"]: str(t.get("dtype")) for t in loc_types}
    by_id = {m["id"]: m for m in media}
    stats: Counter = Counter()
    non_box: Counter = Counter()
    # A track's class, for its boxes that carry none of their own.
    track_class: dict[int, str] = {}
    loc_ids = {loc["id"] for loc in locs}
    for state in states:
        label = (state.get("attributes") or {}).get(attr)
        for lid in state.get("localizations") or []:
            if lid not in loc_ids:
                stats["track_localizations_unresolved"] += 1
            elif label not in (None, "") and lid not in track_class:
                track_class[lid] = str(label)
    frames: dict[tuple[int, int], list] = defaultdict(list)
    frame_non_box: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for loc in locs:
        mid, frame = loc.get("media"), loc.get("frame")
        if (
            mid not in by_id
            or not isinstance(frame, int)
            or loc.get("type") not in (box_types | other_types)
        ):
            stats["localizations_not_selected"] += 1
            continue
        if loc["type"] not in box_types:
            non_box[dtype.get(loc["type"], "unknown")] += 1
            frame_non_box[mid, frame][dtype.get(loc["type"], "unknown")] += 1
            continue
        num_frames = by_id[mid].get("num_frames")
        if (
            not _valid_box(loc)
            or frame < 0
            or (isinstance(num_frames, int) and frame >= num_frames)
        ):
            stats["boxes_invalid"] += 1
            continue
        label = (loc.get("attributes") or {}).get(attr)
        if label in (None, ""):
            label = track_class.get(loc["id"])
            if label is not None:
                stats["boxes_class_from_track"] += 1
        if label in (None, ""):
            stats["boxes_without_class"] += 1
            if unknown is None:
                stats["boxes_dropped_without_class"] += 1
                continue
            label = unknown
        frames[mid, frame].append((loc, str(label)))
    discovered = sorted({label for boxes in frames.values() for _, label in boxes})
    names = list(cfg.classes) or discovered
    check_classes(cfg.classes, discovered, loc_types, attr)
    wanted = set(names)
    rows, per_class = [], Counter()
    for (mid, frame), boxes in sorted(frames.items()):
        if not any(label in wanted for _, label in boxes):
            stats["frames_other_classes_only"] += 1
            continue
        m = by_id[mid]
        boxes.sort(key=lambda pair: pair[0]["id"])
        per_class.update(label for _, label in boxes)
        rows.append(
            Row(
                item_id=f"{media_stem(m['name'])}_{mid}_{frame:06d}",
                source="tator",
                source_id=f"{mid}/{frame}",
                url=frame_url(f.host, mid, frame),
                width=m.get("width"),
                height=m.get("height"),
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
                    "media_name": m["name"],
                    "frame": frame,
                    "localizations": [loc["id"] for loc, _ in boxes],
                    "non_box": dict(sorted(frame_non_box.get((mid, frame), Counter()).items())),
                },
            )
        )
    with_boxes = {mid for mid, _ in frames}
    stats.update(
        media=len(media),
        media_without_boxes=sum(m["id"] not in with_boxes for m in media),
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
            "boxes_per_class": {n: per_class.get(n, 0) for n in names},
            "boxes_unknown_class": per_class.get(unknown, 0) if unknown else 0,
            "non_box_localizations": dict(sorted(non_box.items())),
        },
    )


def check_classes(listed: list[str], discovered: list[str], loc_types, attr: str) -> None:
    """Refuse listed classes the project cannot have: not among the class attribute's enum
    choices when it declares them, else not found in the selected localizations."""
    if not listed:
        return
    choices = sorted(
        {
            str(c)
            for t in loc_types
            for a in t.get("attribute_types") or []
            if a.get("name") == attr and a.get("dtype") == "enum"
            for c in a.get("choices") or []
        }
    )
    known = choices or discovered
    unknown = [c for c in listed if c not in known]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
        guess = " or ".join(repr(c) for c in close)
        hints.append(f"{name!r}" + (f" (did you mean {guess}?)" if close else ""))
    where = "the enum choices of" if choices else "the selected localizations' values of"
    raise ConfigError(f"classes not in {where} {attr!r}: {', '.join(hints)}")
