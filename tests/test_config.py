"""Every conf file composes; params.yaml is current; secrets never reach params."""

from pathlib import Path

import pytest
import yaml

from stages import sources
from stages.compose import compose, hand_edited, render, source_files, write_params
from stages.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def test_committed_params_match_conf():
    assert (ROOT / "params.yaml").read_text() == render(compose(CONF))


@pytest.mark.parametrize("group", ["fetch", "store", "clean", "export"])
def test_every_group_option_composes(group):
    for path in sorted((CONF / group).glob("*.yaml")):
        data = compose(CONF, [f"{group}={path.stem}"])
        assert data[group] == yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", source_files(CONF), ids=lambda p: p.stem)
def test_every_source_composes_and_has_a_module(path):
    data = compose(CONF)
    assert data["sources"][path.stem]["enabled"] is True
    module = sources.load(path.stem)
    assert module.classes(data["sources"][path.stem])
    assert data["pipeline"][path.stem]["clean_input"] == ("frames" if module.VIDEO else "fetch")


def copy_conf(tmp_path):
    import shutil

    dst = tmp_path / "conf"
    shutil.copytree(CONF, dst)
    return dst


def test_disabled_source_is_left_out(tmp_path):
    conf = copy_conf(tmp_path)
    p = conf / "source" / "lila.yaml"
    p.write_text(p.read_text().replace("enabled: true", "enabled: false"))
    data = compose(conf)
    assert data["sources"] == {} and data["pipeline"] == {}


def test_literal_secret_is_refused(tmp_path):
    conf = copy_conf(tmp_path)
    p = conf / "source" / "lila.yaml"
    p.write_text(p.read_text() + "api_token: abc123\n")
    with pytest.raises(ConfigError, match="api_token"):
        compose(conf)


def test_env_interpolation_is_refused(tmp_path):
    conf = copy_conf(tmp_path)
    p = conf / "source" / "lila.yaml"
    p.write_text(p.read_text().replace("seed: 0", "seed: ${oc.env:SEED}"))
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
    # conf edits also change params.yaml, and that is fine: compose wins over its own output.
    p = conf / "export" / "default.yaml"
    p.write_text(p.read_text().replace("height: 224", "height: 96"))
    with pytest.raises(ConfigError, match="edited by hand"):
        write_params(conf, params)
    assert write_params(conf, params, force=True)
    assert yaml.safe_load(params.read_text())["export"]["height"] == 96


def test_stage_entries_refuse_stale_params(tmp_path):
    from stages.params import load_params

    conf = copy_conf(tmp_path)
    params = tmp_path / "params.yaml"
    write_params(conf, params)
    assert load_params(params, conf)["export"]["height"] == 224
    p = conf / "export" / "default.yaml"
    p.write_text(p.read_text().replace("height: 224", "height: 96"))
    with pytest.raises(ConfigError, match="stale"):
        load_params(params, conf)


def test_changing_the_set_of_sources_asks_for_a_second_run(tmp_path):
    conf = copy_conf(tmp_path)
    params = tmp_path / "params.yaml"
    write_params(conf, params)
    p = conf / "source" / "lila.yaml"
    p.write_text(p.read_text().replace("enabled: true", "enabled: false"))
    with pytest.raises(ConfigError, match="run `dvc repro` again"):
        write_params(conf, params)
    assert yaml.safe_load(params.read_text())["pipeline"] == {}  # written all the same
    assert not write_params(conf, params)
