"""Sources reach the downloader only through `Context`; its listings store keeps small JSON."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from stages.net.cache import ObjectCache
from stages.net.listings import Listings
from stages.sources import Context

SOURCES = Path(__file__).resolve().parent.parent / "stages" / "sources"
PUBLIC = {name for name in dir(Context) if not name.startswith("_")} | {"source_name", "listings"}
# The downloader's insides, on whatever object: a source naming one reaches past the context.
FORBIDDEN_ATTRS = {"downloader", "ledger", "_dl"}
FORBIDDEN_IMPORTS = {"stages.net.download", "stages.net.ledger.Ledger", "stages.net.cache"}


def _source_modules() -> list[Path]:
    """Return every module of the source packages (the context's own module aside)."""
    return sorted(p for p in SOURCES.rglob("*.py") if p.parent != SOURCES)


def _violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.parent.name}/{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute):
            on_ctx = isinstance(node.value, ast.Name) and node.value.id == "ctx"
            if on_ctx and node.attr not in PUBLIC:
                found.append(f"{where}: ctx.{node.attr} is not part of Context")
            elif node.attr in FORBIDDEN_ATTRS:
                found.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            if names & FORBIDDEN_IMPORTS:
                found.append(f"{where}: imports {sorted(names & FORBIDDEN_IMPORTS)}")
        elif isinstance(node, ast.Import):
            names = {a.name for a in node.names}
            if names & FORBIDDEN_IMPORTS:
                found.append(f"{where}: imports {sorted(names & FORBIDDEN_IMPORTS)}")
    return found


def test_sources_use_only_the_contexts_public_api():
    modules = _source_modules()
    assert len(modules) > 20  # the scan sees every source package
    found = [v for path in modules for v in _violations(path)]
    assert not found, "sources reach past Context:\n" + "\n".join(found)


def test_the_scan_catches_a_source_reaching_past_the_context(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from stages.net.download import Downloader\n"
        "def plan(cfg, ctx):\n"
        "    ctx.downloader.ledger.put()\n"
        "    ctx._dl.fetch('u')\n"
        "    return ctx.fetch('u')\n"
    )
    text = "\n".join(_violations(bad))
    assert "imports ['stages.net.download']" in text
    assert "ctx.downloader is not part of Context" in text
    assert ".ledger" in text and "ctx._dl is not part of Context" in text
    assert "ctx.fetch" not in text


@pytest.fixture
def listings(tmp_path) -> Listings:
    return Listings(ObjectCache(tmp_path / "cache"), max_bytes=1000)


def test_listings_round_trip_by_key(listings, tmp_path):
    assert listings.get("http://h/a.tar.gz") is None
    assert listings.put("http://h/a.tar.gz", ["b", "a"])
    assert listings.put("http://h/b.tar.gz", {"n": 1})
    assert listings.get("http://h/a.tar.gz") == ["b", "a"]
    assert listings.get("http://h/b.tar.gz") == {"n": 1}
    # A fresh store over the same cache reads what an earlier run kept.
    again = Listings(ObjectCache(tmp_path / "cache"))
    assert again.get("http://h/a.tar.gz") == ["b", "a"]
    # Kept in the cache directory under hashed names, never in the objects or a ledger, and
    # no part file is left behind.
    assert len(list((tmp_path / "cache" / "listings").iterdir())) == 2
    assert not list((tmp_path / "cache" / "tmp").iterdir())
    assert not any(p.is_file() for p in (tmp_path / "cache" / "objects").rglob("*"))
    assert not list((tmp_path / "cache").glob("*.sqlite"))


def test_corrupt_or_foreign_listings_read_as_absent(listings):
    key = "http://h/a.tar.gz"
    listings.put(key, ["a"])
    path = Path(listings.path(key))
    for junk in (
        b"",
        b"[not json",
        b"\xff\xfe",
        b'["a"]',
        json.dumps({"key": "other", "value": 1}),
    ):
        path.write_bytes(junk.encode() if isinstance(junk, str) else junk)
        assert listings.get(key) is None
    path.unlink()
    path.mkdir()  # unreadable as a file
    assert listings.get(key) is None
    os.rmdir(path)
    assert listings.put(key, ["b"]) and listings.get(key) == ["b"]


def test_listings_are_size_capped(listings):
    assert not listings.put("big", ["x" * 2000])  # larger than the cap: not kept
    assert listings.get("big") is None
    assert listings.put("small", ["x" * 100])
    # A document grown past the cap (another run's larger cap) is not read.
    Path(listings.path("small")).write_text(json.dumps({"key": "small", "value": ["x" * 2000]}))
    assert listings.get("small") is None
