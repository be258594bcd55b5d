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


def test_a_mistyped_environment_variable_stops_the_start_with_a_hint():
    with pytest.raises(ConfigError, match="environment variable DEEPLENS_THRESHHOLD: unknown setting 'threshhold'; "
                                          "did you mean 'threshold'?"):
        load(env={"DEEPLENS_THRESHHOLD": "0.9"})
    assert load(env={"DEEPLENS_CONFIG": "edge.yaml", "DEEPLENS_DEVICES": "devices.yaml"}).port == 8080


def test_secrets_come_from_files_that_never_show_in_ps(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    (tmp_path / "empty").write_text("\n")
    assert load(env={}, overrides={"token_file": str(tmp_path / "token")}).token == "s3cret"
    assert load(env={"DEEPLENS_TOKEN": "given"}, overrides={"token_file": str(tmp_path / "token")}).token == "given"
    with pytest.raises(ConfigError, match="empty: the file that 'mqtt_password_file' names is empty|names is empty"):
        load(env={}, overrides={"mqtt_password_file": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="cannot read the file that 'token_file' names"):
        load(env={}, overrides={"token_file": str(tmp_path / "missing")})


@pytest.mark.parametrize("host, protect, need", [("127.0.0.1", "auto", False), ("0.0.0.0", "auto", True),
                                                 ("192.168.1.20", "no", False), ("localhost", "yes", True)])
def test_reads_need_the_token_when_listening_beyond_loopback(host, protect, need):
    assert load(env={}, overrides={"host": host, "protect_reads": protect}).reads_need_token is need


def test_a_certificate_needs_its_key():
    with pytest.raises(ConfigError, match="'tls_cert' and 'tls_key' go together"):
        load(env={}, overrides={"tls_cert": "edge.pem"})
