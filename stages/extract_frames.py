"""extract-frames stage: a store of frames made from one source's fetched items (decoded video
clips, or what the source's own extractor makes, e.g. Figure Eight's montages cut into movies)."""

from __future__ import annotations

import logging
import os

from stages.pipeline.entry import run_main, start

log = logging.getLogger("stages.extract_frames")


def main(argv: list[str] | None = None) -> int:
    """Run extract-frames for one source with frames."""
    run = start(argv, "stages.extract_frames", __doc__)
    with run.inputs() as inputs:
        metrics = run.source.extractor().run(inputs)
    run.finish(metrics)
    log.info(
        "frames@%s: %d frames from %d clips, %d failed (%s)",
        run.args.source,
        metrics["frames"],
        metrics["clips_ok"],
        metrics["clips_failed"],
        ", ".join(f"{k} {v}" for k, v in metrics["reasons"].items()),
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run_main(main)
