"""Every conf file composes and validates; typos fail at compose; secrets never reach params."""

import dataclasses
import shutil
import typing
from pathlib import Path

import pytest
import yaml
from omegaconf import MISSING

from stages import sources
from stages.core.config import GROUPS, ExecutorConf, ExecutorKind, SourceConf, typed
from stages.core.errors import ConfigError
from stages.core.executor import load_conf
from stages.pipeline.compose import compose, compose_text, source_files, write_params
from stages.pipeline.params import hand_edited, load_params

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def test_committed_params_match_conf():
    assert (ROOT / "params.yaml").read_text() == compose_text(CONF)


@pytest.mark.parametrize("group", list(GROUPS))
def test_every_group_option_composes(group):
    options = sorted((CONF / group).glob("*.yaml"))
    assert options, f"conf/{group}/ has no options"
    for path in options:
        data = compose(CONF, [f"{group}={path.stem}"])
        assert data[group] == yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", source_files(CONF), ids=lambda p: p.stem)
def test_every_source_composes_and_has_a_package(path):
    data = compose(CONF)
    source = sources.load(path.stem)
    assert isinstance(source, sources.Source) and source.name == path.stem
    assert issubclass(source.schema, SourceConf)
    if yaml.safe_load(path.read_text())["enabled"]:
        cfg = data["sources"][path.stem]
        assert source.classes(typed(source.schema, cfg)) or source.schema.allow_no_classes
        assert data["pipeline"][path.stem]["clean_input"] == (
            "frames" if source.has_frames else "fetch"
        )
        assert set(cfg) >= {"classes", "fetch", "clean", "export"}


def schemas():
    """Every schema dataclass reachable from the groups and the sources, nested ones too."""
    seen, todo = [], [*GROUPS.values(), *(sources.load(p.stem).schema for p in source_files(CONF))]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if dataclasses.is_dataclass(kind):
                todo.append(kind)
    return seen


def test_every_default_lives_in_conf_only():
    """Schemas give keys and types; every value comes from conf/ (no second default)."""
    for cls in schemas():
        for f in dataclasses.fields(cls):
            assert f.default is MISSING and f.default_factory is dataclasses.MISSING, (
                f"{cls.__name__}.{f.name} has a default in code; put it in conf/ instead"
            )


def copy_conf(tmp_path):
    dst = tmp_path / "conf"
    shutil.copytree(CONF, dst)
    return dst


def edit(conf: Path, rel: str, old: str, new: str) -> None:
    p = conf / rel
    text = p.read_text()
    assert old in text, f"{old!r} not in {rel}"
    p.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    "rel, old, new, message",
    [
        (
            "fetch/default.yaml",
            "retries: 5",
            "retires: 5",
            r"conf/fetch: unknown key 'fetch.retires'; did you mean retries",
        ),
        (
            "fetch/default.yaml",
            "workers: 16",
            "workers: many",
            r"conf/fetch: 'fetch.workers': Value 'many' .* could not be converted to Integer",
        ),
        (
            "fetch/default.yaml",
            "workers: 16",
            "workers: 0",
            r"fetch.workers must be > 0",
        ),
        (
            "export/default.yaml",
            "aspect: pad",
            "aspect: padd",
            r"'export.aspect': Invalid value 'padd', expected one of \[pad, stretch, crop\]",
        ),
        (
            "source/lila.yaml",
            "  seed: 0",
            "  seeed: 0",
            r"conf/source/lila.yaml: unknown key 'sources.lila.fetch.seeed'; did you mean seed\?",
        ),
        (
            "source/lila.yaml",
            "  seed: 0 ",
            "",
            r"conf/source/lila.yaml: 'sources.lila.fetch.seed' is required but not set",
        ),
        (
            "source/lila.yaml",
            "  split_by: location ",
            "  min_box_size: 3\n  split_by: location ",
            r"unknown key 'sources.lila.clean.min_box_size'",
        ),
        (
            "source/lila.yaml",
            "    empty: 8",
            "    moose: 8",
            r"caps name classes not in `classes`: moose",
        ),
        (
            "source/lila.yaml",
            "  cap: null",
            "  cap: -1",
            r"sources.lila.fetch.cap must be >= 0, not -1",
        ),
        (
            "source/lila.yaml",
            "- https://lilawildlife.blob.core.windows.net",
            "- http://lilawildlife.blob.core.windows.net",
            r"sas_token_origins: a credential may go to https origins only",
        ),
        (
            "config.yaml",
            "  - _self_",
            "  - _self_\nextra: 1",
            r"unknown top-level key\(s\) extra",
        ),
        (
            "source/kinetics.yaml",
            "  num_frames: null ",
            "  num_frames: 8 ",
            r"frames.num_frames \(8\) is below clean.min_frames \(16\)",
        ),
        (
            "export/default.yaml",
            "frames: 16 ",
            "frames: 32 ",
            r"clean.min_frames \(16\) is below export.frames \(32\)",
        ),
        (
            "source/videodir.yaml",
            "root: data/videodir/input",
            "root: /srv/videos",
            r"fetch.root must be data/videodir/input",
        ),
        (
            "source/kinetics.yaml",
            "  interpolation: bilinear",
            "  interpolation: lanczos",
            r"sources.kinetics.frames.interpolation",
        ),
    ],
    ids=[
        "typo",
        "type",
        "range",
        "enum",
        "source-typo",
        "missing",
        "stage-part",
        "caps",
        "negative-cap",
        "http-origin",
        "root",
        "num-frames",
        "export-frames",
        "input-root",
        "interpolation",
    ],
)
def test_bad_conf_fails_at_compose_with_the_key_path(tmp_path, rel, old, new, message):
    conf = copy_conf(tmp_path)
    edit(conf, rel, old, new)
    with pytest.raises(ConfigError, match=message):
        compose(conf)


def test_disabled_sources_are_left_out_but_still_checked(tmp_path):
    conf = copy_conf(tmp_path)
    edit(conf, "source/lila.yaml", "enabled: true", "enabled: false")
    data = compose(conf)
    assert "lila" not in data["sources"] and "lila" not in data["pipeline"]
    assert set(data["pipeline"]) == {p.stem for p in (conf / "source").glob("*.yaml")} - {"lila"}
    edit(conf, "source/lila.yaml", "  seed: 0", "  seeed: 0")
    with pytest.raises(ConfigError, match="seeed"):
        compose(conf)


def test_a_conf_file_without_a_source_package_is_refused(tmp_path):
    conf = copy_conf(tmp_path)
    shutil.copy(conf / "source" / "lila.yaml", conf / "source" / "nosuch.yaml")
    with pytest.raises(ConfigError, match="no source package stages/sources/nosuch/"):
        compose(conf)


@pytest.mark.parametrize(
    "new, message",
    [
        ("  sas_token: sv=2034&sig=abc123", "sources.lila.fetch.sas_token: secrets never go in"),
        ("  sas_token_env: sv=2034&sig=abc123", "must name an environment variable"),
    ],
)
def test_literal_secret_is_refused(tmp_path, new, message):
    conf = copy_conf(tmp_path)
    edit(conf, "source/lila.yaml", "  sas_token_env: null", new)
    with pytest.raises(ConfigError, match=message) as err:
        compose(conf)
    assert "abc123" not in str(err.value)


def test_env_interpolation_is_refused(tmp_path):
    conf = copy_conf(tmp_path)
    edit(conf, "source/lila.yaml", "seed: 0", "seed: ${oc.env:SEED}")
    with pytest.raises(ConfigError, match="oc.env"):
        compose(conf)


def test_hand_edit_of_params_is_detected(tmp_path):
    conf = copy_conf(tmp_path)
    params = tmp_path / "params.yaml"
    assert write_params(conf, params)
    assert not write_params(conf, params)
    text = params.read_text()
    assert not hand_edited(text)
    params.write_text(text.replace("seed: 0", "seed: 3"))
    assert hand_edited(params.read_text())
    with pytest.raises(ConfigError, match="hand-edited"):
        load_params(params, conf)
    # conf edits also change params.yaml, and that is fine: compose wins over its own output.
    edit(conf, "export/default.yaml", "height: 224", "height: 96")
    with pytest.raises(ConfigError, match="edited by hand"):
        write_params(conf, params)
    assert write_params(conf, params, force=True)
    assert yaml.safe_load(params.read_text())["export"]["height"] == 96


def test_stage_entries_refuse_stale_params(tmp_path):
    conf = copy_conf(tmp_path)
    params = tmp_path / "params.yaml"
    write_params(conf, params)
    assert load_params(params, conf)["export"]["height"] == 224
    edit(conf, "export/default.yaml", "height: 224", "height: 96")
    with pytest.raises(ConfigError, match="stale"):
        load_params(params, conf)


def test_changing_the_set_of_sources_asks_for_a_second_run(tmp_path):
    conf = copy_conf(tmp_path)
    params = tmp_path / "params.yaml"
    write_params(conf, params)
    edit(conf, "source/lila.yaml", "enabled: true", "enabled: false")
    with pytest.raises(ConfigError, match="run `dvc repro` again"):
        write_params(conf, params)
    assert "lila" not in yaml.safe_load(params.read_text())["pipeline"]  # written all the same
    assert not write_params(conf, params)


# --- the executor: chosen at run time, never part of params.yaml ---------------------------


@pytest.mark.parametrize("name", ["local", "dask", "slurm"])
def test_every_executor_composes_with_every_key_from_conf(name):
    cfg = load_conf(CONF, {"DSREPO_EXECUTOR": name})
    for f in dataclasses.fields(ExecutorConf):
        assert getattr(cfg, f.name) is not MISSING and f.default is MISSING, f.name
    assert cfg.kind.value == ("local" if name == "local" else "dask")


def test_no_executor_asked_is_local_and_site_yaml_is_this_machines(tmp_path):
    assert load_conf(CONF, {}).kind is ExecutorKind.local
    conf = copy_conf(tmp_path)
    (conf / "executor" / "site.yaml").write_text(
        "defaults: [dask, _self_]\naddress: tcp://10.0.0.5:8786\n"
    )
    cfg = load_conf(conf, {})
    assert cfg.kind is ExecutorKind.dask and cfg.address == "tcp://10.0.0.5:8786"
    # ...and neither the site file nor any executor setting changes params.yaml.
    assert compose_text(conf) == compose_text(CONF)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DSREPO_EXECUTOR": "dask", "DSREPO_EXECUTOR_OVERRIDES": "windw=3"}, "windw"),
        ({"DSREPO_EXECUTOR": "dask", "DSREPO_EXECUTOR_OVERRIDES": "window=0"}, "window"),
        ({"DSREPO_EXECUTOR": "nope"}, "no conf/executor/nope.yaml"),
        ({"DSREPO_EXECUTOR": "_common"}, "name a file"),
        (
            {"DSREPO_EXECUTOR": "slurm", "DSREPO_EXECUTOR_OVERRIDES": "address=tcp://h:1"},
            "give one of address, cluster",
        ),
    ],
)
def test_a_bad_executor_setting_is_one_clear_error(env, message):
    with pytest.raises(ConfigError, match=message):
        load_conf(CONF, env)


def test_the_slurm_executor_renders_a_job_script_from_conf():
    """The cluster spec is instantiated by Hydra as dask-jobqueue's SLURMCluster."""
    from hydra.utils import instantiate

    env = {"DSREPO_EXECUTOR": "slurm", "DSREPO_EXECUTOR_OVERRIDES": "cluster.queue=gpu"}
    cfg = load_conf(CONF, env)
    cluster = instantiate(cfg.cluster, _convert_="all", scheduler_options={"host": "127.0.0.1"})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p gpu" in script and "#SBATCH --cpus-per-task=8" in script
    assert "--lifetime 230m" in script and "DASK_DISTRIBUTED__WORKER__DAEMON=False" in script
