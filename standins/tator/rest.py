"""The /rest metadata routes: project, media, localizations, states, their types, sections.

Lists follow the server's ordering and filters (../shared/notes/tator.md, sections 2, 6 and 8):
media by (name, id) unless `sort_by` says otherwise, localizations and states by id; `after`
keeps ids greater than it and `start`/`stop` slice what is left; `attribute=Name::value`
filters compare by the attribute's type and silently ignore names the type does not declare,
as the real server does. A project other than the stand-in's is a 403 on project routes and
a 404 on /rest/Project.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from standins.tator.model import PROJECT, TatorData

if TYPE_CHECKING:
    from standins.tator.server import TatorStandin


class BadRequest(Exception):
    """A query the real server answers with 400."""


class NotFound(Exception):
    """A lookup the real server answers with 404."""


def ints(values: list[str]) -> set[int]:
    """Return the integers of comma-joined query values (a 400 if one is not an integer)."""
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


class RestRoutes:
    """Answer /rest requests past the auth, storm and fault checks, for the request handler."""

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


class Queries:
    """The stand-in's list queries, with the real server's filters and ordering."""

    data: TatorData

    def declared(self, type_id, kinds: list[dict]) -> set[str]:
        """Return the attribute names a type declares (all types' when type_id is None)."""
        return {
            a["name"]
            for t in kinds
            if type_id is None or t["id"] == type_id
            for a in t.get("attribute_types") or []
        }

    def media_rows(self, q: dict) -> list[dict]:
        """Filter media (media_id, type, name, section, attribute); order by name, then id."""
        rows = list(self.data.media)
        if "media_id" in q:
            ids = ints(q["media_id"])
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
            ids = ints(q["media_id"])
            rows = [
                r
                for r in rows
                if (set(r["media"]) if isinstance(r["media"], list) else {r["media"]}) & ids
            ]
        if "type" in q:
            t = int(q["type"][0])
            rows = [r for r in rows if r["type"] == t]
        if "version" in q:
            versions = ints(q["version"])
            rows = [r for r in rows if r["version"] in versions]
        if "frame" in q:
            f = int(q["frame"][0])
            rows = [r for r in rows if r.get("frame") == f]
        if "attribute" in q:
            rows = _attribute_filter(rows, q["attribute"], {"ScientificName"})
        return sorted(rows, key=lambda r: r["id"])
