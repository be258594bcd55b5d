"""Which device a user means: a DEVICE argument resolved to a URL, a token and a pinned
certificate fingerprint (docs/cli.md).

A DEVICE is a URL (`https://camera:8443`), a `host:port` (`camera:8443`: the entry with that
host and port when there is one, else http) or a name from the controller's devices file,
`~/.config/deeplens-kit/devices.yaml` (or the file DEEPLENS_DEVICES names):

    devices:
      kitchen:
        url: https://192.168.1.20:8443
        token: the-token-set-on-the-device
        fingerprint: 3A:F1:...:9C        # SHA-256 of the device's certificate (https only)
      garage: http://garage.local:8080    # a bare URL: no token, nothing pinned

`deeplens-ctl devices add` writes entries (mode 0600: the file holds tokens). The token comes
from DEEPLENS_TOKEN, else from the device's entry; the fingerprint only from the entry.
"""
import dataclasses
import difflib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .errors import DeviceError
from .fileio import atomic_open
from .tls import pairs


@dataclasses.dataclass
class Device:
    name: str
    url: str
    token: str = ""
    fingerprint: str = ""   # the pinned SHA-256 of the certificate, "AB:CD:..." ("" = not pinned)

    @property
    def pinned(self):
        """True when connections are checked against the pinned fingerprint instead of CAs."""
        return bool(self.fingerprint) and self.url.startswith("https://")


def config_path():
    if os.environ.get("DEEPLENS_DEVICES"):
        return Path(os.environ["DEEPLENS_DEVICES"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "deeplens-kit" / "devices.yaml"


def _read(path):
    """The devices file as a dict ({} when there is none), its 'devices' mapping checked."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise DeviceError(f"{path}: cannot read the devices file ({exc})") from None
    entries = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise DeviceError(f"{path}: expected a mapping 'devices:' of name -> URL or {{url, token, fingerprint}}")
    return doc


def load_devices(path=None):
    """{name: Device} from the controller's devices file; {} when there is none."""
    path = Path(path) if path else config_path()
    devices = {}
    for name, entry in _read(path).get("devices", {}).items():
        entry = {"url": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not entry.get("url"):
            raise DeviceError(f"{path}: device '{name}' needs a url")
        fingerprint = ""
        if entry.get("fingerprint"):
            try:
                fingerprint = normalise_fingerprint(str(entry["fingerprint"]))
            except ValueError as exc:
                raise DeviceError(f"{path}: device '{name}': {exc}") from None
        devices[str(name)] = Device(str(name), normalise_url(str(entry["url"])), str(entry.get("token") or ""),
                                    fingerprint)
    return devices


def save_device(device, path=None):
    """Add or replace `device` in the devices file, keeping the other entries; returns the path.

    The file is written atomically with mode 0600 (it holds tokens), its folder made if needed.
    """
    path = Path(path) if path else config_path()
    doc = _read(path) or {"devices": {}}
    entry = {"url": device.url}
    if device.token:
        entry["token"] = device.token
    if device.fingerprint:
        entry["fingerprint"] = device.fingerprint
    doc["devices"][device.name] = entry
    _write(path, doc)
    return path


def remove_device(name, path=None):
    """Remove the entry `name` from the devices file; returns the path."""
    path = Path(path) if path else config_path()
    doc = _read(path)
    if name not in (doc.get("devices") or {}):
        raise DeviceError(f"no device '{name}' in {path}" + _hint(name, doc.get("devices") or {}, path))
    del doc["devices"][name]
    _write(path, doc)
    return path


def _write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = ("# deeplens-ctl devices add/remove keep this file; it holds tokens, keep it private (mode 0600)\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    with atomic_open(path, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)  # before a byte of it is written
        f.write(text)


def normalise_url(url):
    """`camera:8080` -> `http://camera:8080`; no trailing slash."""
    return (url if "://" in url else f"http://{url}").rstrip("/")


def _netloc(url):
    return urlsplit(normalise_url(url)).netloc.lower()


def resolve(device, devices=None):
    """A Device for a URL, host:port or configured name; the token from DEEPLENS_TOKEN wins over the file's.

    A URL that equals an entry's URL, or a host:port that is an entry's host and port (whatever
    its scheme), gets that entry's URL, token and fingerprint.
    """
    devices = load_devices() if devices is None else devices
    if device in devices:
        found = devices[device]
    elif "://" in device or ":" in device or "." in device:
        url = normalise_url(device)
        if "://" in device:
            found = next((d for d in devices.values() if d.url.lower() == url.lower()), None)
        else:
            found = next((d for d in devices.values() if _netloc(d.url) == _netloc(url)), None)
        found = found or Device(device, url)
    else:
        raise DeviceError(f"unknown device '{device}'" + _hint(device, devices, config_path()))
    return dataclasses.replace(found, token=os.environ.get("DEEPLENS_TOKEN") or found.token)


def _hint(name, devices, path):
    close = difflib.get_close_matches(name, devices, n=1)
    return f"; did you mean '{close[0]}'?" if close else \
        f"; configured: {', '.join(devices)}" if devices else f"; add it to {path}, or give a URL"


def normalise_fingerprint(text):
    """'ab:cd...', 'ABCD...', 'SHA256:AB:CD...' or openssl's 'sha256 Fingerprint=AB:CD...' ->
    'AB:CD:...'; ValueError unless it is 32 bytes of hex."""
    value = text.strip().rpartition("=")[2].strip()
    value = re.sub(r"^sha-?256:", "", value, flags=re.IGNORECASE)
    digits = re.sub(r"[\s:]", "", value)
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", digits):
        raise ValueError(f"'{text}' is not a SHA-256 fingerprint (64 hex digits, optionally in pairs joined by ':')")
    return pairs(digits)

