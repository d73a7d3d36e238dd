"""Write .dvc/plots-page/template.html: DVC's plots page with its chart scripts inlined."""

# `dvc plots show` fills the template `plots.html_template` names in .dvc/config. DVC's own
# page loads the three scripts from a CDN, so offline every chart is blank; this one carries
# them as npm installed them from .dvc/plots-page/package-lock.json, and has no `{scripts}`
# placeholder, so DVC adds no CDN tags. The Makefile runs `npm ci --prefix .dvc/plots-page`, then
# this module.

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from stages.core.errors import StageError
from stages.core.files import atomic_write

PLOTS_DIR = Path(__file__).resolve().parents[2] / ".dvc" / "plots-page"
# The packages' standalone browser builds, in load order: vega-lite and vega-embed expect the
# globals the ones before them define.
BUILDS = (
    ("vega", "build/vega.min.js"),
    ("vega-lite", "build/vega-lite.min.js"),
    ("vega-embed", "build/vega-embed.min.js"),
)
# dvc_render fills a template by plain text replacement of these names.
PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")
# A map comment would point the browser's devtools at a file the page does not ship.
SOURCE_MAP = re.compile(r"^//# sourceMappingURL=\S*\s*\Z", re.M)
SCRIPT_END = re.compile(r"</(script)", re.I)

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{{refresh_tag}}
<title>DVC Plot</title>
<!-- python -m stages.pipeline.plots_page, from .dvc/plots-page/package-lock.json: {versions} -->
{scripts}
<style>
table {{ border-spacing: 15px; }}
</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


class PlotsPageError(StageError):
    """Raise when the installed scripts are missing, stale or cannot be inlined."""


def script_tag(name: str, js: str) -> str:
    """Return one build as an inline <script>, so the HTML parser cannot end it early."""
    if "<!--" in js:
        # Inside a script, `<!--` switches the parser into its escaped states, where a later
        # `<script` changes how `</script>` is read; no escape for it is valid in all JS
        # contexts, so refuse rather than ship a page that may break.
        raise PlotsPageError(f"{name}'s build contains '<!--'; it cannot be inlined safely")
    for placeholder in PLACEHOLDERS:
        if placeholder in js:
            raise PlotsPageError(
                f"{name}'s build contains {placeholder}, which DVC would replace in the page"
            )
    js = SCRIPT_END.sub(r"<\\/\1", SOURCE_MAP.sub("", js))
    return f"<script>/* {name} */\n{js}\n</script>"


def installed_version(plots_dir: Path, name: str) -> str:
    """Return the version of `name` in node_modules, checked against the lockfile's."""
    lock = json.loads((plots_dir / "package-lock.json").read_text(encoding="utf-8"))
    locked = lock["packages"][f"node_modules/{name}"]["version"]
    meta = plots_dir / "node_modules" / name / "package.json"
    version = json.loads(meta.read_text(encoding="utf-8"))["version"]
    if version != locked:
        raise PlotsPageError(
            f"{meta} is {name} {version} but package-lock.json pins {locked}: run `make .venv`"
        )
    return version


def render(plots_dir: Path = PLOTS_DIR) -> str:
    """Return the template text, the three builds inlined in load order."""
    scripts, versions = [], []
    for name, rel in BUILDS:
        path = plots_dir / "node_modules" / name / rel
        if not path.is_file():
            raise PlotsPageError(
                f"{path} is missing: run `make .venv` "
                f"(npm ci --prefix {plots_dir} installs the plots page's scripts)"
            )
        version = installed_version(plots_dir, name)
        scripts.append(script_tag(f"{name} {version}", path.read_text(encoding="utf-8")))
        versions.append(f"{name} {version}")
    return PAGE.format(versions=", ".join(versions), scripts="\n".join(scripts))


def main(argv: list[str] | None = None) -> int:
    """Write the template atomically (a page being rendered never reads half of it)."""
    ap = argparse.ArgumentParser(prog="python -m stages.pipeline.plots_page", description=__doc__)
    ap.add_argument("--plots-dir", type=Path, default=PLOTS_DIR, help="holds package-lock.json")
    ap.add_argument("--out", type=Path, help="default: <plots-dir>/template.html")
    args = ap.parse_args(argv)
    out = args.out or args.plots_dir / "template.html"
    atomic_write(out, render(args.plots_dir))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PlotsPageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
