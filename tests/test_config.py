import os

import pytest

from dmi_tf import config as config_lib
from dmi_tf.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_are_a_valid_complete_config():
    config = config_lib.load(None)
    assert config.data.path is None
    assert config.model.name == "youtube_dnn"
    assert config.eval.selection_metric == "recall@50"


@pytest.mark.parametrize("name", sorted(os.listdir(os.path.join(REPO, "configs"))))
def test_every_shipped_config_loads(name):
    config_lib.load(os.path.join(REPO, "configs", name))


def test_file_values_and_overrides_apply(tmp_path):
    path = write(tmp_path, "model:\n  embedding_dim: 32\ntrain:\n  learning_rate: 5e-3\n")
    config = config_lib.load(path, ["model.num_interests=8", "data.path=some/dir"])
    assert config.model.embedding_dim == 32
    assert config.train.learning_rate == pytest.approx(5e-3)  # "5e-3" is a string in YAML 1.1
    assert config.model.num_interests == 8
    assert config.data.path == "some/dir"
    assert config.train.batch_size == 128  # untouched default


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "model:\n  num_interest: 4\n")
    pattern = r"c\.yaml.*unknown key 'model\.num_interest'.*num_interests"
    with pytest.raises(ConfigError, match=pattern):
        config_lib.load(path)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        config_lib.load(write(tmp_path, "modle: {}\n"))


@pytest.mark.parametrize("text, pattern", [
    ("model:\n  embedding_dim: 6.5\n", r"model\.embedding_dim must be int, got 6\.5"),
    ("model:\n  embedding_dim: true\n", r"model\.embedding_dim must be int, got True"),
    ("model:\n  name: nope\n", r"model\.name is 'nope'; it must be one of"),
    ("eval:\n  cutoffs: 50\n", r"eval\.cutoffs must be a list"),
    ("model: 3\n", r"model must be a mapping"),
    ("- a\n- b\n", r"top level must be a mapping"),
    ("train:\n  batch_size: 0\n", r"train\.batch_size must be >= 1"),
    ("train:\n  ema_momentum: 1.0\n", r"train\.ema_momentum must be in \[0, 1\)"),
    ("distribute:\n  intra_op_threads: 0\n", r"distribute\.intra_op_threads must be null"),
    ("model: [\n", r"invalid YAML"),
])
def test_wrong_types_and_values_are_named(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config_lib.load(write(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config_lib.load(str(tmp_path / "nope.yaml"))


def test_bad_override_form():
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        config_lib.load(None, ["model.num_interests"])


def test_dump_round_trips(tmp_path):
    config = config_lib.load(None, ["model.embedding_dim=16", "eval.cutoffs=[10, 20]",
                                    "eval.selection_metric=ndcg@10"])
    path = write(tmp_path, config_lib.dump_yaml(config))
    assert config_lib.load(path) == config
