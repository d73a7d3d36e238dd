"""Splits are drawn per group, stable as groups are added, close to the fractions asked."""

from __future__ import annotations

import pytest

from stages.core.errors import ConfigError, MetadataError
from stages.core.splits import (
    assign,
    check,
    group_key,
    own_split,
    report,
    split_metrics,
    split_of,
    summary,
)
from stages.pipeline.compose import group_defaults

CFG = group_defaults("split")


def test_the_shipped_conf_validates():
    assert CFG.names == ["train", "val", "test"] and sum(CFG.fractions) == pytest.approx(1)


def test_adding_groups_never_moves_a_group():
    before = assign(CFG, "lila", [f"loc{i}" for i in range(1000)])
    after = assign(CFG, "lila", [f"loc{i}" for i in range(1100)])  # 10% more locations
    assert all(after[g] == s for g, s in before.items())
    assert set(before.values()) == set(CFG.names)


def test_the_fractions_are_met_as_groups_allow():
    groups = assign(CFG, "lila", [f"loc{i}" for i in range(20_000)])
    items = [(s, ["deer"]) for s in groups.values()]
    got = report(CFG, items, groups, ["deer"])["fractions_achieved"]
    for name, want in zip(CFG.names, CFG.fractions, strict=True):
        assert got[name] == pytest.approx(want, abs=0.01)


def test_the_seed_and_the_source_change_the_draw():
    ids = [f"cam{i}" for i in range(200)]
    base = assign(CFG, "videodir", ids)
    other_seed = assign(group_defaults("split", seed=1), "videodir", ids)
    other_source = assign(CFG, "kinetics", ids)
    assert base != other_seed and base != other_source
    assert assign(CFG, "videodir", reversed(ids)) == base  # order does not matter


def test_a_zero_fraction_split_gets_nothing():
    cfg = group_defaults("split", fractions=[0.9, 0.0, 0.1])
    assert "val" not in {split_of(cfg, "s", f"g{i}") for i in range(2000)}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"fractions": [0.8, 0.1, 0.2]}, "sum to 1.1, not 1"),
        ({"fractions": [0.9, 0.1]}, "must be as many"),
        ({"names": ["train", "train", "test"]}, "repeats a name"),
        ({"names": ["train", "../val", "test"]}, "is not a split name"),
        ({"fractions": [1.1, -0.1, 0.0]}, r"fractions\[1\] must be >= 0"),
        ({"on_empty_class": "ignore"}, "on_empty_class"),
    ],
)
def test_bad_split_settings_fail_at_compose(changes, message):
    with pytest.raises(ConfigError, match=message):
        group_defaults("split", **changes)


def test_a_sources_own_split_must_be_a_known_name():
    assert own_split(CFG, "val", "kinetics CSV") == "val"
    with pytest.raises(MetadataError, match=r"split 'validate' is not one of split.names"):
        own_split(CFG, "validate", "kinetics CSV")


def test_an_item_without_its_group_key_is_one_clear_error():
    assert group_key({"location": 7}, "location", "img1", "lila") == "7"
    with pytest.raises(ConfigError, match=r"item 'img1' has no 'location'.*\['seq_id'\]"):
        group_key({"seq_id": "s1"}, "location", "img1", "lila")


def test_a_class_missing_from_a_split_warns_or_stops():
    groups = {"a": "train", "b": "val", "c": "test"}
    items = [("train", ["deer", "cougar"]), ("val", ["deer"]), ("test", ["deer"])]
    metrics = report(CFG, items, groups, ["deer", "cougar"])
    assert metrics["items"] == {"train": 1, "val": 1, "test": 1}
    assert metrics["classes"]["train"] == {"deer": 1, "cougar": 1}
    assert metrics["empty_classes"] == [
        {"class": "cougar", "split": "val"},
        {"class": "cougar", "split": "test"},
    ]
    assert check(CFG, metrics, "lila") == [
        "lila: class 'cougar' has no items in split 'val'",
        "lila: class 'cougar' has no items in split 'test'",
    ]
    strict = group_defaults("split", on_empty_class="error")
    with pytest.raises(MetadataError) as err:
        check(strict, metrics, "lila")
    assert str(err.value) == (
        "lila: 2 class/split pairs have no items: cougar (val), cougar (test) "
        "(split.on_empty_class: error)"
    )


def test_empty_class_split_pairs_are_one_line_per_source(caplog):
    from stages.core.store import Row

    classes = [f"class {k}" for k in range(10)]
    units = [
        Row(f"i{k}", "lila", f"i{k}", labels=[c], split="train") for k, c in enumerate(classes)
    ]
    units[0].split = "val"  # class 0 misses train and test; every other class val and test
    with caplog.at_level("WARNING", logger="stages.splits"):
        metrics = split_metrics(CFG, units, {}, classes, "lila")
    (record,) = [r for r in caplog.records if r.name == "stages.splits"]
    assert record.getMessage() == (
        "lila: 20 class/split pairs have no items: class 0 (train), class 0 (test), "
        "class 1 (val), class 1 (test), class 2 (val), class 2 (test), class 3 (val), "
        "class 3 (test), and 12 more"
    )
    # The metrics keep every pair, one warning each, as before.
    assert len(metrics["empty_classes"]) == 20 and len(metrics["warnings"]) == 20
    assert metrics["warnings"][0] == "lila: class 'class 0' has no items in split 'train'"
    strict = group_defaults("split", on_empty_class="error")
    with pytest.raises(MetadataError) as err:
        split_metrics(strict, units, {}, classes, "lila")
    assert str(err.value).startswith("lila: 20 class/split pairs have no items: class 0 (train)")
    assert "class 9 (test)" in str(err.value) and "more" not in str(err.value)
    one = summary([{"class": "vehicle", "split": "test"}], "lila")
    assert one == "lila: 1 class/split pair has no items: vehicle (test)"


@pytest.mark.parametrize(
    "source, meta, group, own",
    [
        ("lila", {"location": 12, "seq_id": "s9"}, "12", None),
        ("lila-sequence", {"location": 12, "seq_id": "s9"}, "s9", None),
        ("tator", {"media": 31, "frame": 4}, "31", None),
        ("videodir", {"camera": "lobby", "timestamp": "2024-05-01T12:00:00Z"}, "lobby", None),
        ("kinetics", {"youtube_id": "abc", "split": "val"}, "abc", "val"),
        ("kinetics", {"youtube_id": "abc", "split": None}, "abc", None),
    ],
)
def test_each_source_groups_its_near_copies(source, meta, group, own):
    from stages.core.store import Row
    from stages.pipeline.compose import source_defaults
    from stages.sources import load

    source, _, by = source.partition("-")
    cfg = source_defaults(source, **({"clean": {"split_by": by}} if by else {}))
    row = Row(item_id="x", source=source, source_id="x", url="", meta=meta)
    assert load(source).split_group(cfg, row) == (group, own)
