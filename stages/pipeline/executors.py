"""The executor a run asked for: `DSREPO_EXECUTOR` names a file in conf/executor/ (default:
`site` if that git-ignored file exists, else `local`), and `DSREPO_EXECUTOR_OVERRIDES` holds
Hydra overrides for it (`address=tls://h:8786 window=128`). Composed with the rest of conf/ by
the same function, as a group the compose stage never writes into params.yaml."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from stages.core.config import ExecutorConf, ExecutorKind, typed
from stages.core.errors import ConfigError
from stages.core.executor import Executor, LocalExecutor
from stages.pipeline.compose import hydra_data

ENV = "DSREPO_EXECUTOR"
ENV_OVERRIDES = "DSREPO_EXECUTOR_OVERRIDES"
SITE = "site"


def load_conf(conf_dir: Path = Path("conf"), env: dict | None = None) -> ExecutorConf:
    """Compose the executor config this run asked for (env), validated by its schema."""
    env = os.environ if env is None else env
    folder = Path(conf_dir).resolve() / "executor"
    if not folder.is_dir():
        raise ConfigError(
            f"{folder} not found: every executor setting lives there (local.yaml, dask.yaml, "
            "_common.yaml ...); restore it from the repository"
        )
    name = env.get(ENV) or (SITE if (folder / f"{SITE}.yaml").is_file() else "local")
    if name.startswith("_") or "/" in name:
        raise ConfigError(f"{ENV}={name}: name a file of conf/executor/ (local, dask, slurm)")
    if not (folder / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))
        raise ConfigError(f"{ENV}={name}: no conf/executor/{name}.yaml (have: {known})")
    # Composed with the rest of conf/, as a group the compose stage never adds to params.yaml.
    overrides = [_in_group(o) for o in shlex.split(env.get(ENV_OVERRIDES, ""))]
    data = hydra_data(conf_dir, [f"+executor={name}", *overrides])["executor"]
    return typed(ExecutorConf, data, f"conf/executor/{name}.yaml ({ENV_OVERRIDES})", "executor")


def _in_group(override: str) -> str:
    """Return an executor override (`window=8`, `+key=1`, `~key`) as the whole conf takes it
    (`executor.window=8`)."""
    sign = re.match(r"\+\+|\+|~", override)
    head = sign.group() if sign else ""
    return f"{head}executor.{override.removeprefix(head)}"


def open_executor(cfg: ExecutorConf) -> Executor:
    """Start the executor a config describes."""
    if cfg.kind is ExecutorKind.local:
        return LocalExecutor(cfg=cfg)
    from stages.core.cluster import DaskExecutor  # here: local runs never load Dask

    return DaskExecutor(cfg)
