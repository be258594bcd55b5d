"""Errors of the edge service beyond core.errors: its settings and its embedded broker."""
from core.errors import DeepLensError, InvalidInput


class ConfigError(InvalidInput):
    """A setting is unknown or invalid; the message names the key, value and source."""
    code = "invalid_setting"


class BrokerError(DeepLensError):
    """The embedded MQTT broker cannot be started."""
    code = "broker_unavailable"

