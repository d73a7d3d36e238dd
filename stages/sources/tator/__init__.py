"""Tator: annotated video frames and their boxes, from a project on a Tator server.

fetch@tator reads metadata with the real `tator` client (paged by id, with retries, timeouts
and a size cap on every call) and downloads the JPEG of every frame that holds at least one
box through the shared downloader. Boxes keep Tator's normalised top-left geometry in the
fetch manifest; clean-annotations turns them into pixels of the frame actually received.
A box's class is its own `class_attribute`, else its track's (the state holding it), else
`unknown_class`.

This module is what every stage imports; `api.py` and `fetch.py` are imported by fetch only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stages.core.store import Row
from stages.sources import Context, Plan, Source
from stages.sources.tator.conf import THROTTLED, TatorConf

if TYPE_CHECKING:
    from stages.families import Cleaner
    from stages.net.credentials import Credential
    from stages.net.ledger import Result


class Tator(Source):
    """A Tator project: box localizations (own and tracks') on the frames of its videos."""

    name = "tator"
    split_key = "media"  # one video's frames
    schema = TatorConf
    throttled = THROTTLED

    def credentials(self, cfg: TatorConf) -> list[Credential]:
        """Return the API token, sent as `Authorization: Token` to the Tator host only."""
        from stages.net.credentials import from_env

        f = cfg.fetch
        where = "sources.tator.fetch.token_env"
        return [from_env(f.token_env, [f.host], where, header="Authorization", prefix="Token ")]

    def plan(self, cfg: TatorConf, ctx: Context) -> Plan:
        """Read media, types, localizations and states; return one row per annotated frame."""
        from stages.sources.tator.fetch import plan

        return plan(cfg, ctx)

    def download(self, cfg: TatorConf, rows: list[Row], ctx: Context) -> dict[str, Result]:
        """Download the frames (GetFrame answers with no file extension in the URL: JPEG)."""
        return ctx.fetch_all([r.url for r in rows], desc="fetch@tator", kind="jpeg")

    def cleaner(self) -> Cleaner:
        """Return the image cleaner that keeps the classes of the boxes that survived."""
        from stages.sources.tator.clean import TatorCleaner

        return TatorCleaner()


SOURCE = Tator()
