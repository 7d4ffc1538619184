"""Experiment files: every error names the file and the key, before anything starts."""

import pytest
import yaml

from augtrain.pipelines.train.config import ConfigError, load_config, parse_config

BASE = {"name": "exp", "data": {"train": "shards/"}}


def write(tmp_path, data):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("patch,message", [
    ({"engine": {"zero_stag": 1}}, "unknown key 'engine.zero_stag' (did you mean 'zero_stage'?)"),
    ({"engine": {"zero_stage": "three"}}, "engine.zero_stage: Input should be a valid integer"),
    ({"engine": {"zero_stage": 5}}, "engine.zero_stage must be 0-3"),
    ({"loop": {"epochs": 0}}, "loop.epochs must be >= 1"),
    ({"loop": {"epoch": 2}}, "unknown key 'loop.epoch' (did you mean 'epochs'?)"),
    ({"model": {"encoderr": "cnn-tiny"}}, "unknown key 'model.encoderr' (did you mean 'encoder'?)"),
    ({"data": {"trian": "x"}}, "unknown key 'data.trian' (did you mean 'train'?)"),
    ({"cluster": {"workers": 0}}, "cluster.workers: Value error, must be >= 1 (a count, or [MIN, MAX] for an elastic run) (got 0)"),
    ({"name": "Bad_Name"}, "name: String should match pattern"),
    ({"colour": 1}, "unknown key 'colour'"),
])
def test_bad_keys_and_values_name_file_and_key(tmp_path, patch, message):
    data = {**BASE, **{k: ({**BASE.get(k, {}), **v} if isinstance(v, dict) else v) for k, v in patch.items()}}
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(path + ": ") and message in str(info.value)


def test_overrides_are_typed_and_checked(tmp_path):
    path = write(tmp_path, BASE)
    config = load_config(path, ["engine.zero_stage=3", "loop.mean=[0.5, 0.5, 0.5]", "cluster.workers=4",
                                "augment.policy=rand-n2-m9"])
    assert config.engine_config().zero_stage == 3 and config.loop_config().mean == (0.5, 0.5, 0.5)
    assert config.cluster.workers == 4 and config.augment.policy == "rand-n2-m9"
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["engine.zero_stage"])
    with pytest.raises(ConfigError, match="unknown key 'engine.stage'"):
        load_config(path, ["engine.stage=1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_shipped_configs_validate():
    import glob

    paths = sorted(glob.glob("configs/*.yaml"))
    assert paths
    from augtrain.pipelines.finetune import finetune_config_from_experiment
    from augtrain.tune.config import parse_search_config
    from augtrain.tune.search import check_searchable

    for path in paths:
        data = yaml.safe_load(open(path))
        if "data" in data:  # experiment files (others are k8s or search inputs)
            experiment = parse_config(data, path)
            assert experiment.name
            if experiment.finetune is not None:  # its fine-tune section, and its search for that modality
                cfg = finetune_config_from_experiment(experiment, path)
                if experiment.search is not None:
                    check_searchable(cfg, parse_search_config(experiment.search, path))
