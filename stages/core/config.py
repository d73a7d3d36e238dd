"""Config schemas (Hydra structured configs) for every conf group, and typed loading.

Every setting's value lives in `conf/` (the one place for defaults); these schemas say which
keys exist and what types they take, so a typo or a wrong type fails when conf/ is composed,
with the key's path and close matches, instead of in the middle of a stage.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Optional, TypeVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from stages.core.errors import ConfigError

T = TypeVar("T")


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

    workers: int = MISSING
    source_workers: dict[str, int] = MISSING
    connect_timeout: float = MISSING
    low_speed_limit: int = MISSING
    low_speed_time: float = MISSING
    attempt_timeout: float = MISSING
    max_item_bytes: int = MISSING
    max_redirects: int = MISSING
    retries: int = MISSING
    backoff: float = MISSING
    backoff_max: float = MISSING
    retry_after_max: float = MISSING
    verify_decode: bool = MISSING
    retry_permanent: bool = MISSING
    refresh: bool = MISSING
    allow_transient_failures: bool = MISSING
    keep_cache: bool = MISSING

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

    shard_bytes: int = MISSING

    def __post_init__(self) -> None:
        positive("store", shard_bytes=self.shard_bytes)


@dataclass
class CleanConf:
    """clean-annotations, for every source (`conf/clean/`)."""

    decode_check: bool = MISSING
    min_box_size: float = MISSING
    drop_unlabeled: bool = MISSING
    min_frames: int = MISSING  # video: clips with fewer clean frames are dropped
    gallery_per_class: int = MISSING  # items per class on plots/gallery.png (0: none)
    gallery_seed: int = MISSING

    def __post_init__(self) -> None:
        non_negative("clean", min_box_size=self.min_box_size)
        non_negative("clean", gallery_per_class=self.gallery_per_class)
        positive("clean", min_frames=self.min_frames)


class OnEmpty(Enum):
    """What a class with no items in some split is."""

    warn = "warn"  # a warning in the metrics
    error = "error"  # the stage stops


SPLIT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass
class SplitConf:
    """Train/val/test splits, assigned per group of near copies (`conf/split/`)."""

    names: list[str] = MISSING
    fractions: list[float] = MISSING
    seed: int = MISSING
    on_empty_class: OnEmpty = MISSING

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

    enabled: bool = MISSING
    hash: HashKind = MISSING
    hash_size: int = MISSING
    max_distance: int = MISSING
    within_group: bool = MISSING
    max_duplicates: Optional[int] = MISSING  # noqa: UP045 (omegaconf reads Optional)
    max_label_conflicts: Optional[int] = MISSING  # noqa: UP045
    max_cross_split_duplicates: Optional[int] = MISSING  # noqa: UP045
    dedupe: bool = MISSING
    sheet_pairs: int = MISSING
    report_max_pairs: int = MISSING

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

    height: int = MISSING
    width: int = MISSING
    aspect: Aspect = MISSING
    pad_value: int = MISSING
    items_per_shard: int = MISSING
    compress: bool = MISSING
    frames: int = MISSING  # video: T evenly spaced frames per clip
    clips_per_shard: int = MISSING  # video: a clip is T images, so shards count fewer

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

    short_side: Optional[int] = MISSING  # noqa: UP045 - OmegaConf needs typing.Optional
    fps: Optional[float] = MISSING  # noqa: UP045
    num_frames: Optional[int] = MISSING  # noqa: UP045
    quality: int = MISSING
    interpolation: Interpolation = MISSING

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

    host: str = MISSING
    project: int = MISSING
    media_type: int = MISSING  # a video media type declaring the attributes below
    token_env: str = MISSING
    hash_attribute: str = MISSING  # string attribute: the file's sha256 (the identity)
    camera_attribute: str = MISSING
    timestamp_attribute: str = MISSING
    short_side_attribute: Optional[str] = MISSING  # noqa: UP045 - null: short_side not sent
    class_attribute: str = MISSING  # labels: a localization's or state's class
    versions: list[int] = MISSING  # labels: annotation versions read (empty: all)
    page_size: int = MISSING
    media_per_query: int = MISSING
    max_response_bytes: int = MISSING

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

    section: Optional[str] = MISSING  # noqa: UP045 - OmegaConf needs typing.Optional
    short_side: Optional[int] = MISSING  # noqa: UP045


@dataclass
class ImportConf:
    """import@<source>: a video folder sent to an annotation platform (`import_to:`)."""

    enabled: bool = MISSING
    target: TargetKind = MISSING
    folder: str = MISSING  # the folder target's root, relative to the repository
    tator: TatorImport = MISSING
    shard_size: int = MISSING
    workers: int = MISSING
    section: Optional[str] = MISSING  # noqa: UP045 - null: the camera's name
    short_side: Optional[int] = MISSING  # noqa: UP045 - what the target should transcode to
    cameras: dict[str, CameraImport] = MISSING

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
        over = self.cameras.get(camera)
        out = {}
        for key in ("section", "short_side"):
            value = getattr(over, key) if over is not None else None
            out[key] = getattr(self, key) if value is None else value
        if out["section"] is None:
            out["section"] = camera
        return out


class ExecutorKind(Enum):
    """Where a stage's per-item work runs."""

    local = "local"  # this machine's threads and processes
    dask = "dask"  # a Dask distributed cluster


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
    retries: int = MISSING
    allowed_failures: int = MISSING
    resources: dict[str, float] = MISSING
    wait_workers: int = MISSING
    wait_timeout: float = MISSING

    def __post_init__(self) -> None:
        positive(
            "executor",
            window=self.window,
            items_per_task=self.items_per_task,
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

    enabled: bool = MISSING
    classes: list[str] = MISSING
    fetch: Any = MISSING
    clean: NoSettings = MISSING
    export: NoSettings = MISSING
    exports: list[Layout] = MISSING

    def __post_init__(self) -> None:
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


def _explain(exc: OmegaConfBaseException, where: str, prefix: str) -> str:
    """Turn an OmegaConf error into one line: file, key path, and close matches."""
    key = getattr(exc, "full_key", None) or "?"
    key = f"{prefix}.{key}" if prefix else key
    if isinstance(exc, ConfigKeyError):
        kind = getattr(exc, "object_type", None)
        names = [f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind) else []
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
        return f"{where}: unknown key {key!r}{hint}"
    if isinstance(exc, MissingMandatoryValue):
        return f"{where}: {key!r} is required but not set"
    message = str(getattr(exc, "msg", exc)).splitlines()[0]
    return f"{where}: {key!r}: {message}"


def typed(schema: type[T], data: Any, where: str = "config", prefix: str = "") -> T:
    """Validate data against a schema and return it as the schema's dataclass.

    `where` names the file or group in messages, `prefix` the data's key path (`fetch`).
    """
    try:
        node = OmegaConf.merge(OmegaConf.structured(schema), data or {})
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as exc:
        raise ConfigError(_explain(exc, where, prefix)) from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def plain(obj: Any) -> Any:
    """Return a schema dataclass as plain data (enums as their names), as params.yaml holds it."""
    return OmegaConf.to_container(OmegaConf.structured(obj), enum_to_str=True)


def validate(schema: type, data: Any, where: str = "config", prefix: str = "") -> dict:
    """Validate data against a schema; return it as plain data with only the schema's keys."""
    return plain(typed(schema, data, where, prefix))
