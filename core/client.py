"""The device client: one deeplens-edge device over its REST API (docs/rest-api.md).

Every controller verb that talks to a device goes through DeviceClient: `pull`, `capture`,
`status`, `threshold`, `models`, `rollback`, `swap-model` and `watch` (with core.watch for the
MQTT side). Errors come back as DeviceError with the device's own message and status.
"""
import io
import os

import requests

from .devices import Device, config_path, resolve
from .errors import DeviceError


class DeviceClient:
    def __init__(self, device, timeout=10.0):
        """`device`: a Device, or a DEVICE argument (URL, host:port or devices.yaml name)."""
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
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200] or response.reason
            raise DeviceError(f"{self.url}{path} answered {response.status_code}: {message}", response.status_code)
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
