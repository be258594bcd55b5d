"""The devices a studio shows: those of devices.yaml (by name) and URLs typed on the page.

Every call goes through the one device client (core.client); a token typed on the page is
kept in memory only, never written to the project.
"""
import re
import threading
from urllib.parse import urlsplit

from core.client import DeviceClient
from core.devices import Device, config_path, load_devices, normalise_url
from core.errors import InvalidInput, NotFound

TIMEOUT = 8.0  # s: a device that does not answer by then is "not answering" on the page


class Devices:
    def __init__(self, project):
        self.project = project
        self._tokens, self._clients, self._lock = {}, {}, threading.Lock()
        self._file, self._file_stamp = {}, None

    def _configured(self):
        """devices.yaml's devices, read again only when the file changes: the page asks about a
        device several times a second."""
        path = config_path()
        try:
            stamp = (str(path), path.stat().st_mtime_ns)
        except FileNotFoundError:
            stamp = (str(path), None)
        if stamp != self._file_stamp:
            self._file, self._file_stamp = load_devices(path), stamp
        return self._file

    def _entries(self):
        """{id: (Device, source)}: devices.yaml first, then the project's typed URLs."""
        entries = {name: (device, "devices.yaml") for name, device in self._configured().items()}
        for url in self.project.devices:
            device_id = slug(url)
            entries.setdefault(device_id, (Device(device_id, url, self._tokens.get(url, "")), "page"))
        return entries

    def listing(self):
        return [{"id": device_id, "name": device.name, "url": device.url, "source": source,
                 "token": bool(device.token)} for device_id, (device, source) in self._entries().items()]

    def add(self, url, token=""):
        if not isinstance(url, str) or not re.match(r"^(https?://)?[\w.\-\[\]:]+(:\d+)?/?$", url.strip()):
            raise InvalidInput(f"url must look like http://camera:8080, got {url!r}", field="url")
        url = normalise_url(url.strip())
        with self._lock:
            if token:
                self._tokens[url] = str(token)
            self._clients.pop(slug(url), None)
            self.project.add_device(url)
        return {"id": slug(url), "url": url}

    def client(self, device_id):
        """The DeviceClient of a listed device (one per device, kept for its connection pool)."""
        with self._lock:
            entries = self._entries()
            if device_id not in entries:
                raise NotFound(f"no device {device_id!r}: add its URL on the Devices tab or with "
                               "`deeplens-ctl devices add`", "no_device")
            device = entries[device_id][0]
            client = self._clients.get(device_id)
            if client is None or client.device != device:
                client = self._clients[device_id] = DeviceClient(device, timeout=TIMEOUT)
            return client


def slug(url):
    """A device id for a typed URL: its host and port, path-safe ("10.0.0.7-8080")."""
    return re.sub(r"[^A-Za-z0-9]+", "-", urlsplit(url).netloc).strip("-")
