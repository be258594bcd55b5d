"""The device client: one deeplens-edge device over its REST API and its MQTT topics.

A DEVICE is a URL (`http://camera:8080`, or `camera:8080`) or a name from the controller's
config file, `~/.config/deeplens-kit/devices.yaml` (or the file DEEPLENS_DEVICES names):

    devices:
      kitchen:
        url: http://192.168.1.20:8080
        token: the-token-set-on-the-device
      garage: http://garage.local:8080      # a bare URL, no token

The token for model changes comes from DEEPLENS_TOKEN, else from the device's entry.
`swap()` is what `deeplens-ctl swap-model` does: pack, upload, activate, wait, first detections.
"""
import contextlib
import dataclasses
import difflib
import io
import json
import os
import queue
import tarfile
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import requests
import yaml

from shims.errors import ModelError
from shims.package import MODEL_JSON, load_package

POLL_S = 0.5
LOOPBACK = ("127.0.0.1", "localhost", "0.0.0.0", "::1", "")


class DeviceError(Exception):
    """A device refused a request, could not be reached, or a swap did not end well; the message says why."""


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
    """{name: Device} from the controller's config file; {} when there is none."""
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
        devices[str(name)] = Device(str(name), _normalise(entry["url"]), str(entry.get("token") or ""))
    return devices


def _normalise(url):
    return (url if "://" in url else f"http://{url}").rstrip("/")


def resolve(device, devices=None):
    """A Device for a URL or a configured name; the token from DEEPLENS_TOKEN wins over the file's."""
    devices = load_devices() if devices is None else devices
    if device in devices:
        found = devices[device]
    elif "://" in device or ":" in device or "." in device:
        url = _normalise(device)
        found = next((d for d in devices.values() if d.url == url), Device(device, url))
    else:
        close = difflib.get_close_matches(device, devices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else \
            f"; configured: {', '.join(devices)}" if devices else f"; add it to {config_path()}, or give a URL"
        raise DeviceError(f"unknown device '{device}'{hint}")
    return dataclasses.replace(found, token=os.environ.get("DEEPLENS_TOKEN") or found.token)


# -- packages ---------------------------------------------------------------------------------
def find_package(path):
    """The package to send: a .tar.gz, a package folder, or a `deeplens-ctl train` run folder (its model/)."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path, path / "model"):
        if (folder / MODEL_JSON).is_file():
            return folder
    raise DeviceError(f"{path}: neither a package (.tar.gz or a folder with {MODEL_JSON}) nor a training run "
                      f"with an exported model/ (has the run finished?)")


@contextlib.contextmanager
def packed(path):
    """Yields (archive path, model.json dict) for a package folder, run folder or archive."""
    source = find_package(path)
    if source.is_file():
        yield source, _archive_meta(source)
        return
    try:
        pkg = load_package(source)
    except ModelError as exc:
        raise DeviceError(f"not sending a broken package: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="deeplens-swap-") as tmp:
        archive = Path(tmp) / f"{pkg.name}-{pkg.version}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for name in (MODEL_JSON, *pkg.files):
                tar.add(source / name, arcname=name, recursive=False)
        yield archive, pkg.to_json()


def _archive_meta(archive):
    try:
        with tarfile.open(archive, "r:*") as tar:
            member = next(m for m in tar.getmembers() if m.name.lstrip("./") == MODEL_JSON)
            return json.load(tar.extractfile(member))
    except (tarfile.TarError, StopIteration, ValueError, OSError) as exc:
        raise DeviceError(f"{archive}: not a package archive with {MODEL_JSON} ({exc or 'missing'})") from None


class _Progress(io.RawIOBase):
    """A file read by requests in blocks, reporting each block (for a progress bar)."""

    def __init__(self, path, callback):
        self._file, self._callback = open(path, "rb"), callback
        self._size = os.fstat(self._file.fileno()).st_size

    def __len__(self):
        return self._size

    def read(self, size=-1):
        data = self._file.read(size)
        self._callback(len(data))
        return data

    def close(self):
        self._file.close()
        super().close()


# -- the REST API -----------------------------------------------------------------------------
class DeviceClient:
    def __init__(self, device, timeout=10.0):
        self.device = device if isinstance(device, Device) else resolve(device)
        self.url, self.timeout = self.device.url, timeout
        self.session = requests.Session()

    def _call(self, method, path, auth=False, timeout=None, **kwargs):
        if auth:
            if not self.device.token:
                raise DeviceError(f"model changes need the device's token: set DEEPLENS_TOKEN or 'token' under "
                                  f"'{self.device.name}' in {config_path()}")
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {self.device.token}"}
        try:
            response = self.session.request(method, self.url + path, timeout=timeout or self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise DeviceError(f"cannot reach {self.url}: {exc.__class__.__name__}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = error["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200] or response.reason
            raise DeviceError(f"{self.url}{path} answered {response.status_code}: {message}")
        return response

    def status(self):
        return self._call("GET", "/status").json()

    def models(self):
        return self._call("GET", "/models").json()

    def threshold(self, body=None):
        if body is None:
            return self._call("GET", "/threshold").json()
        return self._call("PUT", "/threshold", json=body).json()

    def capture(self, **params):
        """(image bytes, response headers) of a clean frame."""
        response = self._call("GET", "/capture", params={k: v for k, v in params.items() if v is not None})
        return response.content, response.headers

    def upload(self, archive, progress=None):
        """Send a package archive; the device checks it before answering (minutes for a big model)."""
        body = _Progress(archive, progress or (lambda n: None))
        try:
            return self._call("POST", "/models", auth=True, data=body, timeout=(self.timeout, 600),
                              headers={"Content-Type": "application/gzip"}).json()
        finally:
            body.close()

    def activate(self, version):
        return self._call("POST", f"/models/{version}/activate", auth=True, timeout=120).json()

    def rollback(self):
        return self._call("POST", "/models/rollback", auth=True, timeout=120).json()

    def delete(self, version):
        return self._call("DELETE", f"/models/{version}", auth=True).json()


# -- MQTT, with /status polling when the broker is out of reach -------------------------------
class Watcher:
    """The device's status documents and detection events as they come."""

    def __init__(self, client, connect_timeout=5.0):
        self.client = client
        status = client.status()
        prefix = f"deeplens/{status['device_id']}/"
        self.topics = {prefix + "status": "status", prefix + "detections": "detections"}
        self.queues = {"status": queue.Queue(), "detections": queue.Queue()}
        self.broker, self._mqtt = self._broker_address(status), None
        if self.broker:
            self._mqtt = self._connect(connect_timeout)

    @property
    def over_mqtt(self):
        return self._mqtt is not None

    def _broker_address(self, status):
        """The broker the device publishes to, as this machine reaches it."""
        address = (status.get("mqtt") or {}).get("broker")
        if not address:
            return None
        host, _, port = address.rpartition(":")
        device_host = urlsplit(self.client.url).hostname or ""
        if host in LOOPBACK and device_host not in LOOPBACK:
            host = device_host
        return host, int(port)

    def _connect(self, timeout):
        subscribed = queue.Queue()
        paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        paho.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in self.topics])
        paho.on_subscribe = lambda c, u, mid, rcs, p: subscribed.put(True)
        paho.on_message = lambda c, u, m: self.queues[self.topics[m.topic]].put((time.monotonic(), m.payload))
        paho.connect_timeout = timeout
        try:
            paho.connect(*self.broker)
        except OSError:
            return None
        paho.loop_start()
        try:
            subscribed.get(timeout=timeout)
        except queue.Empty:
            paho.loop_stop()
            return None
        return paho

    def close(self):
        if self._mqtt is not None:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def next(self, kind, deadline):
        """The next `kind` ('status' or 'detections') document before `deadline`, else None."""
        return self._take(kind, deadline)[1]

    def _take(self, kind, deadline):
        """(when it arrived, document), or (None, None) at the deadline."""
        if not self.over_mqtt:
            if kind != "status" or time.monotonic() >= deadline:
                return None, None
            time.sleep(POLL_S)
            return time.monotonic(), self.client.status()
        try:
            arrived, payload = self.queues[kind].get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None, None
        return arrived, json.loads(payload)

    def wait_outcome(self, swap, deadline):
        """Wait until the swap `swap` (a last_swap document) passes its health check; raises
        DeviceError with the device's reason when it rolls back, or at the deadline."""
        while True:
            doc = self.next("status", deadline)
            if doc is None:
                raise DeviceError(f"the device did not report {swap['to']} healthy in time (still "
                                  f"{'watching it' if self.over_mqtt else 'checking'}; see deeplens-ctl status)")
            models = doc.get("models") or {}
            last = models.get("last_swap") or {}
            if (last.get("to"), last.get("at")) != (swap["to"], swap["at"]):
                continue
            if last.get("result") == "ok":
                return doc
            if last.get("result") == "rolled_back":
                reason = (models.get("last_rollback") or {}).get("reason", "no reason given")
                raise DeviceError(f"the device rolled {swap['to']} back to {models.get('active')}: {reason}")

    def first_detections(self, version, deadline):
        """(arrival time, event) of the first detection event by `version`; (None, None) without
        MQTT or when none came before the deadline."""
        while True:
            arrived, event = self._take("detections", deadline)
            if event is None or event.get("model_version") == version:
                return arrived, event


def swap(client, path, activate=True, wait=60.0, progress=None, progress_start=None):
    """Upload a package (folder, run folder or archive), activate it, and wait for the device to
    call it healthy and for its first detections. Returns a summary dict; DeviceError otherwise.

    `progress_start(total_bytes)` and `progress(bytes)` drive a progress bar.
    """
    with packed(path) as (archive, meta), contextlib.ExitStack() as stack:
        watcher = stack.enter_context(Watcher(client)) if activate and wait else None
        if progress_start:
            progress_start(os.path.getsize(archive))
        started = time.monotonic()
        stored = client.upload(archive, progress)
        result = {"version": stored["version"], "stored": stored}
        if not activate:
            return result
        models = client.activate(stored["version"])
        result["swap"] = models["last_swap"]
        if watcher is None:
            return result
        deadline = started + wait
        result["status"] = watcher.wait_outcome(models["last_swap"], deadline)["models"]
        result["over_mqtt"] = watcher.over_mqtt
        if watcher.over_mqtt:
            arrived, event = watcher.first_detections(stored["version"], max(deadline, time.monotonic() + 5))
            if event is not None:
                result["first_detections"] = event
                result["first_detection_s"] = round(arrived - started, 3)
        return result
