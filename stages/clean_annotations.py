"""clean-annotations stage: drop bad items, fix boxes, map class names to ids, give each item
its group's split, and check the quality gates (exact and near copies, leakage); the work is
the source's cleaner (stages.families.clean, or the source's own)."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from stages.core.config import CleanConf, GatesConf
from stages.core.files import atomic_write
from stages.core.gallery import draw as gallery
from stages.core.gallery import sample
from stages.core.gates import Gate, GateTripped, message, report_csv, sheet
from stages.core.store import Row
from stages.pipeline.entry import run_main, start

log = logging.getLogger("stages.clean_annotations")
EXTRA = {  # optional outputs: paths from dvc.yaml
    "--gates-report": "the quality gates' CSV of copies (pairs, worst first, and drops)",
    "--gates-sheet": "the quality gates' PNG contact sheet of the worst pairs",
    "--splits-plot": "items per split and class, for dvc plots",
    "--gallery": "a PNG of a seeded few items per class, boxes drawn, for dvc plots",
}


def write_gate_report(args, gate: Gate | None, gates: GatesConf, read) -> None:
    """Write the gate report CSV and contact sheet PNG where argv says (empty with gates off)."""
    pairs, drops = (gate.pairs, gate.drops) if gate else ([], [])
    if args.gates_report:
        atomic_write(args.gates_report, report_csv(pairs[: gates.report_max_pairs], drops))
    if args.gates_sheet:  # the worst pairs: what the gates are about, before what dedupe fixed
        atomic_write(args.gates_sheet, sheet([*pairs, *drops], read, gates.sheet_pairs))


def write_gallery(path, rows: list[Row], classes: list[str], cfg: CleanConf, read) -> None:
    """Write the per-class sample gallery (a video's clips by their first frame)."""
    sections = sample(rows, classes, cfg.gallery_per_class, cfg.gallery_seed)
    unlabelled = [r for r in rows if not r.labels]
    if unlabelled:  # e.g. raw frames of a source whose labels are images
        sections += sample([dataclasses.replace(r, labels=["(unlabelled)"]) for r in unlabelled],
                           ["(unlabelled)"], cfg.gallery_per_class, cfg.gallery_seed)  # fmt: skip
    atomic_write(path, gallery([(c, rs) for c, rs in sections if rs], read))


def main(argv: list[str] | None = None) -> int:
    """Run clean-annotations for one source."""
    run = start(argv, "stages.clean_annotations", __doc__, extra=EXTRA)
    args = run.args
    clean, gates = run.section("clean"), run.section("gates")
    with run.inputs() as inputs:
        cleaned = run.source.cleaner().run(inputs, clean, gates)
    metrics = cleaned.metrics
    write_gate_report(args, cleaned.gate, gates, cleaned.read)
    if args.gallery:
        write_gallery(args.gallery, cleaned.gallery, cleaned.names, clean, cleaned.read)
    run.finish(metrics, per_split=metrics["splits"]["classes"])
    if metrics.get("gates", {}).get("tripped"):
        report = run.readable_after_failure(args.gates_report or Path("plots/gates.csv"))
        raise GateTripped(message(args.source, metrics["gates"], f"{report} and its PNG sheet"))
    log.info("clean@%s: %s", args.source, explain(metrics, clean.min_box_size))
    return 0


def explain(metrics: dict, min_box_size: float) -> str:
    """Say what clean kept and why anything was dropped: items, boxes, labels."""
    parts = [f"kept {metrics['items_out']} of {metrics['items_in']} items"]
    if metrics["dropped"]:
        parts[0] += " (dropped: " + ", ".join(f"{k} {v}" for k, v in metrics["dropped"].items())
        parts[0] += ")"
    if metrics.get("boxes_in"):
        why = {
            "boxes_dropped_degenerate": f"under clean.min_box_size {min_box_size:g} px",
            "boxes_dropped_invalid": "not finite",
        }
        lost = [f"{metrics[k]} {text}" for k, text in why.items() if metrics.get(k)]
        parts.append(
            f"{metrics['boxes_out']} of {metrics['boxes_in']} boxes"
            + (f" (dropped: {', '.join(lost)})" if lost else "")
            + (
                f", {metrics['boxes_clamped']} clamped into the image"
                if metrics["boxes_clamped"]
                else ""
            )
        )
    if metrics.get("labels_lost"):
        parts.append(
            "labels lost with their boxes: "
            + ", ".join(f"{k} {v}" for k, v in metrics["labels_lost"].items())
        )
    return "; ".join(parts)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run_main(main)
