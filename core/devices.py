"""Which device a user means: a DEVICE argument resolved to a URL and a token (docs/cli.md).

A DEVICE is a URL (`http://camera:8080`), a `host:port` (`camera:8080`, http assumed) or a
name from the controller's devices file, `~/.config/deeplens-kit/devices.yaml` (or the file
DEEPLENS_DEVICES names):

    devices:
      kitchen:
        url: http://192.168.1.20:8080
        token: the-token-set-on-the-device
      garage: http://garage.local:8080      # a bare URL, no token

The token for changes comes from DEEPLENS_TOKEN, else from the device's entry.
"""
import dataclasses
import difflib
import os
from pathlib import Path

import yaml

from .errors import DeviceError


@dataclasses.dataclass
class Device:
    name: str
    url: str
    token: str = ""


def config_path():
    if os.environ.get("DEEPLENS_DEVICES"):
        return Path(os.environ["DEEPLENS_DEVICES"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "deeplens-kit" / "devices.yaml"


def load_devices(path=None):
    """{name: Device} from the controller's devices file; {} when there is none."""
    path = Path(path) if path else config_path()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise DeviceError(f"{path}: cannot read the devices file ({exc})") from None
    entries = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise DeviceError(f"{path}: expected a mapping 'devices:' of name -> URL or {{url, token}}")
    devices = {}
    for name, entry in entries.items():
        entry = {"url": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not entry.get("url"):
            raise DeviceError(f"{path}: device '{name}' needs a url")
        devices[str(name)] = Device(str(name), normalise_url(entry["url"]), str(entry.get("token") or ""))
    return devices


def normalise_url(url):
    """`camera:8080` -> `http://camera:8080`; no trailing slash."""
    return (url if "://" in url else f"http://{url}").rstrip("/")


def resolve(device, devices=None):
    """A Device for a URL, host:port or configured name; the token from DEEPLENS_TOKEN wins over the file's."""
    devices = load_devices() if devices is None else devices
    if device in devices:
        found = devices[device]
    elif "://" in device or ":" in device or "." in device:
        url = normalise_url(device)
        found = next((d for d in devices.values() if d.url == url), Device(device, url))
    else:
        close = difflib.get_close_matches(device, devices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else \
            f"; configured: {', '.join(devices)}" if devices else f"; add it to {config_path()}, or give a URL"
        raise DeviceError(f"unknown device '{device}'{hint}")
    return dataclasses.replace(found, token=os.environ.get("DEEPLENS_TOKEN") or found.token)
