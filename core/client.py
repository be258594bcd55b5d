"""The device client: one deeplens-edge device over its REST API (docs/rest-api.md).

Every controller verb that talks to a device goes through DeviceClient: `pull`, `capture`,
`status`, `threshold`, `models`, `rollback`, `swap-model`, `watch` (with core.watch for the
MQTT side) and `doctor`. Errors come back as DeviceError with the device's own message and status.

HTTPS: a device whose devices.yaml entry pins a certificate fingerprint (`deeplens-ctl devices
add`) is reached with that certificate only, whatever its name or issuer (a device makes its
own self-signed one); without a pinned fingerprint the usual CA checks apply. The token, when
known, goes with every request (a device may protect reads too).
"""
import io
import os
import re
import socket
import ssl
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from .devices import Device, config_path, resolve
from .tls import fingerprint
from .errors import DeviceError


class DeviceClient:
    def __init__(self, device, timeout=10.0):
        """`device`: a Device, or a DEVICE argument (URL, host:port or devices.yaml name)."""
        self.device = device if isinstance(device, Device) else resolve(device)
        self.url, self.timeout = self.device.url, timeout
        self.session = requests.Session()
        self._verify = True
        if self.device.pinned:
            self.session.mount("https://", PinnedAdapter(self.device.fingerprint))
            self._verify = False  # no CA or name checks: the fingerprint is the check

    @property
    def token(self):
        return self.device.token

    def _call(self, method, path, auth=False, timeout=None, **kwargs):
        """`auth`: the request needs the token (a string says for what, in the error without one)."""
        if auth and not self.device.token:
            what = auth if isinstance(auth, str) else "model changes"
            raise DeviceError(f"{what} need the device's token: set DEEPLENS_TOKEN, or store it with "
                              f"`deeplens-ctl devices add {self._name} {self.url} --token TOKEN` ({config_path()})")
        if self.device.token:
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {self.device.token}"}
        kwargs.setdefault("verify", self._verify)
        try:
            response = self.session.request(method, self.url + path, timeout=timeout or self.timeout, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(exc) from None
        except requests.RequestException as exc:
            hint = self._plain_hint() if isinstance(exc, requests.ConnectionError) and \
                re.search(r"aborted|reset|BadStatusLine|RemoteDisconnected", str(exc)) else ""
            raise DeviceError(f"cannot reach {self.url}: {exc.__class__.__name__}: {exc}{hint}",
                              code="device_unreachable") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message, code = error["message"], error.get("code")
            except (ValueError, KeyError, TypeError, AttributeError):
                message, code = response.text[:200] or response.reason, None
            if response.status_code == 401:
                message += ("; the token is wrong: store the device's token with " if self.device.token else
                            "; it needs the device's token: set DEEPLENS_TOKEN or store it with ") + \
                    f"`deeplens-ctl devices add {self._name} {self.url} --token TOKEN`"
            raise DeviceError(f"{self.url}{path} answered {response.status_code}: {message}", response.status_code,
                              code=code)
        return response

    @property
    def _name(self):
        return self.device.name if "://" not in self.device.name and ":" not in self.device.name else "NAME"

    def _tls_error(self, exc):
        text = str(exc)
        if "Fingerprints did not match" in text:
            seen = re.search(r'got "([0-9a-fA-F:]+)"', text)
            seen = fingerprint_from_hex(seen.group(1)) if seen else "unknown"
            return DeviceError(certificate_changed(self.device, seen))
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return DeviceError(f"{self.url} presents a certificate that this machine does not trust (the device's "
                               f"own self-signed one?): check it and pin it with `deeplens-ctl devices add "
                               f"{self._name} {self.url} --token TOKEN`")
        if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text.lower():
            return DeviceError(f"{self.url} does not answer HTTPS on that port: use "
                               f"http://{urlsplit(self.url).netloc} if the device serves plain HTTP")
        return DeviceError(f"cannot reach {self.url} over TLS: {text}")

    def _plain_hint(self):
        """For a plain-http URL whose port answers TLS: say so (the device moved to HTTPS). Only
        asked when the connection broke off, as a TLS server does on plain HTTP."""
        parts = urlsplit(self.url)
        if parts.scheme != "http":
            return ""
        try:
            peer_certificate(parts.hostname, parts.port or 80, timeout=1.5)
        except OSError:
            return ""
        return f" (that port speaks HTTPS: use https://{parts.netloc})"

    def health(self):
        """The response to GET /health (never needs the token; its Date header is the device's clock)."""
        return self._call("GET", "/health")

    def status(self):
        return self._call("GET", "/status").json()

    def mqtt(self):
        """How to reach the device's broker: {host, port, tls, username, password} (needs the token)."""
        return self._call("GET", "/mqtt", auth="the broker's address and credentials").json()

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

    def detections(self):
        """The latest frame's detections (GET /detections)."""
        return self._call("GET", "/detections").json()

    def stream(self, size=None):
        """The live view (GET /stream, MJPEG with boxes drawn): (content type, iterator of bytes);
        the connection closes when the iterator is closed."""
        response = self._call("GET", "/stream", params={"size": size} if size else None, stream=True,
                              timeout=(self.timeout, 30))

        def blocks():
            try:
                yield from response.iter_content(1 << 14)
            finally:
                response.close()
        return response.headers.get("Content-Type"), blocks()

    def archive(self, version, block=1 << 16):
        """The stored package `version` as .tar.gz blocks (GET /models/<version>/archive)."""
        response = self._call("GET", f"/models/{version}/archive", stream=True, timeout=(self.timeout, 120))
        try:
            yield from response.iter_content(block)
        finally:
            response.close()

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

    def kept(self):
        """The frames worth labelling the device keeps (GET /keep): its totals and `frames`, oldest first."""
        return self._call("GET", "/keep").json()

    def kept_image(self, name):
        """A kept frame's JPEG bytes (GET /keep/<name>)."""
        return self._call("GET", f"/keep/{quote(name, safe='')}", timeout=(self.timeout, 60)).content

    def kept_sidecar(self, name):
        """A kept frame's sidecar, in the pull's format with suggested labels in `truth` (GET /keep/<name>.json)."""
        return self._call("GET", f"/keep/{quote(name, safe='')}.json").json()

    def keep(self):
        """Mark the device's latest frame as worth labelling (POST /keep); its entry."""
        return self._call("POST", "/keep", auth="marking frames worth labelling").json()

    def forget_kept(self, name):
        return self._call("DELETE", f"/keep/{quote(name, safe='')}", auth="deleting kept frames").json()


class PinnedAdapter(HTTPAdapter):
    """HTTPS checked against one certificate fingerprint (urllib3's assert_fingerprint) instead
    of CAs and names; use with verify=False."""

    def __init__(self, fingerprint, **kwargs):
        self.fingerprint = fingerprint.replace(":", "").lower()
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs.update(assert_fingerprint=self.fingerprint, assert_hostname=False)
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy, **kwargs):
        kwargs.update(assert_fingerprint=self.fingerprint, assert_hostname=False)
        return super().proxy_manager_for(proxy, **kwargs)


def certificate_changed(device, seen):
    """The one sentence for a device whose certificate is not the pinned one."""
    name = device.name if "://" not in device.name and ":" not in device.name else "NAME"
    return (f"{device.url} presents a certificate with SHA-256 {seen}, not the one pinned for '{device.name}' "
            f"({device.fingerprint}): if the device was reinstalled, check the new fingerprint on it and run "
            f"`deeplens-ctl devices add {name} {device.url} --token TOKEN` again; otherwise something is "
            f"intercepting the connection")


def fingerprint_from_hex(text):
    digits = text.replace(":", "").upper()
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


def peer_certificate(host, port, timeout=5.0):
    """The DER certificate a TLS server at host:port presents, read without any check (for
    pinning it or comparing it with the pinned one). OSError/ssl.SSLError when there is none."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True)


def peer_fingerprint(host, port, timeout=5.0):
    """The SHA-256 fingerprint of the certificate a TLS server presents (see peer_certificate)."""
    return fingerprint(peer_certificate(host, port, timeout))


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
