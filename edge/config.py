"""The edge service's settings: defaults, then a YAML file, then DEEPLENS_* variables, then flags.

Every setting is declared once in SETTINGS with its type, default and help; the CLI builds its
flags from the same table, so a setting cannot be documented in one place and missing in another.
Errors name the key, the bad value and where it came from (file and line, variable, or flag).
"""
import dataclasses
import difflib
import ipaddress
import json
import os
import socket
from pathlib import Path

import yaml

from core.crop import CROPS, DEFAULT_CROP
from core.errors import CameraError
from shims.camera import parse_spec
from shims.settings import DEFAULT_ARTIFACTS, DEFAULT_CAMERA

from .counting import MAX_WINDOW, values_problem, zones_problem
from .discovery import prefix_problem
from .errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Setting:
    key: str
    kind: type
    default: object
    help: str
    check: object = None  # callable(value) -> error sentence or None


def _port(value):
    return None if 0 <= value <= 65535 else "must be a TCP port, 0..65535"


def _unit(value):
    return None if 0.0 <= value <= 1.0 else "must be between 0 and 1"


def _positive(value):
    return None if value > 0 else "must be greater than 0"


def _not_negative(value):
    return None if value >= 0 else "must be 0 or more"


def _size(value):
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        return "must be WIDTHxHEIGHT, e.g. 1920x1080"
    return None if width > 0 and height > 0 else "must be WIDTHxHEIGHT, e.g. 1920x1080"


def _broker(value):
    if value in ("embedded", "none"):
        return None
    host, _, port = value.rpartition(":")
    return None if host and port.isdigit() else "must be HOST:PORT, 'embedded' or 'none'"


def _camera(value):
    try:
        parse_spec(value)
    except CameraError as exc:
        return f"is not a camera spec ({exc})"
    return None


def _level(value):
    return None if value.upper() in ("DEBUG", "INFO", "WARNING", "ERROR") else "must be debug, info, warning or error"


SETTINGS = [
    Setting("host", str, "127.0.0.1", "Address the REST API and the embedded MQTT broker listen on (127.0.0.1: "
            "this machine only; 0.0.0.0: every network, which needs a token and broker credentials)."),
    Setting("port", int, 8080, "Port of the REST API.", _port),
    Setting("tls_cert", str, "", "PEM certificate (chain) for HTTPS, and for the embedded broker's TLS; "
            "`deeplens-edge install` makes a self-signed one (empty: plain HTTP)."),
    Setting("tls_key", str, "", "PEM private key of tls_cert."),
    Setting("camera", str, DEFAULT_CAMERA, "Camera spec: synthetic[:SEED], folder:PATH, video:PATH, webcam:INDEX or url:URL, "
            "with options ?size=WxH&fps=N&faults=band:P,black:P,freeze:P,drop:P.", _camera),
    Setting("frame_size", str, "1920x1080", "Size of synthetic frames, WIDTHxHEIGHT.", _size),
    Setting("artifacts", str, DEFAULT_ARTIFACTS, "Model folder (the device's /opt/awscam/artifacts)."),
    Setting("model", str, "", "Model to run when the model store has no active version: a package folder or a "
            "name in the artifacts folder (default: the newest there)."),
    Setting("crop", str, DEFAULT_CROP, "How frames meet the model's input: 'center' crops the centred region of the "
            "model's aspect ratio (a square for square models, as /capture?crop=square), 'stretch' resizes the whole frame.",
            lambda v: None if v in CROPS else f"must be one of {', '.join(CROPS)}"),
    Setting("state_dir", str, "", "Where settings changed at run time are kept (default: $STATE_DIRECTORY or ~/.local/state/deeplens-edge)."),
    Setting("device_id", str, "", "Device name used in MQTT topics (default: this host's name)."),
    Setting("thing_name", str, "", "AWS IoT thing name for the legacy topic (default: $AWS_IOT_THING_NAME or deeplens_<device_id>)."),
    Setting("broker", str, "embedded", "MQTT broker: HOST:PORT, 'embedded' (start one here) or 'none'.", _broker),
    Setting("mqtt_port", int, 1883, "Port the embedded broker prefers; when it is taken another free port is used "
            "and said at start and in /status (0: any free port).", _port),
    Setting("mqtt_username", str, "", "MQTT user name; with mqtt_password, the embedded broker's one user allowed "
            "to publish (anonymous clients may then only read, and only on loopback)."),
    Setting("mqtt_password", str, "", "MQTT password."),
    Setting("mqtt_password_file", str, "", "File whose first line is the MQTT password (keeps it out of `ps` and the "
            "environment)."),
    Setting("mqtt_tls", bool, False, "Connect to the broker over TLS."),
    Setting("mqtt_ca_file", str, "", "CA bundle for MQTT over TLS (default: the system's)."),
    Setting("mqtt_queue", int, 1000, "Events kept while the broker is away; older ones are dropped and counted.", _positive),
    Setting("legacy_topic", bool, False, "Also publish {label: prob} on $aws/things/<thing>/infer, as DeepLens did."),
    Setting("discovery_prefix", str, "homeassistant", "Home Assistant MQTT discovery prefix: a sensor per class, "
            "zone and class, and total appears there ('none': no discovery; turning it off removes them).",
            prefix_problem),
    Setting("discovery_unit", str, "notes", "Unit of the count sensors in Home Assistant."),
    Setting("max_event_rate", float, 0.0, "Most detection events per second (0: one per processed frame).", _not_negative),
    Setting("threshold", float, 0.4, "Detection score threshold until one is set at run time.", _unit),
    Setting("capture_deadline", float, 2.0, "Seconds /capture waits for a clean frame before answering 503.", _positive),
    Setting("capture_fresh_s", float, 0.05, "/capture serves the camera's latest frame at once when it was taken less "
            "than this many seconds ago (0.05: about one frame period, so a running camera answers at once); "
            "otherwise, and always with 0, it waits for the camera's next frame.",
            lambda v: None if 0.0 <= v <= 1.0 else "must be between 0 and 1 (seconds)"),
    Setting("capture_burst_s", float, 5.0, "Most seconds a /capture burst may take by its count and interval_ms; "
            "longer is refused with 400 (slower sequences: one frame at a time, as deeplens-ctl pull does).",
            _positive),
    Setting("capture_budget_mb", float, 256.0, "Most megabytes one /capture may come to (count x each frame's estimated "
            "size: width x height x 3 for PNG, a quarter of that for JPEG); more is refused with 413 before any work.",
            _positive),
    Setting("live_slots", int, 8, "Most long-lived responses (/stream viewers, /capture bursts) at once; they get "
            "their own threads, so the API always answers; more are refused with 503.", _positive),
    Setting("live_per_client", int, 4, "Most long-lived responses one client address may hold at once.", _positive),
    Setting("write_timeout", float, 10.0, "Seconds a client may leave a response unread (or a request unsent) "
            "before it is dropped; a live view client that takes longer than this to take one frame is dropped too.",
            _positive),
    Setting("token", str, "", "Bearer token that every change (threshold, model upload, activate, rollback, delete) "
            "must send as 'Authorization: Bearer TOKEN'; without one they are refused."),
    Setting("token_file", str, "", "File whose first line is the token (keeps it out of `ps` and the environment)."),
    Setting("protect_reads", str, "auto", "Whether reads (/capture, /stream, /status, ...) need the token too: "
            "yes, no, or auto (yes when listening beyond loopback).",
            lambda v: None if v in ("auto", "yes", "no") else "must be auto, yes or no"),
    Setting("keep_versions", int, 5, "Model versions the store keeps; older ones are pruned "
            "(the active one, its rollback target and the newest always stay).", _positive),
    Setting("max_upload_mb", float, 200.0, "Largest model package accepted, packed or unpacked, in MB.", _positive),
    Setting("model_input", str, "", "Input size, WIDTHxHEIGHT, an uploaded model must take (default: the active model's).",
            lambda v: _size(v) if v else None),
    Setting("health_frames", int, 30, "Frames a newly activated model is watched for before it counts as good "
            "(0: no watch); a failure rolls back to the previous version.", _not_negative),
    Setting("health_slowdown", float, 5.0, "A watched model fails when its median inference time exceeds its "
            "warm-up time this many times over.", _positive),
    Setting("keep_mb", float, 200.0, "Size of the store of frames worth labelling (uncertain, count changed, "
            "marked with POST /keep), in MB; the oldest are dropped to make room (0: keep none).", _not_negative),
    Setting("keep_dir", str, "", "Folder of the frames worth labelling (default: keep/ in the state folder)."),
    Setting("keep_floor", float, 0.2, "A frame whose best score lies from this up to its class's threshold is "
            "uncertain, so worth labelling.", _unit),
    Setting("keep_interval_s", float, 2.0, "Least seconds between two frames kept for one reason (uncertain, count "
            "changed), so a stream of them does not fill the store; operator marks are never held back.",
            _not_negative),
    Setting("keep_dedup_bits", int, 10, "A frame within this many bits (256-bit perceptual hash, as `deeplens-ctl "
            "pull`) of the last kept one is not kept again (0: identical frames only).",
            lambda v: None if 0 <= v <= 256 else "must be between 0 and 256"),
    Setting("count_window", int, 5, "Frames each count is the median of (odd: one missed or phantom frame in it "
            "changes nothing; a real change shows after window/2 frames).",
            lambda v: None if 1 <= v <= MAX_WINDOW and v % 2 else f"must be an odd number from 1 to {MAX_WINDOW}"),
    Setting("class_values", dict, {}, "What one object of a class is worth, summed into the counts' total: "
            "'2000 RUB=2000,1000 RUB=1000', JSON, or a mapping in the config file; wins over the model's own "
            "values (a class the active model lacks is reported in /status and ignored).", values_problem),
    Setting("zones", list, [], "Named polygons in normalised frame coordinates, counted apart, until PUT /zones "
            "sets others: a list of {name, points: [[x, y], ...]} in the config file, or JSON.", zones_problem),
    Setting("zones_only", bool, False, "With zones set, count only detections whose box centre lies in a zone "
            "(until PUT /zones says otherwise)."),
    Setting("log_level", str, "warning", "Log level: debug, info, warning or error.", _level),
]
BY_KEY = {s.key: s for s in SETTINGS}
SECRET_FILES = {"token": "token_file", "mqtt_password": "mqtt_password_file"}  # a file fills the value left empty
# DEEPLENS_* variables that are not settings: the config file's name, and the controller's devices file.
NOT_SETTINGS = {"DEEPLENS_CONFIG", "DEEPLENS_DEVICES"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Validated settings, one attribute per entry of SETTINGS."""
    values: dict

    def __getattr__(self, key):
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def frame_dims(self):
        width, height = (int(v) for v in self.frame_size.lower().split("x"))
        return width, height

    @property
    def state_path(self):
        folder = self.state_dir or os.environ.get("STATE_DIRECTORY") or "~/.local/state/deeplens-edge"
        return Path(folder).expanduser()

    @property
    def store_path(self):
        return Path(self.artifacts) / "models"

    @property
    def device(self):
        return self.device_id or socket.gethostname().split(".")[0]

    @property
    def thing(self):
        return self.thing_name or os.environ.get("AWS_IOT_THING_NAME") or f"deeplens_{self.device}"

    @property
    def beyond_loopback(self):
        """Whether the service listens for other machines, not only this one."""
        return not is_loopback(self.host)

    @property
    def reads_need_token(self):
        return self.protect_reads == "yes" or (self.protect_reads == "auto" and self.beyond_loopback)

    def replace(self, **changes):
        return load(overrides=changes, base=self)


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _coerce(setting, raw, source):
    """Turn a value from YAML, the environment or a flag into the setting's type."""
    try:
        if setting.kind is bool:
            if isinstance(raw, bool):
                value = raw
            elif str(raw).lower() in ("1", "true", "yes", "on"):
                value = True
            elif str(raw).lower() in ("0", "false", "no", "off", ""):
                value = False
            else:
                raise ValueError
        elif setting.kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(raw)
        elif setting.kind is float:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        elif setting.kind in (dict, list):
            value = _structured(setting.kind, raw)
        else:
            if isinstance(raw, (dict, list)):
                raise ValueError
            value = "" if raw is None else str(raw)
    except (TypeError, ValueError):
        kind = STRUCTURED.get(setting.kind, setting.kind.__name__)
        raise ConfigError(f"{source}: '{setting.key}' must be {kind}, got {raw!r}") from None
    problem = setting.check(value) if setting.check else None
    if problem:
        raise ConfigError(f"{source}: '{setting.key}' {problem}, got {raw!r}")
    return value


STRUCTURED = {dict: "a mapping (in the config file), JSON or NAME=VALUE,NAME=VALUE",
              list: "a list (in the config file) or JSON"}


def _structured(kind, raw):
    """A mapping or list setting: as it is from the config file; from a variable or flag, JSON
    text or, for a mapping, NAME=VALUE pairs separated by commas (values stay text: the
    setting's check reads them)."""
    if isinstance(raw, kind):
        return raw
    if raw is None:
        return kind()
    if not isinstance(raw, str):
        raise ValueError
    text = raw.strip()
    if not text:
        return kind()
    if text[0] in "[{":
        value = json.loads(text)
        if not isinstance(value, kind):
            raise ValueError
        return value
    if kind is not dict:
        raise ValueError
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip():
            raise ValueError
        pairs[name.strip()] = value.strip()
    return pairs


def _unknown(key, source):
    close = difflib.get_close_matches(key, BY_KEY, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(BY_KEY)}"
    return ConfigError(f"{source}: unknown setting '{key}'{hint}")


def read_file(path):
    """{key: (value, 'file:line')} from a YAML mapping, line numbers kept for error messages."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}:{root.start_mark.line + 1}: the config file must be a mapping of key: value")
    values = {}
    for key_node, value_node in root.value:
        where = f"{path}:{key_node.start_mark.line + 1}"
        key = key_node.value.replace("-", "_")
        if key not in BY_KEY:
            raise _unknown(key, where)
        values[key] = (yaml.safe_load(yaml.serialize(value_node)), where)
    return values


def load(config_file=None, env=None, overrides=None, base=None):
    """Build a Config: `base` (or defaults) < config file < DEEPLENS_* env < `overrides` (flags)."""
    env = os.environ if env is None else env
    values = dict(base.values) if base else {s.key: s.default for s in SETTINGS}
    layers = []
    if config_file:
        layers.append(read_file(config_file))
    layers.append({key[len("DEEPLENS_"):].lower(): (raw, f"environment variable {key}")
                   for key, raw in env.items() if key.startswith("DEEPLENS_") and key not in NOT_SETTINGS})
    layers.append({key: (raw, f"option --{key.replace('_', '-')}")
                   for key, raw in (overrides or {}).items() if raw is not None})
    for layer in layers:
        for key, (raw, source) in layer.items():
            if key not in BY_KEY:
                raise _unknown(key, source)
            values[key] = _coerce(BY_KEY[key], raw, source)
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise ConfigError("'tls_cert' and 'tls_key' go together: set both (HTTPS) or neither (HTTP)")
    for key, file_key in SECRET_FILES.items():
        if values[file_key] and not values[key]:
            values[key] = _read_secret(values[file_key], file_key)
    return Config(values)


def _read_secret(path, key):
    """The first line of a token or password file."""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file that '{key}' names ({exc.strerror})") from None
    if not secret or not secret[0].strip():
        raise ConfigError(f"{path}: the file that '{key}' names is empty")
    return secret[0].strip()
