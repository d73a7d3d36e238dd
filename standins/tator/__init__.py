"""A Tator stand-in: the REST API the `tator` client reads, on loopback.

It speaks what ../shared/notes/tator.md records of the real server (cvisionai/tator) and its
client, so the real `tator` package runs against it in tests and in `make demo`. Each module
names the behaviours it reproduces and where they come from:

- `model`: the project's rows and a deterministic generator of one (`generate`, `empty`);
- `schema`: the OpenAPI document at /schema that the client builds itself from;
- `rest`: the metadata routes, with the server's filters and ordering;
- `frames`: GetFrame, rendered at a streaming size, PNG or JPEG, tiled, or redirected;
- `imports`: upload_media's requests and the creation of media, sections and labels;
- `server`: the front door (token checks, throttle storms, faults, delay) and `TatorStandin`.

Run it with `python -m standins.tator serve`.
"""

from standins.tator.frames import encode, error_image, render, tile
from standins.tator.imports import ANNOTATED
from standins.tator.model import (
    BOX_TYPE,
    CLASSES,
    DOT_TYPE,
    EVENT_TYPE,
    IMPORT_TYPE,
    LINE_TYPE,
    LIST_PARAMS,
    MEDIA_TYPE,
    POLY_TYPE,
    PROJECT,
    TRACK_TYPE,
    TatorData,
    empty,
    generate,
)
from standins.tator.rest import BadRequest, NotFound
from standins.tator.schema import LOC_QUERY, MEDIA_QUERY, schema
from standins.tator.server import TatorStandin

__all__ = [
    "ANNOTATED",
    "BOX_TYPE",
    "CLASSES",
    "DOT_TYPE",
    "EVENT_TYPE",
    "IMPORT_TYPE",
    "LINE_TYPE",
    "LIST_PARAMS",
    "LOC_QUERY",
    "MEDIA_QUERY",
    "MEDIA_TYPE",
    "POLY_TYPE",
    "PROJECT",
    "TRACK_TYPE",
    "BadRequest",
    "NotFound",
    "TatorData",
    "TatorStandin",
    "empty",
    "encode",
    "error_image",
    "generate",
    "render",
    "schema",
    "tile",
]
