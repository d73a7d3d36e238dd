"""Compose the Hydra config tree in conf/ into params.yaml (the `compose` stage)."""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from stages.cli import run_main
from stages.errors import ConfigError

HEADER = "# Generated from conf/ by `python -m stages.compose`; edit conf/, not this file.\n"
DIGEST_PREFIX = "# digest: "
# Keys whose value would be a secret: conf must name an env var instead (`<key>_env`).
SECRET_KEY = re.compile(r"(token|secret|password|passwd|api_key|access_key|private_key)$", re.I)


def source_files(conf_dir: Path) -> list[Path]:
    """List the source config files, sorted."""
    return sorted((conf_dir / "source").glob("*.yaml"))


def check_conf_text(conf_dir: Path) -> None:
    """Refuse env interpolations, which would bake secrets into params.yaml."""
    for path in sorted(conf_dir.rglob("*.yaml")):
        if "oc.env" in path.read_text(encoding="utf-8"):
            raise ConfigError(
                f"{path}: `${{oc.env:...}}` would copy an environment value into params.yaml; "
                "name the variable instead (e.g. `token_env: MY_TOKEN`)"
            )


def check_secrets(node, where: str = "") -> None:
    """Refuse literal secrets anywhere in the composed config."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if SECRET_KEY.search(str(key)) and value not in (None, ""):
                raise ConfigError(
                    f"{path}: secrets never go in conf/ or params.yaml; "
                    f"set `{key}_env: VAR_NAME` and export VAR_NAME instead"
                )
            check_secrets(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_secrets(value, f"{where}[{i}]")


def compose(conf_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Return the composed, resolved config as plain data."""
    conf_dir = Path(conf_dir).resolve()
    if not (conf_dir / "config.yaml").is_file():
        raise ConfigError(f"{conf_dir}/config.yaml not found")
    check_conf_text(conf_dir)
    extra = []
    for path in source_files(conf_dir):
        enabled = OmegaConf.load(path).get("enabled", True)
        if enabled:
            extra.append(f"+source@sources.{path.stem}={path.stem}")
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=[*extra, *overrides])
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # Hydra raises many types; the user needs the message only.
        raise ConfigError(f"cannot compose {conf_dir}: {exc}") from exc
    data.setdefault("sources", {})
    check_secrets(data)
    # extract-frames runs only for sources with video; dvc.yaml iterates over this map.
    data["video_sources"] = {k: {} for k, v in data["sources"].items() if v.get("video")}
    data["pipeline"] = {
        k: {"clean_input": "frames" if v.get("video") else "fetch"}
        for k, v in data["sources"].items()
    }
    return data


def render(data: dict) -> str:
    """Render params.yaml text with a digest line that detects hand edits."""
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return f"{HEADER}{DIGEST_PREFIX}{digest}\n{body}"


def hand_edited(text: str) -> bool:
    """Tell whether params.yaml text no longer matches the digest it was written with."""
    lines = text.splitlines(keepends=True)
    digest_lines = [ln for ln in lines[:3] if ln.startswith(DIGEST_PREFIX)]
    if not digest_lines:
        return True
    body = "".join(ln for ln in lines if not ln.startswith("#"))
    want = digest_lines[0][len(DIGEST_PREFIX) :].strip()
    return hashlib.sha256(body.encode()).hexdigest() != want


def write_params(conf_dir: Path, params_path: Path, *, force: bool = False) -> bool:
    """Write params.yaml from conf/; return whether it changed."""
    text = render(compose(conf_dir))
    old = params_path.read_text(encoding="utf-8") if params_path.exists() else None
    if old is not None and not force and old != text and hand_edited(old):
        raise ConfigError(
            f"{params_path} was edited by hand (or by `dvc exp run -S key=value`); conf/ is the "
            "source of truth. Use `dvc exp run -S conf/source/lila.yaml:cap=7`, or edit conf/ "
            "and run `dvc repro` (pass --force to `python -m stages.compose` to discard the edit)"
        )
    if old == text:
        return False
    tmp = params_path.with_name(params_path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(params_path)
    if old is not None:
        before = yaml.safe_load(old) or {}
        after = yaml.safe_load(text)
        if before.get("pipeline") != after.get("pipeline"):
            # dvc.yaml's stage list was expanded from the old params.yaml in this run.
            raise ConfigError(
                f"the set of enabled sources changed ({sorted(before.get('pipeline') or {})} -> "
                f"{sorted(after['pipeline'])}); {params_path} is updated: run `dvc repro` again "
                "so DVC expands the new stages"
            )
    return True


def main(argv: list[str] | None = None) -> int:
    """Compose conf/ into params.yaml, or check that it is current."""
    ap = argparse.ArgumentParser(prog="python -m stages.compose", description=__doc__)
    ap.add_argument("params", nargs="?", default="params.yaml")
    ap.add_argument("--conf", default="conf")
    ap.add_argument("--check", action="store_true", help="exit 1 if params.yaml is stale")
    ap.add_argument("--force", action="store_true", help="overwrite a hand-edited params.yaml")
    args = ap.parse_args(argv)
    params = Path(args.params)
    if args.check:
        current = params.read_text(encoding="utf-8") if params.exists() else ""
        if current != render(compose(Path(args.conf))):
            print(f"{params} is stale: run `dvc repro compose`", file=sys.stderr)
            return 1
        return 0
    changed = write_params(Path(args.conf), params, force=args.force)
    print(f"{params}: {'updated' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    run_main(main)
