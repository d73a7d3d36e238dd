"""Quality gates: planted exact, re-encoded, resized, relabelled and leaked copies are found,
and nothing else is; gates trip, dedupe drops and lists, the index search is exact."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools

import numpy as np
import pytest
from PIL import Image

from stages.clean_annotations import write_gate_report
from stages.core.errors import ConfigError
from stages.core.executor import LocalExecutor
from stages.core.gates import (
    CONFLICT,
    CROSS,
    DUPLICATE,
    SEVERITY,
    GateTripped,
    find,
    message,
    near_pairs,
    plan,
)
from stages.core.splits import split_of
from stages.core.store import Row, Store, rebase, write_manifest, write_store
from stages.pipeline.compose import group_defaults
from stages.sources.lila import SOURCE as LILA
from tests.conftest import lila_conf
from tests.families import clean, gate_store

NAMES = ["mule deer", "cougar"]
SPLIT = group_defaults("split")
CLEAN = group_defaults("clean")
GATES = group_defaults("gates")


def picture(seed: int, size=(96, 72)) -> Image.Image:
    """Return a smooth random picture (a coarse random field, upsampled): like a photo, its
    perceptual hash is far from any other seed's."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, quality=90) -> bytes:
    """Return an image as JPEG bytes."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def sites(split: str, n: int, skip=()) -> list[str]:
    """Return n location names whose split is `split`."""
    names = (f"site{i:03d}" for i in itertools.count())
    return list(itertools.islice((s for s in names if split_of(SPLIT, "lila", s) == split
                                  and s not in skip), n))  # fmt: skip


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A fetched LILA store of 24 distinct pictures at 12 train sites, plus planted copies:
    exact, re-encoded, resized, relabelled, and one leaked into a val site."""
    tmp = tmp_path_factory.mktemp("planted")
    train, val = sites("train", 16), sites("val", 1)
    files, rows = {}, []

    def add(item, data, label, site):
        path = tmp / "src" / f"{len(files)}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        files[item] = path
        rows.append(
            Row(item, "lila", item, url=f"http://h/{item}.jpg", labels=[label],
                sha256=hashlib.sha256(data).hexdigest(), meta={"location": site})
        )  # fmt: skip

    for k in range(24):
        add(f"a{k:02d}", jpeg(picture(k)), NAMES[k % 2], train[k // 2])
    add("copy-exact", files["a00"].read_bytes(), NAMES[0], train[12])
    add("copy-reencoded", jpeg(picture(2), quality=55), NAMES[0], train[13])
    add("copy-resized", jpeg(picture(4).resize((64, 48), Image.Resampling.BILINEAR)),
        NAMES[0], train[14])  # fmt: skip
    add("copy-relabelled", jpeg(picture(6), quality=70), NAMES[1], train[15])
    add("copy-leaked", files["a08"].read_bytes(), NAMES[0], val[0])  # a typo'd site id
    # Blank frames (night, lens cap) hash alike however unrelated: not near copies.
    add("flat-black", jpeg(Image.new("RGB", (96, 72))), NAMES[0], train[0])
    add("flat-grey", jpeg(Image.new("RGB", (96, 72), (128,) * 3)), NAMES[1], val[0])
    write_store(tmp / "fetch", rows, lambda r: files[r.item_id], 1 << 20, executor=LocalExecutor(2))
    return Store(tmp / "fetch")


WANT = {
    ("a00", "copy-exact"): ((DUPLICATE,), True),
    ("a02", "copy-reencoded"): ((DUPLICATE,), False),
    ("a04", "copy-resized"): ((DUPLICATE,), False),
    ("a06", "copy-relabelled"): ((CONFLICT,), False),
    ("a08", "copy-leaked"): ((CROSS, DUPLICATE), True),
}


def run(store, **gates):
    """Clean a fresh read of the store with the gates; return (rows, metrics, gate)."""
    rows, _, metrics, gate = clean(
        Store(store.root), LILA, lila_conf(NAMES), CLEAN, SPLIT, group_defaults("gates", **gates)
    )
    return rows, metrics, gate


def variant(planted, out, **changes) -> Store:
    """Return the planted store with some items' (label, site) changed: a manifest pointing
    into the planted shards."""
    rows = [dataclasses.replace(r, meta=dict(r.meta)) for r in planted.rows()]
    by_id = {r.item_id: r for r in rows}
    for item, (label, like) in changes.items():
        by_id[item].labels = [label]
        by_id[item].meta["location"] = by_id[like].meta["location"]  # at `like`'s site
    write_manifest(out, rebase(rows, planted.root, out), NAMES)
    return Store(out)


def test_every_planted_copy_is_found_with_its_kind_and_nothing_else(planted):
    _, metrics, gate = run(planted)
    got = {(p.a.item_id, p.b.item_id): (p.kinds, p.exact) for p in gate.pairs}
    assert got == WANT
    assert [p.b.item_id for p in gate.pairs][:2] == ["copy-leaked", "copy-relabelled"]  # worst
    m = metrics["gates"]
    assert m["totals"] == {DUPLICATE: 4, CONFLICT: 1, CROSS: 1}
    assert m["pairs"][CROSS] == {"exact": 1, "near": 0} and m["pairs_within_group"] == 0
    assert m["flat_images"] == 2 and m["unhashable_images"] == 0
    assert m["tripped"] == [{"gate": "max_cross_split_duplicates", "count": 1, "limit": 0}]
    assert message("lila", m).startswith(
        "lila: quality gates failed: 1 pairs > max_cross_split_duplicates 0"
    )


def test_the_gates_trip_on_what_conf_caps(planted):
    assert run(planted, max_cross_split_duplicates=1)[1]["gates"]["tripped"] == []
    m = run(planted, max_cross_split_duplicates=None, max_label_conflicts=0, max_duplicates=3)
    assert [t["gate"] for t in m[1]["gates"]["tripped"]] == [
        "max_label_conflicts",
        "max_duplicates",
    ]


def test_near_copies_inside_one_split_group_are_set_aside_unless_asked(planted, tmp_path):
    store = variant(planted, tmp_path, **{"copy-reencoded": (NAMES[0], "a02")})
    m = run(store)[1]["gates"]
    assert m["pairs_within_group"] == 1 and m["totals"][DUPLICATE] == 3
    assert run(store, within_group=True)[1]["gates"]["totals"][DUPLICATE] == 4


def test_exact_copies_count_inside_a_group_too(planted, tmp_path):
    # The same bytes at the same site, labelled differently: a label conflict, always.
    store = variant(planted, tmp_path, **{"copy-exact": (NAMES[1], "a00")})
    m = run(store, max_label_conflicts=0)[1]["gates"]
    assert m["pairs"][CONFLICT] == {"exact": 1, "near": 1} and m["pairs_within_group"] == 0
    assert [t["gate"] for t in m["tripped"]] == [
        "max_cross_split_duplicates",
        "max_label_conflicts",
    ]


def test_dedupe_drops_same_label_exact_copies_keeping_the_first_id(planted, tmp_path):
    rows, metrics, gate = run(planted, dedupe=True)
    ids = {r.item_id for r in rows}
    assert "copy-exact" not in ids and "copy-leaked" not in ids and {"a00", "a08"} <= ids
    assert metrics["dropped"]["exact_duplicate"] == 2 and len(rows) == 29
    assert [(p.a.item_id, p.b.item_id, p.kinds, p.action) for p in gate.drops] == [
        ("a00", "copy-exact", (DUPLICATE,), "dropped b"),
        ("a08", "copy-leaked", (CROSS, DUPLICATE), "dropped b"),
    ]
    assert gate.metrics["tripped"] == [] and gate.metrics["dropped_exact_duplicates"] == 2
    assert metrics["splits"]["items"]["val"] == 1  # the leaked copy's site keeps one image
    args = type("Args", (), {"gates_report": tmp_path / "g.csv", "gates_sheet": tmp_path / "g.png"})
    write_gate_report(args, gate, GATES, planted.read)
    table = list(csv.DictReader((tmp_path / "g.csv").open()))
    assert [(r["b_item"], r["action"]) for r in table[:2]] == [
        ("copy-exact", "dropped b"),
        ("copy-leaked", "dropped b"),
    ]
    assert {r["b_item"] for r in table[2:]} == {"copy-reencoded", "copy-resized", "copy-relabelled"}
    assert table[1]["a_split"] == "train" and table[1]["b_split"] == "val"


def test_dedupe_keeps_exact_copies_labelled_differently(planted, tmp_path):
    store = variant(planted, tmp_path, **{"copy-exact": (NAMES[1], "a00")})
    rows, metrics, gate = run(store, dedupe=True)
    assert "copy-exact" in {r.item_id for r in rows}
    assert gate.metrics["pairs"][CONFLICT]["exact"] == 1


def test_only_the_worst_pairs_are_kept_as_objects(planted):
    rows = Store(planted.root).rows()
    for r in rows:
        r.split = "train"
    codes = [bytes(8)] * len(rows)  # every picture alike: all pairs are near copies
    found = find(rows, codes, [r.item_id for r in rows], [r.item_id for r in rows], GATES, 5)
    n = len(rows) * (len(rows) - 1) // 2
    assert (
        len(found.pairs) == 5 and sum(found.counts[k]["near"] for k in (DUPLICATE, CONFLICT)) == n
    )


def test_the_report_and_sheet_are_deterministic_and_name_both_sides(planted, tmp_path):
    outs = []
    for k in range(2):
        gate = run(planted)[2]
        args = type(
            "A", (), {"gates_report": tmp_path / f"{k}.csv", "gates_sheet": tmp_path / f"{k}.png"}
        )
        write_gate_report(args, gate, GATES, planted.read)
        outs.append(((tmp_path / f"{k}.csv").read_bytes(), (tmp_path / f"{k}.png").read_bytes()))
    assert outs[0] == outs[1]
    first = next(csv.DictReader(io.StringIO(outs[0][0].decode())))
    assert (first["kind"], first["match"], first["a_item"], first["b_item"]) == (
        "cross_split+duplicate", "exact", "a08", "copy-leaked")  # fmt: skip
    assert (first["a_labels"], first["a_source_id"], first["b_split"]) == (
        "mule deer",
        "a08",
        "val",
    )
    with Image.open(io.BytesIO(outs[0][1])) as im:
        assert im.format == "PNG" and im.height >= 5 * 160  # the 5 pairs, side by side


def test_no_copies_give_an_empty_report_and_a_placeholder_sheet(tmp_path):
    args = type("A", (), {"gates_report": tmp_path / "g.csv", "gates_sheet": tmp_path / "g.png"})
    write_gate_report(args, None, GATES, None)
    assert (tmp_path / "g.csv").read_text().startswith("kind,match,distance,action,a_item")
    assert len((tmp_path / "g.csv").read_text().splitlines()) == 1
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


def brute(codes: np.ndarray, radius: int) -> set:
    """Return all pairs within radius by comparing every pair (the reference)."""
    bits = np.unpackbits(codes, axis=1).astype(np.int16)
    d = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    i, j = np.nonzero(np.triu(d <= radius, k=1))
    return {(a, b, int(d[a, b])) for a, b in zip(i.tolist(), j.tolist(), strict=True)}


@pytest.mark.parametrize("nbytes, radius", [(8, 0), (8, 4), (8, 10), (2, 3), (32, 12)])
def test_the_index_finds_exactly_the_pairs_all_pairs_finds(nbytes, radius):
    rng = np.random.default_rng(radius)
    codes = rng.integers(0, 256, (600, nbytes), dtype=np.uint8)
    for a, b in rng.integers(0, 600, (60, 2)):  # near copies at every distance up to radius+2
        flip = np.unpackbits(codes[a])
        flip[rng.choice(flip.size, rng.integers(0, radius + 3), replace=False)] ^= 1
        codes[b] = np.packbits(flip)
    got = {tuple(p) for p in near_pairs(codes, radius)[0].tolist()}
    assert got == brute(codes, radius) and len(got) >= 10


def test_pairs_sharing_a_group_are_set_aside_in_chunks():
    rng = np.random.default_rng(7)
    codes = np.repeat(rng.integers(0, 256, (50, 8), dtype=np.uint8), 4, axis=0)  # 50 x 4 alike
    group = np.arange(200) // 6  # groups of 6 cut across the sets of 4 copies
    every = brute(codes, 2)
    kept, skipped = near_pairs(codes, 2, same=group, chunk=7)
    inside = {p for p in every if group[p[0]] == group[p[1]]}
    assert {tuple(p) for p in kept.tolist()} == every - inside and len(kept) > 0
    assert skipped == len(inside) > 0


def test_the_plan_probes_few_buckets_and_stays_exact():
    assert plan(100_000, 64, 4) == (3, 21, 1) and plan(100_000, 64, 6) == (4, 16, 1)
    for n, bits, r in itertools.product((10, 10_000, 10_000_000), (16, 64, 256), (0, 3, 8)):
        tables, width, flips = plan(n, bits, r)
        assert tables * width <= bits and flips == r // tables  # pigeonhole: none missed


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"max_distance": 32}, "max_distance must be 0..31"),
        ({"hash_size": 1}, "hash_size must be 2..16"),
        ({"max_label_conflicts": -1}, "max_label_conflicts must be >= 0"),
        ({"hash": "md5"}, "hash"),
        ({"max_cross_split": 0}, "max_cross_split"),
    ],
)
def test_bad_gate_settings_fail_at_compose(changes, match):
    with pytest.raises(ConfigError, match=match):
        group_defaults("gates", **changes)


def test_a_tripped_gate_is_a_stage_error():
    assert issubclass(GateTripped, Exception) and GateTripped("x").exit_code == 2


def test_a_sources_own_store_is_gated_on_its_pictures(planted):
    gate = gate_store(Store(planted.root), LILA, lila_conf(NAMES), GATES)
    # Splits are clean-annotations' to set: an unsplit store's copies are all one split.
    assert {(p.a.item_id, p.b.item_id) for p in gate.pairs} == set(WANT)
    assert gate.metrics["totals"][CROSS] == 0


def test_find_agrees_with_comparing_every_pair(tmp_path):
    rng = np.random.default_rng(11)
    for trial in range(20):
        n = int(rng.integers(0, 40))
        rows = [
            Row(f"i{k:02d}", "s", f"s{k}", labels=[NAMES[int(rng.integers(0, 2))]],
                split=["train", "val"][int(rng.integers(0, 2))])
            for k in rng.permutation(n).tolist()
        ]  # fmt: skip
        base = rng.integers(0, 256, (4, 8), dtype=np.uint8)
        codes, digests, groups = [], [], []
        for _ in rows:
            kind = rng.integers(0, 10)
            if kind == 0:
                codes.append(b"")  # flat
            elif kind == 1:
                codes.append(None)  # unhashable
            else:
                bits = np.unpackbits(base[rng.integers(0, 4)])
                bits[rng.choice(64, rng.integers(0, 7), replace=False)] ^= 1
                codes.append(np.packbits(bits).tobytes())
            digests.append(f"d{rng.integers(0, n // 3 + 1)}")
            groups.append(f"g{rng.integers(0, 4)}")
        for within in (False, True):
            cfg = group_defaults("gates", within_group=within)
            found = find(rows, codes, digests, groups, cfg, 10_000)
            want, apart = {}, 0
            for x, y in itertools.combinations(range(n), 2):
                exact = digests[x] == digests[y]
                d = None
                if codes[x] and codes[y]:
                    d = int(np.unpackbits(np.frombuffer(codes[x], np.uint8)
                            ^ np.frombuffer(codes[y], np.uint8)).sum())  # fmt: skip
                near = d is not None and d <= cfg.max_distance
                if not (exact or near):
                    continue
                if not exact and groups[x] == groups[y] and not within:
                    apart += 1
                    continue
                a, b = sorted((rows[x], rows[y]), key=lambda r: r.item_id)
                want[(a.item_id, b.item_id)] = (exact, 0 if exact else d)
            got = {(p.a.item_id, p.b.item_id): (p.exact, p.distance) for p in found.pairs}
            assert got == want, (trial, within)
            assert found.within_group == apart
            assert found.flat == codes.count(b"") and found.unhashable == codes.count(None)
            conflicts = sum(1 for p in found.pairs if CONFLICT in p.kinds)
            assert sum(found.counts[CONFLICT].values()) == conflicts
            keys = [(min(SEVERITY[k] for k in p.kinds), not p.exact, p.distance,
                     p.a.item_id, p.b.item_id) for p in found.pairs]  # fmt: skip
            assert keys == sorted(keys)
