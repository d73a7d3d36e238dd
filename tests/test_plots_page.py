"""`dvc plots show` draws offline: the page carries vega, vega-lite and vega-embed itself.

A real headless Chromium (tests/tools/browser/render.js) opens the page with every request but
file: ones aborted and recorded; DVC's default page, opened the same way, is the control that
shows the check can fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from dvc_render.html import PAGE_HTML
from dvc_render.vega import VegaRenderer

from stages.pipeline import plots_page
from tests.conftest import ROOT, Project, git

BROWSER = ROOT / "tests" / "tools" / "browser"
TEMPLATE = ROOT / ".dvc" / "plots-page" / "template.html"
# An attribute, CSS url() or import that loads a non-local URL (http:, https:, or
# protocol-relative). A spec's "$schema" URL names the grammar and is never fetched.
REMOTE_LOAD = re.compile(
    r"""(?:\b(?:src|srcset|href)\s*=\s*["']?|\burl\(\s*["']?|@import\s+["']?"""
    r"""|\bimport\s*\(?\s*["']|\bfrom\s*["'])\s*(?:https?:|//)""",
    re.I,
)
# DVC embeds each chart as `var spec = <json>; vegaEmbed('#<div id>', spec);`, and a plot with
# no rows as the empty spec `{}`, which draws nothing with any template.
CHART = re.compile(r"var spec = (\{.*?\});\s*vegaEmbed\('#([^']+)', spec\);", re.S)


@pytest.fixture
def plots_project(built, tmp_path) -> Project:
    """Clone the session's build (all five sources): its plots are committed, and the clone is
    this test's to change."""
    git(tmp_path, "clone", "-q", str(built.path), str(tmp_path / "clone"))
    return Project(tmp_path / "clone", tmp_path / "clone-cache")


def test_pins_are_the_versions_dvc_render_names():
    """Pin exactly the scripts DVC's own page would load from its CDN."""
    named = dict(re.findall(r"npm/([\w-]+)@([\d.]+)", VegaRenderer.SCRIPTS))
    assert set(named) == {"vega", "vega-lite", "vega-embed"}
    plots_dir = ROOT / ".dvc" / "plots-page"
    package = json.loads((plots_dir / "package.json").read_text())
    lock = json.loads((plots_dir / "package-lock.json").read_text())["packages"]
    assert package["dependencies"] == named
    assert {name: lock[f"node_modules/{name}"]["version"] for name in named} == named


def test_script_tag_cannot_end_early_or_be_filled_by_dvc():
    js = 'a("</script>");b="</SCRIPT ";\n//# sourceMappingURL=x.min.js.map\n'
    tag = plots_page.script_tag("x", js)
    assert tag.lower().count("</script") == 1 and tag.endswith("</script>")
    assert '"<\\/script>"' in tag and '"<\\/SCRIPT "' in tag
    assert "sourceMappingURL" not in tag
    for bad in ("{plot_divs}", "{scripts}", "{refresh_tag}", "<!--"):
        with pytest.raises(plots_page.PlotsPageError, match=re.escape(bad)):
            plots_page.script_tag("x", f"a='{bad}'")


def test_missing_install_is_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stages.pipeline.plots_page", "--plots-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "make .venv" in lines[0]
    assert not (tmp_path / "template.html").exists()


def render(*pages) -> dict:
    """Open pages in one headless Chromium launch; return render.js's report."""
    proc = subprocess.run(
        ["node", str(BROWSER / "render.js"), *map(str, pages)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"render.js exited {proc.returncode}\n{proc.stderr}"
    return json.loads(proc.stdout)


def charts(html: str) -> dict[str, bool]:
    """Map each chart div id on a page to whether its spec has data."""
    return {div: spec != "{}" for spec, div in CHART.findall(html)}


def test_plots_show_draws_every_chart_offline(plots_project, tmp_path):
    for need in (TEMPLATE, BROWSER / "node_modules" / ".installed"):
        if not need.exists():
            pytest.fail(f"{need} is missing: `make test` builds it (npm ci)")
    proj = plots_project
    # .dvc/config names the template; it is generated, not committed, so a clone has it once
    # `make` ran there. Put this checkout's copy where the clone's config looks.
    assert proj.dvc("config", "plots.html_template").stdout.strip() == "plots-page/template.html"
    shutil.copyfile(TEMPLATE, proj.path / ".dvc" / "plots-page" / "template.html")
    ours = tmp_path / "ours"
    proj.dvc("plots", "show", "-o", str(ours))
    # Control: DVC's default page (its CDN script tags), the same plots.
    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML)
    theirs = tmp_path / "theirs"
    proj.dvc("plots", "show", "-o", str(theirs), "--html-template", str(default))

    html = (ours / "index.html").read_text()
    pins = re.findall(r"npm/([\w-]+)@([\d.]+)", VegaRenderer.SCRIPTS)
    assert ", ".join(f"{name} {version}" for name, version in pins) in html  # our template
    assert REMOTE_LOAD.findall(html) == []
    assert "<script src" not in html
    control = (theirs / "index.html").read_text()
    assert len(REMOTE_LOAD.findall(control)) == 3  # the check sees DVC's CDN tags

    expected = charts(html)
    assert charts(control) == expected
    drawable = {div for div, has_data in expected.items() if has_data}
    assert {"data_lila_plots_fetch_json", "data_lila_plots_clean_json"} <= drawable

    report = render(ours / "index.html", theirs / "index.html")
    page, blank = report["pages"]

    assert page["requests"] == [], "the page asked the network for something"
    assert page["errors"] == []
    assert [c["id"] for c in page["charts"]] == list(expected)
    for chart in page["charts"]:
        assert chart["embed"] == {"state": "ok"}, chart
        if chart["id"] in drawable:
            assert chart["kind"] in ("svg", "canvas"), chart
            assert chart["width"] > 0 and chart["height"] > 0 and chart["ink"] > 0, chart
    assert page["images"], "LILA's clean stage draws gallery.png and gates.png"
    for image in page["images"]:
        assert image["complete"] and image["naturalWidth"] > 0, image

    # With the network cut off, DVC's own page asks the CDN and draws nothing.
    assert sorted(blank["requests"]) == sorted(re.findall(r'src="([^"]+)"', VegaRenderer.SCRIPTS))
    assert not blank["hasVegaEmbed"]
    assert len(blank["charts"]) == len(expected)
    for chart in blank["charts"]:
        assert chart["ink"] == 0 and chart["embed"] == {"state": "never called"}, chart
