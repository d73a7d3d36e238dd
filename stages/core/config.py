"""Config schemas (Hydra structured configs) for every conf group, and typed loading.

Every setting's value lives in `conf/` (the one place for defaults); these schemas say which
keys exist and what types they take, so a typo or a wrong type fails when conf/ is composed,
with the key's path and close matches, instead of in the middle of a stage.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Optional, TypeVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from stages.core.errors import ConfigError

T = TypeVar("T")


def setting(doc: str) -> Any:
    """Return a schema field with its explanation; its value comes from conf/ only."""
    # The explanation lives here, not only in conf/'s comments: `dvc exp run -S` rewrites a
    # conf file through a YAML dump that drops comment lines between keys.
    return dataclasses.field(default=MISSING, metadata={"doc": doc})


def overlay(base: Any, over: Any | None, keys: tuple[str, ...]) -> dict[str, Any]:
    """Return base's values of `keys` with over's non-null values on top (per-camera
    overrides of the global settings)."""
    out = {}
    for key in keys:
        value = getattr(over, key) if over is not None else None
        out[key] = getattr(base, key) if value is None else value
    return out


def positive(where: str, **values: float) -> None:
    """Raise unless every value is > 0."""
    for key, value in values.items():
        if value is None or value <= 0:
            raise ConfigError(f"{where}.{key} must be > 0, not {value!r}")


def non_negative(where: str, **values: float | None) -> None:
    """Raise unless every value is >= 0 (None, meaning "no limit", passes)."""
    for key, value in values.items():
        if value is not None and value < 0:
            raise ConfigError(f"{where}.{key} must be >= 0, not {value!r}")


@dataclass
class FetchConf:
    """The downloader shared by every source (`conf/fetch/`)."""

    workers: int = setting(
        "Transfers in flight (pooled keep-alive connections on one libcurl multi)."
    )
    source_workers: dict[str, int] = setting(
        "Per source, overriding workers: an API that answers each item slowly needs more transfers "
        "in flight to hide its round trips (Tator: ~50 ms a frame)."
    )
    connect_timeout: float = setting("Seconds to establish a connection.")
    low_speed_limit: int = setting(
        "Bytes/s: a transfer slower than this for low_speed_time seconds is retried."
    )
    low_speed_time: float = setting(
        "Seconds a transfer may stay below low_speed_limit before it is retried."
    )
    attempt_timeout: float = setting(
        "Seconds: the deadline of one attempt, however fast it trickles."
    )
    max_item_bytes: int = setting(
        "Cap on one downloaded item in bytes, enforced during the transfer."
    )
    max_redirects: int = setting("Redirects followed per attempt (each one re-scopes credentials).")
    retries: int = setting(
        "Extra attempts per file on connection errors, timeouts, 408, 425, 429 and 5xx."
    )
    backoff: float = setting("First backoff in seconds; it doubles each attempt, with jitter.")
    backoff_max: float = setting("Cap on one backoff, in seconds.")
    retry_after_max: float = setting("Cap on a server's Retry-After, in seconds.")
    verify_decode: bool = setting(
        "Fully decode each image on download (slower; its structure is always checked)."
    )
    retry_permanent: bool = setting(
        "Retry items an earlier run recorded as missing or corrupt (404, 410, damaged at the "
        "source)."
    )
    refresh: bool = setting(
        "true: download every item again, even those an earlier run or build holds (for an upstream"
        " that changes files in place; resuming is lost while set)."
    )
    allow_transient_failures: bool = setting(
        "false: exit non-zero (75) while transient failures remain, so DVC records no half-built "
        "dataset and a re-run resumes; true: finish with them recorded as failed."
    )
    keep_cache: bool = setting(
        "true: keep downloaded objects after packing (else they are deleted from the download cache"
        " once packed and verified)."
    )

    def __post_init__(self) -> None:
        positive(
            "fetch",
            workers=self.workers,
            connect_timeout=self.connect_timeout,
            low_speed_time=self.low_speed_time,
            attempt_timeout=self.attempt_timeout,
            max_item_bytes=self.max_item_bytes,
        )
        positive("fetch.source_workers", **self.source_workers)
        non_negative(
            "fetch",
            low_speed_limit=self.low_speed_limit,
            max_redirects=self.max_redirects,
            retries=self.retries,
            backoff=self.backoff,
            backoff_max=self.backoff_max,
            retry_after_max=self.retry_after_max,
        )


@dataclass
class StoreConf:
    """The item store (`conf/store/`)."""

    shard_bytes: int = setting("Bound on one tar shard of the item store, in bytes.")

    def __post_init__(self) -> None:
        positive("store", shard_bytes=self.shard_bytes)


@dataclass
class CleanConf:
    """clean-annotations, for every source (`conf/clean/`)."""

    decode_check: bool = setting(
        "Fully decode every image; undecodable ones are dropped as corrupt."
    )
    min_box_size: float = setting(
        "Boxes narrower or shorter than this many pixels (after clamping) are dropped."
    )
    drop_unlabeled: bool = setting("Drop items with no label among the selected classes.")
    min_frames: int = setting(
        "Video: clips with fewer frames after cleaning are dropped; keep it >= export.frames."
    )
    gallery_per_class: int = setting(
        "Items per class drawn with their boxes on plots/gallery.png, a DVC plot image (0: none)."
    )
    gallery_seed: int = setting(
        "Which items the gallery draws: the first by a rank of their ids seeded by this."
    )

    def __post_init__(self) -> None:
        non_negative("clean", min_box_size=self.min_box_size)
        non_negative("clean", gallery_per_class=self.gallery_per_class)
        positive("clean", min_frames=self.min_frames)


class OnEmpty(Enum):
    """What a class with no items in some split is."""

    warn = "warn"  # a warning in the report
    error = "error"  # the stage stops


SPLIT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass
class SplitConf:
    """Train/val/test splits, assigned per group of near copies (`conf/split/`)."""

    names: list[str] = setting("Split names, in order; they name folders (npz/<split>/).")
    fractions: list[float] = setting(
        "One fraction per name, summing to 1: each split's share of the groups' seeded draws."
    )
    seed: int = setting("Seeds every group's draw; changing it moves groups between splits.")
    on_empty_class: OnEmpty = setting(
        "A class with no items in a split: warn (in the report and the log) or error (the stage "
        "stops)."
    )

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.fractions):
            raise ConfigError(
                f"split.names ({len(self.names)}) and split.fractions "
                f"({len(self.fractions)}) must be as many, and at least one"
            )
        for name in self.names:
            if not SPLIT_NAME.fullmatch(name):
                raise ConfigError(
                    f"split.names: {name!r} is not a split name (lower case letters, digits, "
                    "_ and -, starting with a letter: it names folders)"
                )
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"split.names repeats a name: {self.names}")
        non_negative("split", **{f"fractions[{i}]": f for i, f in enumerate(self.fractions)})
        total = sum(self.fractions)
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"split.fractions {self.fractions} sum to {total:g}, not 1")


class HashKind(Enum):
    """A perceptual hash from imagehash for the near-duplicate gates."""

    phash = "phash"  # DCT of the luminance: robust to re-encoding and resizing
    dhash = "dhash"  # gradients between neighbours
    average = "average"  # above or below the mean


@dataclass
class GatesConf:
    """Duplicate and leakage gates, checked by clean-annotations (`conf/gates/`)."""

    enabled: bool = setting(
        "Check a source's clean dataset for exact copies (same bytes) and near copies (perceptual "
        "hashes): duplicates, label conflicts and cross-split leakage."
    )
    hash: HashKind = setting(
        "Perceptual hash for near copies: imagehash's phash, dhash or average."
    )
    hash_size: int = setting("Side of the hash: hash_size squared bits (8: 64-bit hashes).")
    max_distance: int = setting(
        "Near copies: at most this many differing bits (re-encoding or resizing moves a phash 0-2; "
        "unrelated pictures are ~32 apart)."
    )
    within_group: bool = setting(
        "Also count near copies inside one split group (a clip's frames, a site's burst), which are"
        " alike by nature and never leak; exact copies (same bytes) always count."
    )
    max_duplicates: Optional[int] = setting(  # noqa: UP045
        "Gate: most pairs of copies with the same labels, in any split (null: reported only)."
    )
    max_label_conflicts: Optional[int] = setting(  # noqa: UP045
        "Gate: most pairs of copies with different labels (null: reported only)."
    )
    max_cross_split_duplicates: Optional[int] = setting(  # noqa: UP045
        "Gate: most pairs of copies in two splits, i.e. leakage (null: reported only)."
    )
    dedupe: bool = setting(
        "Drop exact copies with the same labels, keeping the first by item id (listed in the "
        "report); images only, never a video's frames."
    )
    sheet_pairs: int = setting("Pairs drawn on the contact sheet plots/gates.png, worst first.")
    report_max_pairs: int = setting(
        "Pairs listed in plots/gates.csv, worst first (drops are always all listed)."
    )

    def __post_init__(self) -> None:
        if not 2 <= self.hash_size <= 16:
            raise ConfigError(
                f"gates.hash_size must be 2..16 (bits: its square), not {self.hash_size}"
            )
        if not 0 <= self.max_distance < self.hash_size**2 // 2:
            raise ConfigError(
                f"gates.max_distance must be 0..{self.hash_size**2 // 2 - 1} for "
                f"{self.hash_size**2}-bit hashes (half the bits matches unrelated images), not "
                f"{self.max_distance}"
            )
        non_negative(
            "gates",
            max_duplicates=self.max_duplicates,
            max_label_conflicts=self.max_label_conflicts,
            max_cross_split_duplicates=self.max_cross_split_duplicates,
            sheet_pairs=self.sheet_pairs,
            report_max_pairs=self.report_max_pairs,
        )


class Aspect(Enum):
    """How export-npz fits an image into the output size."""

    pad = "pad"
    stretch = "stretch"
    crop = "crop"


@dataclass
class ExportConf:
    """export-npz, for every source (`conf/export/`)."""

    height: int = setting("Height of export-npz's images, in pixels.")
    width: int = setting("Width of export-npz's images, in pixels.")
    aspect: Aspect = setting(
        "How an image fits height x width: pad (letterbox, keeps the aspect), stretch, or crop "
        "(center crop)."
    )
    pad_value: int = setting("Grey level 0..255 of the padding (aspect: pad).")
    items_per_shard: int = setting("Images per npz shard.")
    compress: bool = setting("Deflate the arrays inside the npz (smaller, slower to load).")
    frames: int = setting("Video: T evenly spaced frames per clip (X is N,T,H,W,3).")
    clips_per_shard: int = setting(
        "Video: clips per npz shard (a clip is T images: 64 x 16 x 224 x 224 x 3 is 154 MB)."
    )

    def __post_init__(self) -> None:
        positive(
            "export",
            height=self.height,
            width=self.width,
            items_per_shard=self.items_per_shard,
            frames=self.frames,
            clips_per_shard=self.clips_per_shard,
        )
        if not 0 <= self.pad_value <= 255:
            raise ConfigError(f"export.pad_value must be 0..255, not {self.pad_value}")


class Interpolation(Enum):
    """The scaler's filter when extract-frames resizes (swscale's names)."""

    bilinear = "BILINEAR"
    bicubic = "BICUBIC"
    area = "AREA"
    fast_bilinear = "FAST_BILINEAR"


@dataclass
class FramesConf:
    """extract-frames, in a video source's `frames:` section."""

    short_side: Optional[int] = setting(  # noqa: UP045 - OmegaConf needs typing.Optional
        "Resize so the short side is this many pixels (even dimensions, aspect kept); null: native "
        "size."
    )
    fps: Optional[float] = setting(  # noqa: UP045
        "Resample to this many frames per second (never above the native rate); null: native rate."
    )
    num_frames: Optional[int] = setting(  # noqa: UP045
        "N evenly spaced frames per clip; null: every frame of the window."
    )
    quality: int = setting("JPEG quality, 1..100.")
    interpolation: Interpolation = setting(
        "Scaler filter for resizing: bilinear, bicubic, area or fast_bilinear."
    )

    def __post_init__(self) -> None:
        check_frames("frames", self)


def check_frames(where: str, frames) -> None:
    """Check frame settings (None: native size, rate, all frames; or, in a per-camera
    override, the global value)."""
    for key in ("short_side", "fps", "num_frames"):
        if getattr(frames, key) is not None:
            positive(where, **{key: getattr(frames, key)})
    if frames.quality is not None and not 1 <= frames.quality <= 100:
        raise ConfigError(f"{where}.quality must be 1..100, not {frames.quality}")


class TargetKind(Enum):
    """Where import@<source> sends files (stages/targets/)."""

    folder = "folder"  # a directory tree (tests, air-gapped use)
    tator = "tator"  # a Tator project, through the real client's upload path


@dataclass
class TatorImport:
    """The `tator` target: where files go, the attributes they carry, how labels come back."""

    host: str = setting(
        "scheme://host[:port] of the Tator server files go to: https only (loopback aside); the "
        "token is sent there only."
    )
    project: int = setting("Id of the Tator project.")
    media_type: int = setting(
        "Id of a video media type declaring the hash, camera and timestamp attributes (checked "
        "before any upload)."
    )
    token_env: str = setting("Environment variable holding the API token (never the token itself).")
    hash_attribute: str = setting(
        "String attribute holding the file's sha256: how files already there are found."
    )
    camera_attribute: str = setting("String attribute holding the file's camera.")
    timestamp_attribute: str = setting("Datetime attribute holding the file's time (UTC).")
    short_side_attribute: Optional[str] = setting(  # noqa: UP045
        "Int attribute carrying a camera's short_side (null: not sent)."
    )
    class_attribute: str = setting(
        "labels@: the attribute holding a localization's or state's class."
    )
    versions: list[int] = setting("labels@: annotation version ids read (empty: every version).")
    page_size: int = setting("Objects per list request.")
    media_per_query: int = setting("Media ids per localization or state list request.")
    max_response_bytes: int = setting("Cap on one API response body, in bytes.")

    def __post_init__(self) -> None:
        from stages.core.origins import parse_origins

        where = "import_to.tator"
        positive(
            where,
            project=self.project,
            media_type=self.media_type,
            page_size=self.page_size,
            media_per_query=self.media_per_query,
            max_response_bytes=self.max_response_bytes,
        )
        # The token goes to this host: https only (loopback aside), checked before it is read.
        parse_origins([self.host], f"{where}.host", secret=True)
        self.host = self.host.rstrip("/")
        for key in ("hash", "camera", "timestamp", "short_side", "class"):
            name = getattr(self, f"{key}_attribute")
            if name is not None and (not name.strip() or "," in name or "::" in name):
                raise ConfigError(
                    f"{where}.{key}_attribute {name!r}: name an attribute (no `,` or `::`: "
                    "Tator's filters use them)"
                )


@dataclass
class CameraImport:
    """Per-camera import settings: null keeps the global value (Camio's hook data)."""

    section: Optional[str] = setting(  # noqa: UP045 - OmegaConf needs typing.Optional
        "This camera's section (folder) on the target; null: the global import_to.section."
    )
    short_side: Optional[int] = setting(  # noqa: UP045
        "This camera's transcode size in pixels; null: the global import_to.short_side."
    )


@dataclass
class ImportConf:
    """import@<source>: a video folder sent to an annotation platform (`import_to:`)."""

    enabled: bool = setting("true adds the import@<source> and labels@<source> stages.")
    target: TargetKind = setting(
        "Where files go: tator (a Tator project) or folder (a directory tree: tests, air-gapped "
        "use)."
    )
    folder: str = setting("The folder target's root, relative to the repository root.")
    tator: TatorImport = MISSING
    shard_size: int = setting("Files per shard of the import job.")
    workers: int = setting("Files sent at once.")
    section: Optional[str] = setting(  # noqa: UP045
        "The section (folder) files go to; null: the camera's name."
    )
    short_side: Optional[int] = setting(  # noqa: UP045
        "What the target should transcode to, in pixels (null: as is); sent in the attribute "
        "import_to.tator.short_side_attribute names."
    )
    cameras: dict[str, CameraImport] = setting(
        "Per camera (the regex's camera group), both keys (section, short_side); null keeps the "
        "global value."
    )

    def __post_init__(self) -> None:
        positive("import_to", shard_size=self.shard_size, workers=self.workers)
        for name, cam in [("", self), *self.cameras.items()]:
            where = f"import_to.cameras.{name}" if name else "import_to"
            if cam.short_side is not None:
                positive(where, short_side=cam.short_side)
            if cam.section is not None and not cam.section.strip():
                raise ConfigError(f"{where}.section is blank: name a section, or null")
            if (
                self.target is TargetKind.tator
                and cam.short_side is not None
                and self.tator.short_side_attribute is None
            ):
                raise ConfigError(
                    f"{where}.short_side is set but import_to.tator.short_side_attribute is "
                    "null: Tator transcodes as its media type says; name the media attribute "
                    "that carries the size"
                )

    def for_camera(self, camera: str) -> dict:
        """Return one camera's settings: its values over the global ones."""
        out = overlay(self, self.cameras.get(camera), ("section", "short_side"))
        if out["section"] is None:
            out["section"] = camera
        return out


class ExecutorKind(Enum):
    """Where a stage's per-item work runs."""

    local = "local"  # this machine's threads and processes
    dask = "dask"  # a Dask distributed cluster


@dataclass
class ExecutorTLS:
    """TLS certificate files for a Dask cluster: paths to PEM files, never their contents."""

    ca_file: Optional[str] = MISSING  # noqa: UP045
    cert: Optional[str] = MISSING  # noqa: UP045
    key: Optional[str] = MISSING  # noqa: UP045

    def __post_init__(self) -> None:
        # Either none (no TLS files) or enough to prove who this client is.
        named = [k for k in ("ca_file", "cert", "key") if getattr(self, k)]
        if named and not (self.ca_file and self.cert):
            raise ConfigError(
                "executor.security needs ca_file and cert (and key, unless cert holds it), "
                f"not only {', '.join(named)}"
            )
        for key in named:
            if "\n" in getattr(self, key) or "-----BEGIN" in getattr(self, key):
                raise ConfigError(
                    f"executor.security.{key} must name a file: never put a certificate or key "
                    "in conf"
                )


@dataclass
class ExecutorConf:
    """Where the per-item work of the stages runs (`conf/executor/`, chosen at run time).

    Never part of params.yaml: where a build runs is the machine's business, not the
    dataset's, and outputs are the same bytes whichever executor makes them.
    """

    kind: ExecutorKind = MISSING
    workers: Optional[int] = MISSING  # noqa: UP045 - OmegaConf needs typing.Optional
    address: Optional[str] = MISSING  # noqa: UP045
    scheduler_file: Optional[str] = MISSING  # noqa: UP045
    cluster: Optional[dict[str, Any]] = MISSING  # noqa: UP045
    scale: Optional[dict[str, Any]] = MISSING  # noqa: UP045
    adapt: Optional[dict[str, Any]] = MISSING  # noqa: UP045
    window: int = MISSING
    items_per_task: int = MISSING
    frame_memory: int = MISSING
    retries: int = MISSING
    allowed_failures: int = MISSING
    resources: dict[str, float] = MISSING
    wait_workers: int = MISSING
    wait_timeout: float = MISSING
    dashboard_address: str = MISSING
    security: ExecutorTLS = MISSING
    allow_insecure: bool = MISSING

    def __post_init__(self) -> None:
        if not self.dashboard_address.strip():
            raise ConfigError("executor.dashboard_address is blank: give host:port")
        positive(
            "executor",
            window=self.window,
            items_per_task=self.items_per_task,
            frame_memory=self.frame_memory,
            wait_timeout=self.wait_timeout,
        )
        non_negative(
            "executor",
            workers=self.workers,
            retries=self.retries,
            allowed_failures=self.allowed_failures,
            wait_workers=self.wait_workers,
        )
        if self.kind is ExecutorKind.dask:
            given = [k for k in ("address", "scheduler_file", "cluster") if getattr(self, k)]
            if len(given) > 1:
                raise ConfigError(f"executor: give one of {', '.join(given)}, not several")
            if self.scale and self.adapt:
                raise ConfigError("executor: give scale or adapt, not both")
            if (self.scale or self.adapt) and not self.cluster:
                raise ConfigError("executor: scale and adapt apply to a `cluster` it starts")
            if self.cluster and "_target_" not in self.cluster:
                raise ConfigError(
                    "executor.cluster needs `_target_` (e.g. dask_jobqueue.SLURMCluster)"
                )


GROUPS: dict[str, type] = {
    "fetch": FetchConf,
    "store": StoreConf,
    "clean": CleanConf,
    "split": SplitConf,
    "gates": GatesConf,
    "export": ExportConf,
}


class Layout(Enum):
    """A folder layout stages.export_folders writes (and export-folders@<source>-<layout>)."""

    classes = "classes"  # <label>/<item>.jpg
    voc = "voc"  # Pascal VOC: JPEGImages/, Annotations/, ImageSets/Main/, labelmap.txt
    coco = "coco"  # COCO: images/, annotations/instances_default.json
    frames = "frames"  # video: <label>/<clip>/image_00001.jpg
    mmaction = "mmaction"  # video: <label>/<clip>/img_00001.jpg


VIDEO_LAYOUTS = (Layout.frames, Layout.mmaction)  # need a frames store (a video source)


@dataclass
class NoSettings:
    """A stage section for which a source has no settings of its own (`{}` in its conf)."""


@dataclass
class SourceConf:
    """What every `conf/source/<name>.yaml` holds; a source narrows the stage sections.

    Settings are split by the stage that reads them, so that dvc.yaml can make each stage
    depend on its own part only (a cleaning setting never re-runs fetch).
    """

    # Whether `classes` may be empty: the source then discovers them from the data (sorted)
    # and records them in its manifest.
    allow_no_classes: ClassVar[bool] = False

    enabled: bool = setting(
        "Whether this source is built: true adds its stages (disabled sources are still checked at "
        "compose)."
    )
    classes: list[str] = setting(
        "Class names; their order fixes the class ids used by clean-annotations and export-npz."
    )
    fetch: Any = MISSING
    clean: NoSettings = MISSING
    export: NoSettings = MISSING
    exports: list[Layout] = setting(
        "Folder layouts export-folders@<source>-<layout> builds from the clean store (classes, voc,"
        " coco; video sources also frames, mmaction)."
    )

    def __post_init__(self) -> None:
        odd = [c for c in self.classes if not isinstance(c, str)]
        if odd:
            raise ConfigError(f"classes must list class names, not {odd}")
        names = [c.strip() for c in self.classes]
        if not all(names) or (not names and not self.allow_no_classes):
            raise ConfigError("classes is empty or has a blank name: list the class names")
        if len({n.lower() for n in names}) != len(names):
            raise ConfigError(f"classes has duplicates: {names}")
        self.classes = names


@dataclass
class VideoSourceConf(SourceConf):
    """A source whose items are videos: it adds the `frames:` section extract-frames reads."""

    frames: FramesConf = MISSING


@dataclass(frozen=True)
class Setting:
    """One leaf setting a schema declares: its key path (`*` for any key of a mapping), type
    and explanation."""

    key: str
    kind: Any
    doc: str | None


def inner(kind: Any) -> Any:
    """Return the type an Optional wraps (any other type as it is)."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if typing.get_origin(kind) is typing.Union and len(args) == 1 else kind


def settings(schema: type, prefix: str = "") -> list[Setting]:
    """Return a schema's leaf settings in declaration order, sections entered (a mapping of
    sections both as itself and as `<key>.*.<leaf>`)."""
    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        kind, key = hints[f.name], f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(inner(kind)):
            out += settings(inner(kind), key)
            continue
        out.append(Setting(key, kind, f.metadata.get("doc")))
        args = typing.get_args(inner(kind))
        if typing.get_origin(inner(kind)) is dict and dataclasses.is_dataclass(args[1]):
            out += settings(args[1], f"{key}.*")
    return out


def setting_at(schema: type, key: str) -> Setting | None:
    """Return the schema's setting at a key path (`cameras.lobby.fps`), or the one holding it
    (`caps.empty` is in `caps`)."""
    parts = re.sub(r"\[[^]]*\]", "", key).split(".")
    known = settings(schema)
    for n in range(len(parts), 0, -1):
        for s in known:
            want = s.key.split(".")
            if len(want) == n and all(w in ("*", p) for w, p in zip(want, parts, strict=False)):
                return s
    return None


def _explain(
    exc: OmegaConfBaseException, where: str, prefix: str, schema: type | None = None
) -> str:
    """Turn an OmegaConf error into one line: file, key path, close matches, and what the key
    (or the one it was probably meant to be) sets."""
    rel = getattr(exc, "full_key", None) or "?"
    key = f"{prefix}.{rel}" if prefix else rel
    if isinstance(exc, ConfigKeyError):
        kind = getattr(exc, "object_type", None)
        fields = (
            {f.name: f for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else {}
        )
        names = list(fields)
        leaf = key.rsplit(".", 1)[-1]
        if kind is NoSettings:
            stage = key.rsplit(".", 2)[-2] if key.count(".") >= 1 else "?"
            return (
                f"{where}: unknown key {key!r}; this source has no {stage} settings of its "
                f"own (the shared ones are in conf/{stage}/)"
            )
        close = difflib.get_close_matches(leaf, names, n=3, cutoff=0.6)
        hint = (
            f"; did you mean {' or '.join(close)}?"
            if close
            else (f"; known keys: {', '.join(names)}" if names else "")
        )
        doc = fields[close[0]].metadata.get("doc") if close else None
        about = f" {close[0]}: {doc}" if doc else ""  # the likeliest meaning only
        return f"{where}: unknown key {key!r}{hint}{about}"
    found = setting_at(schema, rel) if schema is not None and rel != "?" else None
    about = f". {found.key.rsplit('.', 1)[-1]}: {found.doc}" if found and found.doc else ""
    if isinstance(exc, MissingMandatoryValue):
        return f"{where}: {key!r} is required but not set{about}"
    message = str(getattr(exc, "msg", exc)).splitlines()[0]
    return f"{where}: {key!r}: {message}{about}"


def typed(schema: type[T], data: Any, where: str = "config", prefix: str = "") -> T:
    """Validate data against a schema and return it as the schema's dataclass.

    `where` names the file or group in messages, `prefix` the data's key path (`fetch`).
    """
    try:
        node = OmegaConf.merge(OmegaConf.structured(schema), data or {})
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as exc:
        raise ConfigError(_explain(exc, where, prefix, schema)) from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def plain(obj: Any) -> Any:
    """Return a schema dataclass as plain data (enums as their names), as params.yaml holds it."""
    return OmegaConf.to_container(OmegaConf.structured(obj), enum_to_str=True)


def validate(schema: type, data: Any, where: str = "config", prefix: str = "") -> dict:
    """Validate data against a schema; return it as plain data with only the schema's keys."""
    return plain(typed(schema, data, where, prefix))
