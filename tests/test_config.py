"""Every conf file composes and validates; typos fail at compose; secrets never reach params."""

import dataclasses
import inspect
import shutil
import typing
from pathlib import Path

import pytest
import yaml
from omegaconf import MISSING

from stages import sources
from stages.core.config import GROUPS, ExecutorConf, ExecutorKind, SourceConf, typed
from stages.core.errors import ConfigError
from stages.pipeline.compose import compose, compose_text, source_files, write_params
from stages.pipeline.executors import load_conf
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
            todo += [k for k in nested_types(hints[f.name]) if dataclasses.is_dataclass(k)]
    return seen


def nested_types(kind):
    """A type and every type inside it (Optional[X], list[X], dict[str, X], ...)."""
    yield kind
    for arg in typing.get_args(kind):
        yield from nested_types(arg)


def test_every_setting_is_explained_in_its_schema():
    """`dvc exp run -S` may drop conf/'s comment lines: each explanation lives in a schema."""
    unexplained = []
    for cls in schemas():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if typing.get_origin(kind) is typing.Union:  # Optional[X]
                kind = next(k for k in typing.get_args(kind) if k is not type(None))
            section = dataclasses.is_dataclass(kind)  # its leaves are checked, not itself
            if not section and not str(f.metadata.get("doc") or "").strip():
                unexplained.append(f"{cls.__module__}.{cls.__name__}.{f.name}")
    assert not unexplained, f"settings without an explanation (setting(doc)): {unexplained}"


def test_explain_lists_each_setting_with_its_type_value_and_meaning(capsys):
    from stages.compose import main

    assert main(["--conf", str(CONF), "--explain", "sources.lila.fetch"]) == 0
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line and not line.startswith(" ")]
    fetch_schema = typing.get_type_hints(sources.load("lila").schema)["fetch"]
    declared = [f.name for f in dataclasses.fields(fetch_schema)]
    assert [h.split(":")[0] for h in heads] == [f"sources.lila.fetch.{n}" for n in declared]
    assert "sources.lila.fetch.cap: int or null = null\n    Default cap on the images picked" in out
    assert "sources.lila.fetch.cloud: one of gcp, aws, azure = gcp\n" in out
    main(["--conf", str(CONF), "--explain", "split"])
    out = capsys.readouterr().out
    assert out.startswith("split.names: list of str = [train, val, test]\n    Split names")
    assert "fetch.workers" not in out and "on_empty_class" in out
    main(["--conf", str(CONF), "--explain", "sources.videodir.frames.cameras"])
    assert "sources.videodir.frames.cameras.*.fps: float or null = {lobby: null}" in (
        capsys.readouterr().out
    )


def test_an_unknown_explain_prefix_is_one_error_line_with_close_matches():
    import subprocess
    import sys

    argv = ["--conf", str(CONF), "--explain", "sources.lila.fetc"]
    run = subprocess.run(
        [sys.executable, "-m", "stages.compose", *argv], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [
        "error: no setting is named or starts with 'sources.lila.fetc'; did you mean "
        "sources.lila.fetch or sources.lila.fetch.cap or sources.lila.fetch.seed?"
    ]


@pytest.mark.parametrize(
    "rel, old, new, explanation",
    [
        ("fetch/default.yaml", "retries: 5", "retires: 5", "max_redirects? retries: Extra"),
        ("fetch/default.yaml", "workers: 16", "workers: many", "Integer. workers: Transfers in"),
        ("source/lila.yaml", "  seed: 0 ", "", "not set. seed: Seeds the hash that ranks images"),
        ("source/videodir.yaml", "      fps: null", "      fps: fast", "fps: This camera's fr"),
        ("source/lila.yaml", "    empty: 8", "    empty: lots", "Integer. caps: Per-class caps"),
    ],
    ids=["typo", "type", "missing", "mapping-of-sections", "mapping-entry"],
)
def test_an_error_about_a_key_says_what_the_key_sets(tmp_path, rel, old, new, explanation):
    conf = copy_conf(tmp_path)
    edit(conf, rel, old, new)
    with pytest.raises(ConfigError) as err:
        compose(conf)
    assert explanation in str(err.value) and "\n" not in str(err.value)


def test_every_default_lives_in_conf_only():
    """Schemas give keys and types; every value comes from conf/ (no second default)."""
    for cls in schemas():
        for f in dataclasses.fields(cls):
            assert f.default is MISSING and f.default_factory is dataclasses.MISSING, (
                f"{cls.__name__}.{f.name} has a default in code; put it in conf/ instead"
            )


def test_what_carries_a_setting_into_the_work_has_no_default_of_its_own():
    """A frame spec and the decoder's memory budget come from conf, never a second default."""
    from stages.formats.video import FrameSpec, extract

    for f in dataclasses.fields(FrameSpec):
        assert f.default is dataclasses.MISSING, f"FrameSpec.{f.name} has a default in code"
    hold = inspect.signature(extract).parameters["hold_bytes"]
    assert hold.default is inspect.Parameter.empty


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
        # Refuted by the conf alone, so at compose rather than when a stage reaches them.
        (
            "source/lila.yaml",
            "null        # name of an env var holding an Azure SAS token (never the token itself)\n"
            "  sas_token_origins:         # the only origins that token is ever sent to\n"
            "    - https://lilawildlife.blob.core.windows.net",
            "LILA_SAS\n  sas_token_origins: []",
            r"sas_token_origins is empty: a token needs the origins",
        ),
        (
            "source/figure8.yaml",
            "samples_to_drop: []",
            "samples_to_drop: [x_00_y_01, position 3]",
            r"samples_to_drop: \['position 3'\] name no position",
        ),
        (
            "split/default.yaml",
            "[train, val, test]",
            "[train, val, dropped]",
            r"names \['dropped'\]",
        ),
        ("source/lila.yaml", "  - cougar\n", "  - {cougar: 1}\n", r"classes must list class names"),
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
        "token-without-origins",
        "drop-name",
        "split-name",
        "class-mapping",
    ],
)
def test_bad_conf_fails_at_compose_with_the_key_path(tmp_path, rel, old, new, message):
    conf = copy_conf(tmp_path)
    edit(conf, rel, old, new)
    with pytest.raises(ConfigError, match=message):
        compose(conf)


def conf_files():
    """Every file `dvc exp run -S conf/...:key=value` may rewrite (the executor is not params)."""
    return [p for p in sorted(CONF.rglob("*.yaml")) if p.relative_to(CONF).parts[0] != "executor"]


@pytest.mark.parametrize("path", conf_files(), ids=lambda p: p.relative_to(CONF).as_posix())
def test_a_conf_file_rewritten_by_dvc_exp_run_set_param_composes_the_same(tmp_path, path):
    """`-S file:key=value` goes through dvc.utils.hydra.apply_overrides, which rewrites the file
    with DVC's YAML dump (modify_yaml): comment lines between keys, list indents and `null`
    may change, the settings may not."""
    from dvc.utils.hydra import apply_overrides

    from stages.core.itemdiff import flatten
    from stages.pipeline.compose import override_value

    conf = copy_conf(tmp_path)
    rel = path.relative_to(CONF)
    leaves = flatten(yaml.safe_load(path.read_text()))
    key = next((k for k in leaves if "." in k), next(iter(leaves)))  # a nested key if any
    apply_overrides(conf / rel, [f"{key}={override_value(leaves[key])}"])
    assert compose(conf) == compose(CONF)
    if rel.as_posix() == "source/lila.yaml":  # and a real change changes that key only
        apply_overrides(conf / rel, ["fetch.cap=7"])
        want = compose(CONF)
        want["sources"]["lila"]["fetch"]["cap"] = 7
        assert compose(conf) == want


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


def test_a_hand_edit_is_answered_with_the_conf_keys_to_set(tmp_path, monkeypatch):
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S key=value` runs

    monkeypatch.chdir(tmp_path)
    conf = copy_conf(tmp_path)
    # The shared group's file comes from config.yaml's defaults list, whatever its name.
    shutil.copy(conf / "fetch" / "default.yaml", conf / "fetch" / "fast.yaml")
    edit(conf, "config.yaml", "  - fetch: default", "  - fetch: fast")
    params = tmp_path / "params.yaml"
    write_params(Path("conf"), params)
    text = params.read_text()
    sets = [
        "sources.lila.fetch.cap=2",
        "fetch.workers=3",
        "sources.lila.classes=[mule deer,cougar]",
    ]
    apply_overrides(params, sets)
    with pytest.raises(ConfigError, match="edited by hand") as err:
        write_params(Path("conf"), params)
    message = str(err.value)
    assert "-S 'conf/source/lila.yaml:fetch.cap=2'" in message
    assert "-S 'conf/fetch/fast.yaml:workers=3'" in message
    assert "-S 'conf/source/lila.yaml:classes=[mule deer, cougar]'" in message
    assert "fetch.cap=7" not in message
    # A change no conf key holds (a derived section) gets the generic form.
    params.write_text(text)
    apply_overrides(params, ["pipeline.lila.input=elsewhere"])
    with pytest.raises(ConfigError, match=r"-S conf/<group>/<file>.yaml:key=value"):
        write_params(Path("conf"), params)


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
