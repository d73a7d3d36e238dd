"""export-npz stage: training arrays from one source's clean store, one set per split
(`npz/<split>/...`, in the order of split.names); the work is the source's exporter
(stages.families.export, or the source's own)."""

from __future__ import annotations

import logging

from stages.pipeline.entry import run_main, start

log = logging.getLogger("stages.export_npz")


def main(argv: list[str] | None = None) -> int:
    """Run export-npz for one source."""
    run = start(
        argv,
        "stages.export_npz",
        __doc__,
        extra={"--splits-plot": "items per split and class, for dvc plots"},
    )
    with run.inputs() as inputs:
        metrics = run.source.exporter().run(inputs, run.section("export"))
    run.finish(metrics, per_split={s: m["classes"] for s, m in metrics["splits"].items()})
    log.info(
        "export@%s: %d items in %d shards", run.args.source, metrics["items"], metrics["shards"]
    )
    return 0


if __name__ == "__main__":
    run_main(main)
