"""User-facing errors: a clear message and a non-zero exit, never a traceback."""


class StageError(Exception):
    """Raise for bad input or configuration the user must fix."""

    exit_code = 2


class MetadataError(StageError):
    """Raise for malformed, oversized or unsafe metadata (JSON, CSV, zip)."""


class CorruptMetadata(MetadataError):
    """Raise for metadata whose bytes are damaged (truncated, not UTF-8, bad archive): a
    fresh download may fix it, unlike a structure or limit problem."""


class ConfigError(StageError):
    """Raise for invalid or stale configuration."""


class StoreError(StageError):
    """Raise for a missing or damaged item store (run the upstream stage again)."""


class TransientFailures(StageError):
    """Raise when items failed transiently: the stage is incomplete, a re-run resumes it."""

    exit_code = 75  # EX_TEMPFAIL: distinct from bad input or configuration (2)
