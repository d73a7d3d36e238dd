"""Figure Eight / DeepCell: crowd-annotated montages to cleaned label movies and npz data.

The pre-annotation step (caliban-toolbox) cut each raw movie's frames into overlapping
positions (`x_XX_y_YY`), laid each position's frames out in montages of `montage_len`
frames (parts) and uploaded them to a Figure Eight job; its two JSON logs and the raw frames
are this source's input folder (`fetch.root`, tracked by DVC). The stages:

- fetch: the job report (a zipped CSV) from the API, with the key from the environment in an
  `Authorization` header; then every annotation image the report points to. Broken links are
  written out (`job_<id>_<type>_report_broken_links.csv`, `job_<id>_reupload.csv`). The raw
  frames and the logs are taken into the store.
- extract-frames: each annotation montage cut into its frames (`{identifier}_x_XX_y_YY_part_P`
  movies) read as label images, with the raw frames cut to the same pieces (`chop_raw`), or
  the positions stitched back into full frames (`recombine`).
- clean-annotations: holes filled, specks removed, labels made sequential (`labels.py`).
- export-npz: DeepCell's `X` (B,T,H,W,C float32) and `y` (B,T,H,W,1 int32), one file per part.
- plots: a contact sheet of label frames over their raw images, and cells per frame.

This module is what every stage imports (settings, hooks); the work is in the modules named
for each stage, imported when that stage runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stages.core.store import Row, Store
from stages.sources import Context, Plan, PlotSpec, Source
from stages.sources.figure8.conf import Figure8Conf, Figure8SplitBy

if TYPE_CHECKING:
    from stages.families import Cleaner, Exporter, Extractor
    from stages.net.credentials import Credential
    from stages.net.ledger import Result


class Figure8(Source):
    """A Figure Eight job's annotated montages, with the raw frames they were made from."""

    name = "figure8"
    schema = Figure8Conf
    local_input = True  # data/figure8/input: raw frames and the pre-annotation logs
    has_frames = True  # montages cut into movies
    plots = PlotSpec(template="bar_horizontal", x="frames", y="cells", title="cells per frame")
    split_key = "movie"  # with clean.split_by: movie; by position, see split_group

    def credentials(self, cfg: Figure8Conf) -> list[Credential]:
        """Return the API key, sent as `Authorization: Token token=<key>` to the API only."""
        from stages.net.credentials import from_env

        f = cfg.fetch
        where = "sources.figure8.fetch.key_env"
        return [
            from_env(f.key_env, [f.origin], where, header="Authorization", prefix="Token token=")
        ]

    def plan(self, cfg: Figure8Conf, ctx: Context) -> Plan:
        """Read the report, the logs and the raw frames; return the annotations to download."""
        from stages.sources.figure8.fetch import plan

        return plan(cfg, ctx)

    def download(self, cfg: Figure8Conf, rows: list[Row], ctx: Context) -> dict[str, Result]:
        """Download the annotations, checked as PNG whatever their URLs look like (signed
        storage URLs often have no extension)."""
        return ctx.fetch_all([r.url for r in rows], desc="fetch@figure8", kind="png")

    def extractor(self) -> Extractor:
        """Return what cuts montages into label movies beside their raw frames."""
        from stages.sources.figure8.movies import Figure8Extractor

        return Figure8Extractor()

    def cleaner(self) -> Cleaner:
        """Return what cleans every label frame (raw frames pass through; a movie's frames
        share a split)."""
        from stages.sources.figure8.clean import Figure8Cleaner

        return Figure8Cleaner()

    def exporter(self) -> Exporter:
        """Return what writes DeepCell npz files, one per split and part."""
        from stages.sources.figure8.export import Figure8Exporter

        return Figure8Exporter()

    def split_group(self, cfg: Figure8Conf, row: Row) -> tuple[str, str | None]:
        """Return a frame's field of view (recombined movies have one: the whole job), or
        its movie, for the splits."""
        if cfg.clean.split_by is Figure8SplitBy.movie:
            return super().split_group(cfg, row)
        m = row.meta  # chopped movies only: compose refuses position with recombine
        return f"x_{m['x']:02d}_y_{m['y']:02d}", None

    def draw(self, cfg: Figure8Conf, store: Store) -> tuple[bytes, list[dict]]:
        """Return a contact sheet of label frames over raw frames, and cells per frame."""
        from stages.sources.figure8.sheet import draw

        return draw(cfg, store)


SOURCE = Figure8()
