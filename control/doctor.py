"""`deeplens-ctl doctor DEVICE`: why a device cannot be reached or used, one check at a time.

Each check answers `ok` or says in one sentence what to fix. They run in the order a
connection is made (name, port, TLS, HTTP, token, status, broker) and then read what the device
reports (clock, disk, camera, model); a check whose ground an earlier failure took away is
`skipped`. The device side is the REST API (core.client) and the MQTT broker (core.watch).
"""
import dataclasses
import email.utils
import socket
import ssl
import time
from urllib.parse import urlsplit

from core.client import certificate_changed, peer_fingerprint
from core.errors import DeviceError
from core.watch import connect, find_broker

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
CLOCK_SKEW_S = 5.0
DISK_LOW_MB = 200.0
CONNECT_S = 3.0


@dataclasses.dataclass
class Check:
    name: str
    status: str     # ok, warn, fail, skipped
    message: str    # what was found (ok) or what to do (warn, fail), or why it was skipped

    def to_json(self):
        return dataclasses.asdict(self)


def checks(client):
    """The checks of one device (a core.client.DeviceClient), in order, each as it is done."""
    return _Doctor(client).run()


class _Doctor:
    def __init__(self, client):
        self.client, self.device = client, client.device
        parts = urlsplit(client.url)
        self.host, self.https = parts.hostname or "", parts.scheme == "https"
        self.port = parts.port or (443 if self.https else 80)
        self.add_command = (f"deeplens-ctl devices add {self._name()} {client.url} --token TOKEN")

    def _name(self):
        name = self.device.name
        return name if "://" not in name and ":" not in name and "." not in name else "NAME"

    def run(self):
        order = [("dns", self.dns), ("tcp", self.tcp), ("tls", self.tls), ("http", self.http),
                 ("token", self.token), ("status", self.status), ("broker", self.broker),
                 ("clock", self.clock), ("disk", self.disk), ("camera", self.camera), ("model", self.model)]
        blocked = {}  # check name -> why it is skipped
        for name, check in order:
            if name in blocked:
                yield Check(name, SKIPPED, blocked[name])
                continue
            status, message, blocks = check()
            yield Check(name, status, message)
            for later in blocks:
                blocked.setdefault(later, f"not checked: the {name} check failed")

    # Each check returns (status, message, names of later checks it takes the ground from).
    ALL_AFTER = {
        "dns": ("tcp", "tls", "http", "token", "status", "broker", "clock", "disk", "camera", "model"),
        "tcp": ("tls", "http", "token", "status", "broker", "clock", "disk", "camera", "model"),
        "tls": ("http", "token", "status", "broker", "clock", "disk", "camera", "model"),
        "http": ("token", "status", "broker", "clock", "disk", "camera", "model"),
        "status": ("broker", "disk", "camera", "model"),
    }

    def dns(self):
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            return FAIL, (f"cannot resolve {self.host} ({getattr(exc, 'strerror', None) or exc}): check the name, "
                          f"or use the device's IP address"), self.ALL_AFTER["dns"]
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if addresses == [self.host]:
            return OK, f"{self.host} is an address (no lookup needed)", ()
        return OK, f"{self.host} is {', '.join(addresses[:3])}", ()

    def tcp(self):
        try:
            socket.create_connection((self.host, self.port), timeout=CONNECT_S).close()
        except ConnectionRefusedError:
            return FAIL, (f"nothing listens on {self.host}:{self.port}: start deeplens-edge there "
                          f"(systemctl status deeplens-edge) or use the port it serves on"), self.ALL_AFTER["tcp"]
        except OSError as exc:
            reason = "does not answer in time" if isinstance(exc, TimeoutError) else f"is out of reach ({exc.strerror or exc})"
            return FAIL, (f"{self.host}:{self.port} {reason}: check that the device is on and on this network, "
                          f"and that no firewall is in between"), self.ALL_AFTER["tcp"]
        return OK, f"{self.host}:{self.port} accepts connections", ()

    def tls(self):
        if not self.https:
            return OK, "plain HTTP: no certificate to check (the token travels unencrypted)", ()
        try:
            seen = peer_fingerprint(self.host, self.port, timeout=CONNECT_S)
        except (OSError, ssl.SSLError) as exc:
            return FAIL, (f"{self.host}:{self.port} does not answer TLS ({getattr(exc, 'reason', None) or exc}): "
                          f"use http://{self.host}:{self.port} if the device serves plain HTTP"), self.ALL_AFTER["tls"]
        if self.device.pinned:
            if seen != self.device.fingerprint:
                return FAIL, certificate_changed(self.device, seen), self.ALL_AFTER["tls"]
            return OK, f"the certificate is the pinned one ({seen[:23]}...)", ()
        try:
            with socket.create_connection((self.host, self.port), timeout=CONNECT_S) as sock:
                ssl.create_default_context().wrap_socket(sock, server_hostname=self.host).close()
        except ssl.SSLCertVerificationError as exc:
            return FAIL, (f"the certificate (SHA-256 {seen}) is not trusted here ({exc.verify_message}) and none is "
                          f"pinned: compare it with the one the device printed at install, then run "
                          f"`{self.add_command} --fingerprint {seen}`"), self.ALL_AFTER["tls"]
        except OSError as exc:
            return FAIL, f"the TLS handshake with {self.host}:{self.port} failed ({exc})", self.ALL_AFTER["tls"]
        return OK, f"the certificate is trusted by this machine's CAs (not pinned; SHA-256 {seen[:23]}...)", ()

    def http(self):
        started = time.time()
        try:
            response = self.client.health()
        except DeviceError as exc:
            if "that port speaks HTTPS" in str(exc):  # core.client probed it
                return FAIL, (f"{self.host}:{self.port} speaks HTTPS: use https://{self.host}:{self.port} "
                              f"(`{self.add_command.replace('http://', 'https://')}` pins its certificate)"), \
                    self.ALL_AFTER["http"]
            hint = " (is it a deeplens-edge service?)" if exc.status == 404 else ""
            return FAIL, f"{exc}{hint}", self.ALL_AFTER["http"]
        ended = time.time()
        self.date, self.asked_at = response.headers.get("Date"), (started + ended) / 2
        return OK, f"GET /health answered in {(ended - started) * 1000:.0f} ms", ()

    def token(self):
        if not self.device.token:
            return WARN, (f"no token is known for this device, so model changes will be refused: store it with "
                          f"`{self.add_command}` (or set DEEPLENS_TOKEN)"), ()
        try:
            self.client.mqtt()
        except DeviceError as exc:
            if exc.status == 404:
                return OK, "accepted (the device runs without MQTT: GET /mqtt answered 404)", ()
            if exc.status == 401:
                return FAIL, (f"the token is wrong: the device answered 401; store the device's `token` setting "
                              f"with `{self.add_command}`"), ("broker",)
            if exc.status == 403:
                return FAIL, ("the device has no token set, so it refuses every change: give it one "
                              "(deeplens-edge --token or DEEPLENS_TOKEN on the device)"), ("broker",)
            return FAIL, f"the token could not be checked: {exc}", ("broker",)
        return OK, "accepted (GET /mqtt)", ()

    def status(self):
        try:
            self.doc = self.client.status()
        except DeviceError as exc:
            return FAIL, str(exc), self.ALL_AFTER["status"]
        return OK, f"device '{self.doc.get('device_id')}', up {self.doc.get('uptime_s', 0):.0f} s", ()

    def broker(self):
        settings, problem = find_broker(self.client, self.doc)
        if settings is None:
            if problem:
                return FAIL, problem, ()
            return OK, "the device runs without MQTT (nothing to check)", ()
        paho, problem = connect(settings, self.device, timeout=CONNECT_S)
        if paho is None:
            return FAIL, problem, ()
        paho.loop_stop()
        paho.disconnect()
        how = ", ".join(filter(None, ["TLS" if settings.tls else "plain",
                                      f"user '{settings.username}'" if settings.username else "anonymous"]))
        if (self.doc.get("mqtt") or {}).get("connected") is False:
            return WARN, (f"this machine reaches the broker at {settings.address} ({how}), but the device is not "
                          f"connected to it: see the device's log (journalctl -u deeplens-edge)"), ()
        return OK, f"connected to {settings.address} ({how})", ()

    def clock(self):
        if not getattr(self, "date", None):
            return WARN, "the device sent no Date header, so its clock cannot be compared", ()
        try:
            device_time = email.utils.parsedate_to_datetime(self.date).timestamp() + 0.5  # whole seconds
        except (TypeError, ValueError):
            return WARN, f"the device's Date header '{self.date}' cannot be read", ()
        skew = device_time - self.asked_at
        if abs(skew) > CLOCK_SKEW_S:
            return WARN, (f"the device's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} this "
                          f"machine's: turn on time sync on both (timedatectl set-ntp true), or event times and "
                          f"certificate dates will be off"), ()
        return OK, f"within {CLOCK_SKEW_S:g} s of this machine ({skew:+.1f} s)", ()

    def disk(self):
        free = (self.doc.get("disk") or {}).get("artifacts_free_mb")
        if free is None:
            return WARN, "the device does not report its free disk (an older deeplens-edge?): update it", ()
        if free < DISK_LOW_MB:
            return WARN, (f"only {free:.0f} MB free in the device's artifacts folder: delete old model versions "
                          f"(deeplens-ctl models, then DELETE /models/VERSION) or free space there"), ()
        return OK, f"{free:.0f} MB free in the artifacts folder", ()

    def camera(self):
        camera = self.doc.get("camera") or {}
        source = camera.get("source", "the camera")
        if not camera.get("connected"):
            error = f" ({camera['error']})" if camera.get("error") else ""
            return FAIL, (f"the camera {source} delivers no frames{error}: check that it is plugged in and that "
                          f"the device's camera setting names it"), ()
        return OK, f"{source} connected", ()

    def model(self):
        model = self.doc.get("model")
        if not model:
            reason = f" ({self.doc['model_error']})" if self.doc.get("model_error") else ""
            return WARN, (f"no model runs{reason}: send one with "
                          f"`deeplens-ctl swap-model {self.device.name} runs/NAME`"), ()
        return OK, f"{model.get('name')} {model.get('version')} serving", ()
