"""User-facing errors: a clear message and a non-zero exit, never a traceback."""


class StageError(Exception):
    """Raise for bad input or configuration the user must fix."""

    exit_code = 2


class MetadataError(StageError):
    """Raise for malformed, oversized or unsafe metadata (JSON, CSV, zip)."""


class ConfigError(StageError):
    """Raise for invalid or stale configuration."""
