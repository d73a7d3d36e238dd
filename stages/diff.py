"""diff: which items changed between two versions of the dataset, per class, and the params
that differ.

    python -m stages.diff [A] [B] [--source S] [--stage fetch|frames|clean]
                          [--format table|json|csv]

A and B are git revisions (commits, branches, tags) or `dvc exp` names; as with `git diff`,
A defaults to HEAD and B to the workspace. Manifests are read without checking anything out
(stages.pipeline.revisions): from DVC's local cache, else from the remote.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from stages.core.files import atomic_write
from stages.core.gallery import draw as gallery
from stages.core.itemdiff import KINDS, ItemDiff, compare, params_diff
from stages.core.store import Row
from stages.pipeline.entry import run_main
from stages.pipeline.revisions import (
    Revision,
    RevisionError,
    payload,
    read_params,
    read_rows,
    resolve,
)

STAGES = ("fetch", "frames", "clean")
GALLERY = 12  # items drawn per source and kind of change


def sources_of(params: dict, stage: str) -> set[str]:
    """Return the sources a revision builds with an output for the stage."""
    sources = set((params.get("sources") or {}).keys())
    if stage == "frames":
        sources &= set((params.get("frame_sources") or {}).keys())
    return sources


def diff_versions(
    root: Path, a: Revision, b: Revision, stage: str, only: str | None = None
) -> dict:
    """Return per source the item diff (and which side lacks it), plus the params diff."""
    pa_, pb = read_params(root, a), read_params(root, b)
    have_a, have_b = sources_of(pa_, stage), sources_of(pb, stage)
    if only is not None:
        for rev, have in ((a, have_a), (b, have_b)):
            if only not in have:
                raise RevisionError(
                    f"source {only!r} has no {stage} output at {rev.label}: that revision "
                    f"predates it or does not build it (sources there: "
                    f"{', '.join(sorted(have)) or 'none'})"
                )
    names = [only] if only is not None else sorted(have_a | have_b)
    out = {}
    for name in names:
        where = f"data/{name}/{stage}"
        old = read_rows(root, a, where) if name in have_a else []
        new = read_rows(root, b, where) if name in have_b else []
        out[name] = {
            "diff": compare(old, new),
            "items": (len(old), len(new)),
            "missing": [r.label for r, h in ((a, have_a), (b, have_b)) if name not in h],
        }
    return {"sources": out, "params": params_diff(pa_, pb)}


def show(value) -> str:
    """Return a param value as YAML would show it, on one line."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def table(result: dict, a: Revision, b: Revision, stage: str) -> str:
    """Return the diff as text tables, one per source, then the params."""
    lines = [f"diff {a.label} -> {b.label}, stage {stage}"]
    for name, part in result["sources"].items():
        d: ItemDiff = part["diff"]
        n_a, n_b = part["items"]
        note = f" (not at {', '.join(part['missing'])})" if part["missing"] else ""
        lines += ["", f"source {name}: {n_a} -> {n_b} items{note}"]
        head = f"{'class':<28}" + "".join(f"{k:>11}" for k in KINDS)
        lines += [head, "-" * len(head)]
        for cls, counts in d.per_class().items():
            lines.append(f"{cls[:27]:<28}" + "".join(f"{counts[k]:>11}" for k in KINDS))
        totals = d.totals()
        lines.append(f"{'total (items)':<28}" + "".join(f"{totals[k]:>11}" for k in KINDS))
        lines.append(f"unchanged: {d.unchanged}")
    lines += ["", "params that differ:" if result["params"] else "params: no differences"]
    lines += [f"  {p['key']}: {show(p['a'])} -> {show(p['b'])}" for p in result["params"]]
    return "\n".join(lines) + "\n"


def as_json(result: dict, a: Revision, b: Revision, stage: str) -> str:
    """Return the diff as JSON, listing every changed item with both versions of its fields."""
    sources = {}
    for name, part in result["sources"].items():
        d: ItemDiff = part["diff"]
        sources[name] = {
            "items": {"a": part["items"][0], "b": part["items"][1]},
            "missing_at": part["missing"],
            "totals": d.totals(),
            "unchanged": d.unchanged,
            "classes": d.per_class(),
            "changed": [
                {
                    "item_id": c.item_id,
                    "source_id": c.source_id,
                    "changes": c.kinds,
                    "fields": c.fields(),
                }
                for c in d.items
            ],  # fmt: skip
        }
    doc = {
        "a": {"rev": a.name, "commit": a.commit},
        "b": {"rev": b.name, "commit": b.commit},
        "stage": stage,
        "sources": sources,
        "params": result["params"],
    }
    return json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"


def as_csv(result: dict) -> str:
    """Return the changed items as CSV: ids, kinds of change, both versions of the fields."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["source", "item_id", "source_id", "changes", "field", "a", "b"])
    for name, part in result["sources"].items():
        for c in part["diff"].items:
            for fname, pair in c.fields().items():
                a, b = (json.dumps(pair[s], sort_keys=True) for s in ("a", "b"))
                out.writerow([name, c.item_id, c.source_id, "+".join(c.kinds), fname, a, b])
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Print which items changed between two versions."""
    ap = argparse.ArgumentParser(prog="python -m stages.diff", description=__doc__.split("\n")[0])
    ap.add_argument("a", nargs="?", default="HEAD", help="older version (default HEAD)")
    ap.add_argument("b", nargs="?", default=None, help="newer version (default the workspace)")
    ap.add_argument("--source", help="one source (default: every source)")
    ap.add_argument("--stage", choices=STAGES, default="clean")
    ap.add_argument("--format", choices=("table", "json", "csv"), default="table")
    ap.add_argument("--repo", type=Path, default=Path("."), help="repository (default: here)")
    ap.add_argument(
        "--gallery", type=Path, help="also draw the added, removed and relabelled items (PNG)"
    )
    args = ap.parse_args(argv)
    root = args.repo.resolve()
    a, b = resolve(root, args.a), resolve(root, args.b)
    result = diff_versions(root, a, b, args.stage, args.source)
    if args.format == "json":
        text = as_json(result, a, b, args.stage)
    elif args.format == "csv":
        text = as_csv(result)
    else:
        text = table(result, a, b, args.stage)
    sys.stdout.write(text)
    if args.gallery:
        atomic_write(args.gallery, picture(root, result, a, b, args.stage))
    return 0


def picture(root: Path, result: dict, a: Revision, b: Revision, stage: str) -> bytes:
    """Return a gallery of each source's first GALLERY added, removed and relabelled items,
    each drawn from the version it shows (relabelled: the newer one, with both labels)."""
    sections, where, opened = [], {}, {}
    for name, part in result["sources"].items():
        out_dir = f"data/{name}/{stage}"
        for kind, rev, side in (("added", b, "b"), ("removed", a, "a"), ("relabelled", b, "b")):
            picked = [c for c in part["diff"].items if kind in c.kinds][:GALLERY]
            rows = [getattr(c, side) for c in picked]
            for c, r in zip(picked, rows, strict=True):
                where[id(r)] = (rev, out_dir, c)
            sections.append((f"{name}: {kind}", rows))

    def read(row: Row) -> bytes | None:
        rev, out_dir, _ = where[id(row)]
        return payload(root, rev, out_dir, row, opened)

    def caption(row: Row) -> tuple[str, str]:
        c = where[id(row)][2]
        if "relabelled" in c.kinds:
            return c.item_id, f"{', '.join(c.a.labels) or '-'} -> {', '.join(c.b.labels) or '-'}"
        return c.item_id, ", ".join(row.labels) or "-"

    return gallery([(t, rs) for t, rs in sections if rs], read, caption)


if __name__ == "__main__":
    run_main(main)
