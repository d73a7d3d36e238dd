"""Labels brought back from an annotation platform, in the three formats Camio's downloader
promised: JSON (its shape), CSV (one row per label occurrence) and XML (`labels.xsd`).

All three carry the same facts, and each reads back into the same `Label` list:
- JSON: `{job_id, earliest_date, latest_date, labels: {<timestamp>: {labels: [...],
  cameras: {<camera>: {name}}}}}`, grouped by the media's timestamp as the original grouped
  by image date, each label an object (camera, media, label, frame range, box);
- CSV: `timestamp,camera,media,label,frame,frame_end,x,y,w,h` (empty cells: no such value);
- XML: `<labels job_id earliest_date latest_date>` holding `<label>` elements with the same
  fields as attributes and an optional `<box x y w h/>`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

XSD = Path(__file__).with_name("labels.xsd")
CSV_COLUMNS = ("timestamp", "camera", "media", "label", "frame", "frame_end", "x", "y", "w", "h")


@dataclass(frozen=True)
class Label:
    """One label occurrence on a media: a box on a frame, or a state over a frame range."""

    timestamp: str  # the media's time, ISO 8601 UTC
    camera: str
    media: str  # the platform's id of the media
    label: str
    frame: int | None = None
    frame_end: int | None = None  # inclusive; None: one frame (or the whole media)
    box: tuple[float, float, float, float] | None = None  # x, y, w, h (normalised)


def order(lab: Label) -> tuple:
    """Return a label's sort key (absent frames and boxes first)."""
    frame = -1 if lab.frame is None else lab.frame
    end = -1 if lab.frame_end is None else lab.frame_end
    return (lab.timestamp, lab.camera, lab.media, frame, end, lab.label, lab.box or ())


def dates(labels: list[Label]) -> tuple[str | None, str | None]:
    """Return the earliest and latest timestamps."""
    stamps = [lab.timestamp for lab in labels]
    return (min(stamps), max(stamps)) if stamps else (None, None)


def to_json(job_id: str, labels: list[Label]) -> str:
    """Return the labels in the original's JSON shape."""
    first, last = dates(labels)
    grouped: dict[str, dict] = {}
    for lab in sorted(labels, key=order):
        entry = grouped.setdefault(lab.timestamp, {"labels": [], "cameras": {}})
        entry["cameras"][lab.camera] = {"name": lab.camera}
        entry["labels"].append(
            {
                "camera": lab.camera,
                "media": lab.media,
                "label": lab.label,
                "frame": lab.frame,
                "frame_end": lab.frame_end,
                "box": list(lab.box) if lab.box is not None else None,
            }
        )
    doc = {"job_id": job_id, "earliest_date": first, "latest_date": last, "labels": grouped}
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def from_json(text: str) -> tuple[str, list[Label]]:
    """Read labels back from the JSON."""
    doc = json.loads(text)
    out = []
    for stamp, entry in doc["labels"].items():
        for item in entry["labels"]:
            box = tuple(float(v) for v in item["box"]) if item["box"] is not None else None
            out.append(
                Label(
                    stamp,
                    item["camera"],
                    item["media"],
                    item["label"],
                    item["frame"],
                    item["frame_end"],
                    box,
                )  # fmt: skip
            )
    return doc["job_id"], sorted(out, key=order)


def number(value) -> str:
    """Return a value as a CSV/XML cell (empty for None; floats exactly, via repr)."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def to_csv(labels: list[Label]) -> str:
    """Return one CSV row per label occurrence."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for lab in sorted(labels, key=order):
        box = lab.box or (None, None, None, None)
        cells = [lab.timestamp, lab.camera, lab.media, lab.label, lab.frame, lab.frame_end, *box]
        writer.writerow([number(v) if not isinstance(v, str) else v for v in cells])
    return buf.getvalue()


def _int(text: str) -> int | None:
    return int(text) if text != "" else None


def from_csv(text: str) -> list[Label]:
    """Read labels back from the CSV."""
    out = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        box = None
        if row["x"] != "":
            box = tuple(float(row[k]) for k in ("x", "y", "w", "h"))
        out.append(
            Label(
                row["timestamp"],
                row["camera"],
                row["media"],
                row["label"],
                _int(row["frame"]),
                _int(row["frame_end"]),
                box,
            )  # fmt: skip
        )
    return sorted(out, key=order)


def to_xml(job_id: str, labels: list[Label]) -> bytes:
    """Return the labels as XML valid against labels.xsd."""
    first, last = dates(labels)
    root = etree.Element("labels", job_id=job_id)
    if first is not None:
        root.set("earliest_date", first)
        root.set("latest_date", last)
    for lab in sorted(labels, key=order):
        el = etree.SubElement(
            root, "label", timestamp=lab.timestamp, camera=lab.camera, media=lab.media,
            name=lab.label,
        )  # fmt: skip
        if lab.frame is not None:
            el.set("frame", str(lab.frame))
        if lab.frame_end is not None:
            el.set("frame_end", str(lab.frame_end))
        if lab.box is not None:
            etree.SubElement(
                el, "box", **{k: number(v) for k, v in zip("xywh", lab.box, strict=True)}
            )
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def schema() -> etree.XMLSchema:
    """Return the XML schema of the labels file."""
    return etree.XMLSchema(etree.parse(str(XSD)))


def from_xml(data: bytes) -> tuple[str, list[Label]]:
    """Read labels back from the XML, validating it first."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    doc = etree.fromstring(data, parser)
    schema().assertValid(doc)
    out = []
    for el in doc.iter("label"):
        box_el = el.find("box")
        box = tuple(float(box_el.get(k)) for k in "xywh") if box_el is not None else None
        out.append(
            Label(
                el.get("timestamp"),
                el.get("camera"),
                el.get("media"),
                el.get("name"),
                _int(el.get("frame", "")),
                _int(el.get("frame_end", "")),
                box,
            )  # fmt: skip
        )
    return doc.get("job_id"), sorted(out, key=order)
