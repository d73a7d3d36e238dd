"""The project a Tator server's database would hold, and a deterministic generator of one.

Rows have the fields of the server's serializers (../shared/notes/tator.md, sections 5 and 7):
localizations carry a type whose `dtype` is box, dot, line or poly, with the geometry fields
that dtype does not use set to null; states list their localizations as ids. A generated
project's media are not numbered in name order, as on a server whose media were uploaded out
of order: the media list sorts by name, so a client paging it by id skips or repeats media.
Each media also has a "streaming" size, the resolution of its transcode, unlike
`media.width/height`: GetFrame serves frames at that size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CLASSES = (
    "Sebastes miniatus",
    "Sebastolobus",
    "Chionoecetes tanneri",
    "Merluccius productus",
)
BOX_TYPE, DOT_TYPE, LINE_TYPE, POLY_TYPE = 7, 8, 9, 10
TRACK_TYPE = 20
EVENT_TYPE = 21  # states over frames (association "Frame"), without localizations
MEDIA_TYPE = 3
IMPORT_TYPE = 4  # a video type declaring what an import sends: sha256, Camera, Timestamp
PROJECT = 1
LIST_PARAMS = ("media_id", "type", "version", "after", "start", "stop", "attribute")


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
