"""Compose conf/ with Hydra and validate every group against its schema (the compose stage)."""

from __future__ import annotations

import difflib
import functools
import json
import re
from pathlib import Path

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from stages import sources
from stages.core.config import GROUPS, VIDEO_LAYOUTS, Layout, typed, validate
from stages.core.errors import ConfigError
from stages.core.files import atomic_write
from stages.core.itemdiff import params_diff
from stages.core.metrics import RESERVED as HEADLINE_NAMES
from stages.pipeline.params import conf_digest, hand_edited, render

# Keys whose value would be a secret: conf must name an env var instead (`<key>_env`).
SECRET_KEY = re.compile(r"(token|secret|password|passwd|api_key|access_key|private_key)$", re.I)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def source_files(conf_dir: Path) -> list[Path]:
    """List the source config files, sorted."""
    return sorted((Path(conf_dir) / "source").glob("*.yaml"))


def check_conf_text(conf_dir: Path) -> None:
    """Refuse env interpolations, which would bake secrets into params.yaml."""
    for path in sorted(Path(conf_dir).rglob("*.yaml")):
        if "oc.env" in path.read_text(encoding="utf-8"):
            raise ConfigError(
                f"{path}: `${{oc.env:...}}` would copy an environment value into params.yaml; "
                "name the variable instead (e.g. `token_env: MY_TOKEN`)"
            )


def check_secrets(node, where: str = "") -> None:
    """Refuse literal secrets anywhere in the composed config, and `_env` values that are
    not environment variable names (a pasted token would otherwise land in params.yaml)."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if SECRET_KEY.search(str(key)) and value not in (None, ""):
                raise ConfigError(
                    f"{path}: secrets never go in conf/ or params.yaml; "
                    f"set `{key}_env: VAR_NAME` and export VAR_NAME instead"
                )
            if (
                str(key).endswith("_env")
                and value is not None
                and not ENV_NAME.fullmatch(str(value))
            ):
                raise ConfigError(
                    f"{path} must name an environment variable (like MY_TOKEN), not hold a "
                    "value: secrets never go in conf/ or params.yaml"
                )
            check_secrets(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_secrets(value, f"{where}[{i}]")


def check_frame_counts(name: str, frames: dict, min_frames: int) -> None:
    """Refuse a frame sampling that leaves every clip shorter than clean.min_frames."""
    settings = {"frames.num_frames": frames.get("num_frames")}
    for camera, override in (frames.get("cameras") or {}).items():
        settings[f"frames.cameras.{camera}.num_frames"] = (override or {}).get("num_frames")
    for key, value in settings.items():
        if value is not None and value < min_frames:
            raise ConfigError(
                f"conf/source/{name}.yaml: {key} ({value}) is below clean.min_frames "
                f"({min_frames}): clean would drop every clip as too short"
            )


def hydra_data(conf_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Return conf/ as Hydra composes it, unchecked: every source, enabled or not, under
    `sources`."""
    conf_dir = Path(conf_dir).resolve()
    if not (conf_dir / "config.yaml").is_file():
        raise ConfigError(f"{conf_dir}/config.yaml not found")
    check_conf_text(conf_dir)
    extra = [f"+source@sources.{path.stem}={path.stem}" for path in source_files(conf_dir)]
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=[*extra, *overrides])
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # Hydra raises many types; the user needs the message only.
        raise ConfigError(f"cannot compose {conf_dir}: {exc}") from exc


def compose(conf_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Return the composed, validated, resolved config as plain data."""
    data = hydra_data(conf_dir, overrides)
    files = {path.stem: path for path in source_files(conf_dir)}
    # Secrets first: a literal token must be refused as such, never reported as a typo (the
    # schemas below would call it an unknown key and suggest the `_env` key next to it).
    check_secrets(data)
    unknown = sorted(set(data) - set(GROUPS) - {"sources"})
    if unknown:
        close = difflib.get_close_matches(unknown[0], [*GROUPS, "sources"], n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"conf/config.yaml: unknown top-level key(s) {', '.join(unknown)}{hint}")
    out: dict = {}
    for group, schema in GROUPS.items():
        out[group] = validate(schema, data.get(group), f"conf/{group}", group)
    taken = sorted(set(out["split"]["names"]) & HEADLINE_NAMES)
    if taken:
        raise ConfigError(
            f"conf/split: split names {taken} are headline metric names (each split's item "
            "count is a metric named after the split): rename them"
        )
    if out["clean"]["min_frames"] < out["export"]["frames"]:
        raise ConfigError(
            f"clean.min_frames ({out['clean']['min_frames']}) is below export.frames "
            f"({out['export']['frames']}): clips kept by clean would be too short to export"
        )
    unknown = sorted(set(out["fetch"]["source_workers"]) - set(files))
    if unknown:
        raise ConfigError(
            f"conf/fetch: source_workers names no source: {unknown} (sources: {sorted(files)})"
        )
    out["sources"] = {}
    video, framed, inputs, exports, plots, imports = {}, {}, {}, {}, {}, {}
    for name, raw in (data.get("sources") or {}).items():
        source = sources.load(name)
        checked = validate(source.schema, raw, f"conf/source/{name}.yaml", f"sources.{name}")
        if checked["enabled"]:  # disabled sources are validated too, so typos show early
            out["sources"][name] = checked
            video[name] = source.video
            framed[name] = source.has_frames
            if (checked.get("import_to") or {}).get("enabled"):
                imports[name] = {}
            if source.plots is not None:
                plots[name] = {
                    "template": source.plots.template,
                    "x": source.plots.x,
                    "y": source.plots.y,
                    "title": source.plots.title,
                }
            if source.video:
                check_frame_counts(name, checked["frames"], out["clean"]["min_frames"])
            for layout in checked["exports"]:
                if Layout(layout) in VIDEO_LAYOUTS and not source.video:
                    raise ConfigError(
                        f"conf/source/{name}.yaml: exports: {layout} needs frames; "
                        f"{name} has no video (use classes, voc or coco)"
                    )
                exports[f"{name}-{layout}"] = {"source": name, "layout": layout}
            # What fetch reads from the workspace: data/<name>/input for sources of local
            # files, else the source's own package (a path that always exists).
            inputs[name] = f"stages/sources/{name}/__init__.py"
            if source.local_input:
                inputs[name] = f"data/{name}/input"
                if checked["fetch"].get("root") != inputs[name]:
                    raise ConfigError(
                        f"conf/source/{name}.yaml: fetch.root must be {inputs[name]}, the folder "
                        "DVC tracks as this source's input (move or link the files there, or "
                        f"`dvc import` them to it), not {checked['fetch'].get('root')!r}"
                    )
    # extract-frames runs only for sources with frames (video, or montage tiles); dvc.yaml
    # iterates over these maps.
    out["frame_sources"] = {k: {} for k, v in framed.items() if v}
    out["pipeline"] = {
        k: {"clean_input": "frames" if v else "fetch", "input": inputs[k]}
        for k, v in framed.items()
    }
    # The plots stage runs for sources that draw their clean store (a picture and a series).
    # import@<source> runs for sources whose `import_to:` is enabled.
    out["import_sources"] = dict(sorted(imports.items()))
    out["plot_sources"] = {
        k: {**v, "clean_input": out["pipeline"][k]["clean_input"]} for k, v in sorted(plots.items())
    }
    # export-folders runs per (source, layout) listed under a source's `exports:`.
    out["exports"] = {
        k: {**v, "clean_input": out["pipeline"][v["source"]]["clean_input"]}
        for k, v in sorted(exports.items())
    }
    return out


def compose_text(conf_dir: Path) -> str:
    """Return the params.yaml text conf/ composes to."""
    return render(compose(conf_dir), conf_digest(conf_dir))


def group_files(conf_dir: Path) -> dict[str, Path]:
    """Return each shared group's params key and the conf file conf/config.yaml's defaults
    list picks for it (`fetch: default` -> fetch: conf/fetch/default.yaml)."""
    root = yaml.safe_load((Path(conf_dir) / "config.yaml").read_text(encoding="utf-8")) or {}
    out = {}
    for entry in root.get("defaults") or []:
        if not isinstance(entry, dict) or len(entry) != 1:
            continue  # `_self_`, or a form params.yaml cannot point back to
        key, option = next(iter(entry.items()))
        group, _, package = str(key).removeprefix("override ").partition("@")
        if isinstance(option, str):
            out[package or group] = Path(conf_dir) / group / f"{option}.yaml"
    return out


def override_value(value) -> str:
    """Return a value as `-S key=value` takes it (quoted where DVC would read a sweep)."""
    if isinstance(value, str):
        plain = re.fullmatch(r"[\w./:@+-]+", value) and isinstance(yaml.safe_load(value), str)
        return value if plain else json.dumps(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return text.removesuffix("...\n").strip()  # a scalar document ends with `...`


def suggest_overrides(conf_dir: Path, edited: str, composed: str) -> list[str]:
    """Return the `-S file:key=value` forms that would make conf/ say what a hand-edited
    params.yaml says (one per changed key that a conf file holds)."""
    try:
        before = yaml.safe_load(edited)
    except yaml.YAMLError:
        return []
    if not isinstance(before, dict):
        return []
    groups = group_files(conf_dir)
    out = []
    for change in params_diff(yaml.safe_load(composed), before):
        head, _, rest = change["key"].partition(".")
        path = groups.get(head)
        if head == "sources":
            name, _, rest = rest.partition(".")
            path = Path(conf_dir) / "source" / f"{name}.yaml"
        if path is None or not rest or not path.is_file():
            continue  # derived keys (pipeline, exports, ...) come from no single conf key
        out.append(f"{path.as_posix()}:{rest}={override_value(change['b'])}")
    return out


def write_params(conf_dir: Path, params_path: Path, *, force: bool = False) -> bool:
    """Write params.yaml from conf/; return whether it changed."""
    text = compose_text(conf_dir)
    old = params_path.read_text(encoding="utf-8") if params_path.exists() else None
    if old is not None and not force and old != text and hand_edited(old):
        wanted = suggest_overrides(conf_dir, old, text)
        hint = " ".join(f"-S '{w}'" for w in wanted) or "-S conf/<group>/<file>.yaml:key=value"
        raise ConfigError(
            f"{params_path} was edited by hand (or by `dvc exp run -S key=value`); conf/ is the "
            f"source of truth. Use `dvc exp run {hint}`, or edit conf/ and run `dvc repro` "
            "(pass --force to `python -m stages.compose` to discard the edit)"
        )
    if old == text:
        return False
    atomic_write(params_path, text)
    if old is not None:
        before = yaml.safe_load(old) or {}
        after = yaml.safe_load(text)
        for key, what in (
            ("pipeline", "enabled sources"),
            ("exports", "folder exports"),
            ("plot_sources", "sources with plots"),
            ("import_sources", "sources with imports"),
        ):
            if (before.get(key) or {}) != (after.get(key) or {}):
                # dvc.yaml's stage list was expanded from the old params.yaml in this run.
                raise ConfigError(
                    f"the set of {what} changed ({sorted(before.get(key) or {})} -> "
                    f"{sorted(after.get(key) or {})}); {params_path} is updated: run `dvc repro` "
                    "again so DVC expands the new stages"
                )
    return True


CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@functools.lru_cache(maxsize=8)
def _composed(conf_dir: Path, digest: str) -> dict:
    """Compose conf/ once per content (the digest keys the cache, so it is never stale)."""
    return compose(conf_dir)


def group_defaults(group: str, conf_dir: Path = CONF_DIR, **changes):
    """Return a shared group's settings as conf/ composes them (for tests, benches, tools)."""
    data = {**_composed(Path(conf_dir), conf_digest(conf_dir))[group], **changes}
    return typed(GROUPS[group], data, f"conf/{group}", group)


def source_defaults(name: str, conf_dir: Path = CONF_DIR, **changes):
    """Return a source's settings from conf/source/<name>.yaml, sections updated by `changes`
    (e.g. `fetch={"seed": 1}`), validated by its schema (for tests, benches, tools)."""
    path = Path(conf_dir) / "source" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return typed(sources.load(name).schema, data, str(path), f"sources.{name}")
