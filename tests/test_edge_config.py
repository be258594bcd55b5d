"""Edge settings: defaults < YAML file < DEEPLENS_* environment < flags, with errors that say where."""
import pytest

from edge.config import SETTINGS, load
from edge.errors import ConfigError


def test_layers_win_in_order(tmp_path):
    config_file = tmp_path / "edge.yaml"
    config_file.write_text("port: 9001\nthreshold: 0.6\ncamera: webcam:0\n")
    config = load(config_file, env={"DEEPLENS_PORT": "9002", "DEEPLENS_THRESHOLD": "0.7"},
                  overrides={"port": 9003, "camera": None})
    assert (config.port, config.threshold, config.camera) == (9003, 0.7, "webcam:0")
    assert load(env={}).port == 8080


def test_every_setting_has_a_default_of_its_type_and_help():
    for setting in SETTINGS:
        assert isinstance(setting.default, setting.kind) and setting.help.endswith(".")


@pytest.mark.parametrize("text, message", [
    ("port: 8080\nthreshhold: 0.5\n", ":2: unknown setting 'threshhold'; did you mean 'threshold'?"),
    ("port: eighty\n", ":1: 'port' must be int, got 'eighty'"),
    ("threshold: 2\n", ":1: 'threshold' must be between 0 and 1, got 2"),
    ("frame_size: 1920*1080\n", ":1: 'frame_size' must be WIDTHxHEIGHT"),
    ("camera: webcam:front\n", ":1: 'camera' is not a camera spec"),
    ("port: [1, 2\n", ":2: not valid YAML (expected ',' or ']'"),
    ("- port\n", ":1: the config file must be a mapping"),
])
def test_file_errors_name_the_line_and_key(tmp_path, text, message):
    config_file = tmp_path / "edge.yaml"
    config_file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(config_file, env={})
    assert str(caught.value).startswith(str(config_file)) and message in str(caught.value)


def test_environment_errors_name_the_variable():
    with pytest.raises(ConfigError, match="environment variable DEEPLENS_MQTT_TLS: 'mqtt_tls' must be bool"):
        load(env={"DEEPLENS_MQTT_TLS": "maybe"})


def test_booleans_read_the_usual_spellings():
    assert load(env={"DEEPLENS_LEGACY_TOPIC": "yes"}).legacy_topic is True
    assert load(env={"DEEPLENS_LEGACY_TOPIC": "0"}).legacy_topic is False


def test_derived_names(monkeypatch):
    config = load(env={}, overrides={"device_id": "kitchen"})
    assert config.thing == "deeplens_kitchen"
    monkeypatch.setenv("AWS_IOT_THING_NAME", "deeplens_abc")
    assert config.thing == "deeplens_abc"
    assert load(env={}, overrides={"frame_size": "640x360"}).frame_dims == (640, 360)
