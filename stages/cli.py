"""Shared entry-point plumbing: logging, user errors, exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from stages.errors import StageError

log = logging.getLogger("stages")


def setup_logging() -> None:
    """Log to stderr, one line per event."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def run_main(main: Callable[[list[str] | None], int]) -> None:
    """Run an entry point; user errors print one clear line and exit non-zero."""
    setup_logging()
    try:
        code = main(None)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; re-run to resume", file=sys.stderr)
        code = 130
    sys.exit(code)
