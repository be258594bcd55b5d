"""Settings the shims read from the environment, as a DeepLens Lambda cannot be given arguments.

`deeplens-edge` sets these from its own configuration before it imports Lambda code.
"""
import os

DEFAULT_ARTIFACTS = "/opt/awscam/artifacts"
DEFAULT_CAMERA = "synthetic"
DEFAULT_FRAME_SIZE = (1920, 1080)


def artifacts_dir():
    """Where models live: `DEEPLENS_ARTIFACTS`, else the device's `/opt/awscam/artifacts`."""
    return os.environ.get("DEEPLENS_ARTIFACTS") or DEFAULT_ARTIFACTS


def camera_spec():
    return os.environ.get("DEEPLENS_CAMERA") or DEFAULT_CAMERA


def frame_size():
    """`DEEPLENS_FRAME_SIZE` as `WIDTHxHEIGHT` (e.g. `1280x720`); empty: the camera's own size,
    DEFAULT_FRAME_SIZE for the synthetic camera."""
    return os.environ.get("DEEPLENS_FRAME_SIZE", "")


def broker():
    """`HOST:PORT` of the MQTT broker the greengrasssdk shim publishes to (empty: none)."""
    return os.environ.get("DEEPLENS_BROKER", "")


def broker_login():
    """(user name, password) for the broker: `DEEPLENS_MQTT_USERNAME`, `DEEPLENS_MQTT_PASSWORD` (empty: anonymous)."""
    return os.environ.get("DEEPLENS_MQTT_USERNAME", ""), os.environ.get("DEEPLENS_MQTT_PASSWORD", "")


def broker_tls():
    """`DEEPLENS_MQTT_TLS`: the broker (deeplens-edge's own, on this machine) speaks TLS."""
    return os.environ.get("DEEPLENS_MQTT_TLS", "").lower() in ("1", "true", "yes", "on")


def thing_name():
    return os.environ.get("AWS_IOT_THING_NAME", "deeplens_local")
