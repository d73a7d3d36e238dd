"""Run one stage family's implementation the way its stage entry does, on a test's store."""

from __future__ import annotations

from pathlib import Path

from stages.core.config import CleanConf, ExportConf, GatesConf, SourceConf, SplitConf
from stages.core.executor import Executor, LocalExecutor
from stages.core.gates import Gate
from stages.core.store import Row, Store
from stages.families import Inputs
from stages.families.clean import gate_rows
from stages.families.export import ImageExporter
from stages.pipeline.compose import CONF_DIR, group_defaults
from stages.pipeline.executors import load_conf


def local(workers: int) -> LocalExecutor:
    """Return a local executor of `workers` with conf/executor/local.yaml's settings."""
    return LocalExecutor(workers, load_conf(CONF_DIR, {"DSREPO_EXECUTOR": "local"}))


def inputs(
    source,
    cfg: SourceConf,
    store: Store,
    out_dir: Path,
    *,
    shard_bytes: int = 1 << 20,
    executor: Executor | None = None,
    workers: int = 2,
    split: SplitConf | None = None,
) -> Inputs:
    """Return a stage family's inputs (a local executor of `workers` unless one is given)."""
    return Inputs(
        source=source,
        cfg=cfg,
        store=store,
        out_dir=Path(out_dir),
        shard_bytes=shard_bytes,
        executor=executor if executor is not None else local(workers),
        split=split if split is not None else group_defaults("split"),
    )


def extract_frames(
    store: Store,
    source,
    cfg: SourceConf,
    out_dir: Path,
    shard_bytes: int,
    workers: int | None = 2,
    executor: Executor | None = None,
) -> tuple[list[Row], dict]:
    """Run the source's extractor; return the frames store's rows and the metrics."""
    run = inputs(
        source, cfg, store, out_dir, shard_bytes=shard_bytes, executor=executor,
        workers=workers or 2,
    )  # fmt: skip
    metrics = source.extractor().run(run)
    return Store(out_dir).rows(), metrics


def clean(
    store: Store,
    source,
    cfg: SourceConf,
    clean_cfg: CleanConf,
    split: SplitConf,
    gates: GatesConf | None = None,
    executor: Executor | None = None,
) -> tuple[list[Row], list[str], dict, Gate | None]:
    """Return the source's image cleaner's rows, class names, metrics and gate (nothing
    written)."""
    run = inputs(source, cfg, store, store.root / "unused", executor=executor, split=split)
    return source.cleaner().clean(run, clean_cfg, gates)


def clean_store(
    store: Store,
    source,
    cfg: SourceConf,
    out_dir: Path,
    shard_bytes: int = 1 << 20,
    executor: Executor | None = None,
    split: SplitConf | None = None,
    gates: GatesConf | None = None,
):
    """Run the source's cleaner as the stage does; return what it hands the stage."""
    run = inputs(
        source, cfg, store, out_dir, shard_bytes=shard_bytes, executor=executor, split=split
    )
    gates = gates if gates is not None else group_defaults("gates", enabled=False)
    return source.cleaner().run(run, group_defaults("clean"), gates)


def export_splits(
    store: Store,
    source,
    cfg: SourceConf,
    export: ExportConf,
    out_dir: Path,
    splits: list[str] | None = None,
    executor: Executor | None = None,
) -> dict:
    """Run the source's exporter over every split; return the metrics."""
    split = group_defaults("split")
    if splits is not None:
        split = group_defaults("split", names=splits, fractions=[1.0 / len(splits)] * len(splits))
    run = inputs(source, cfg, store, out_dir, executor=executor, split=split)
    return source.exporter().run(run, export)


def export(rows, store: Store, names, cfg: ExportConf, out_dir: Path, executor=None) -> dict:
    """Write one split's image shards; return its metrics."""
    return ImageExporter().export(rows, store, names, cfg, Path(out_dir), executor or local(2))


def gate_store(store: Store, source, cfg: SourceConf, gates: GatesConf, executor=None) -> Gate:
    """Check the gates over every ok row of a store."""
    rows = [r for r in store.rows() if r.status == "ok" and r.shard]
    return gate_rows(inputs(source, cfg, store, store.root, executor=executor), store, rows, gates)
