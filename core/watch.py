"""A device's MQTT side: its status documents and detection events as they come (docs/mqtt.md).

The Watcher asks the device where its broker is and subscribes there to the topics of
core.topics. With the device's token it asks GET /mqtt, which gives the address, whether the
broker speaks TLS, and the user name and password; without a token (or from a device without
/mqtt) it reads /status's `mqtt.broker` and connects anonymously. A TLS broker uses the
device's certificate: it is checked against the fingerprint pinned for the device (devices.yaml),
before the credentials are sent, or with the usual CA checks when none is pinned.

When the broker is out of reach the Watcher falls back to polling /status, so a swap can still
be followed (without detections); `problem` then says why.
"""
import dataclasses
import json
import queue
import ssl
import time
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from .tls import fingerprint
from .errors import DeviceError
from .topics import topics

POLL_S = 0.5
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ANY = ("0.0.0.0", "::", "")
TOKEN_HINT = "set DEEPLENS_TOKEN or store it with `deeplens-ctl devices add`"


@dataclasses.dataclass
class Broker:
    """How this machine reaches a device's broker."""
    host: str
    port: int
    tls: bool = False
    username: str = None
    password: str = None

    @property
    def address(self):
        return f"{self.host}:{self.port}"


def reachable_host(host, device_url):
    """A broker host as this machine reaches it: an any-interface address, or a loopback one of a
    device elsewhere, means the device's host."""
    device_host = urlsplit(device_url).hostname or ""
    if host in ANY or (host in LOOPBACK and device_host not in LOOPBACK + ANY):
        return device_host or host
    return host


def find_broker(client, status):
    """(Broker or None, problem or None): GET /mqtt with the token, else /status's mqtt.broker."""
    problem = None
    if client.token:
        try:
            doc = client.mqtt()
        except DeviceError as exc:
            if exc.status != 404:  # 404: no MQTT, or a device from before /mqtt: /status says which
                problem = f"GET /mqtt failed ({exc})"
        else:
            return Broker(reachable_host(doc["host"], client.url), int(doc["port"]), bool(doc.get("tls")),
                          doc.get("username") or None, doc.get("password") or None), None
    mqtt_status = status.get("mqtt") or {}
    address = mqtt_status.get("broker")
    if not address:
        return None, problem
    host, _, port = address.rpartition(":")
    return Broker(reachable_host(host.strip("[]"), client.url), int(port), bool(mqtt_status.get("tls"))), problem


class CertificateMismatch(ssl.SSLError):
    """The broker's certificate is not the one pinned for the device."""

    def __init__(self, pinned, seen):
        super().__init__(f"certificate SHA-256 {seen}, pinned {pinned}")
        self.pinned, self.seen = pinned, seen


def tls_context(device):
    """The TLS context for a device's broker: its pinned certificate only, else CA-verified."""
    if not device.pinned:
        return ssl.create_default_context()
    pinned = device.fingerprint

    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, *args, **kwargs):
            super().do_handshake(*args, **kwargs)
            seen = fingerprint(self.getpeercert(binary_form=True))
            if seen != pinned:  # before a byte of the CONNECT packet (and its password) leaves
                self.close()
                raise CertificateMismatch(pinned, seen)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.sslsocket_class = PinnedSocket
    return context


def connect(broker, device, subscriptions=(), on_message=None, timeout=5.0):
    """(paho client, None) connected, subscribed and looping; or (None, problem sentence)."""
    outcome = queue.Queue()
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

    def on_connect(c, userdata, flags, reason, properties):
        if reason.is_failure:
            outcome.put(str(reason))
        elif subscriptions:
            c.subscribe([(t, 1) for t in subscriptions])
        else:
            outcome.put(None)

    paho.on_connect = on_connect
    paho.on_subscribe = lambda c, u, mid, rcs, p: outcome.put(None)
    if on_message:
        paho.on_message = on_message
    paho.connect_timeout = timeout
    if broker.username:
        paho.username_pw_set(broker.username, broker.password)
    if broker.tls:
        paho.tls_set_context(tls_context(device))
    where = f"the broker at {broker.address}"
    try:
        paho.connect(broker.host, broker.port)
    except CertificateMismatch as exc:
        return None, (f"{where} presents a certificate with SHA-256 {exc.seen}, not the one pinned for the device "
                      f"({exc.pinned}): nothing was sent to it; re-run `deeplens-ctl devices add` if the device "
                      f"was reinstalled")
    except ssl.SSLCertVerificationError as exc:
        return None, (f"{where} presents a certificate this machine does not trust ({exc.verify_message}): "
                      f"pin the device's certificate with `deeplens-ctl devices add`")
    except ssl.SSLError as exc:
        return None, f"{where} does not speak TLS as the device says ({exc.reason or exc})"
    except OSError as exc:
        return None, f"cannot reach {where} ({exc.strerror or exc})"
    paho.loop_start()
    try:
        refused = outcome.get(timeout=timeout)
    except queue.Empty:
        refused = "no answer"
        hint = "" if broker.tls else " (does it want TLS?)"
        problem = f"{where} did not answer in {timeout:g} s{hint}"
    else:
        credentials = f"the user name '{broker.username}' and its password" if broker.username else \
            f"an anonymous connection (its user name and password come with the device's token: {TOKEN_HINT})"
        problem = f"{where} refused {credentials}: {refused}"
    if refused:
        paho.loop_stop()
        paho.disconnect()
        return None, problem
    return paho, None


class Watcher:
    """The device's status documents and detection events as they come."""

    def __init__(self, client, connect_timeout=5.0):
        self.client = client
        status = client.status()
        names = topics(status["device_id"])
        self.topics = {names.status: "status", names.detections: "detections"}
        self.queues = {"status": queue.Queue(), "detections": queue.Queue()}
        self.settings, self.problem = find_broker(client, status)
        self.broker, self._mqtt = None, None
        if self.settings:
            self.broker = (self.settings.host, self.settings.port)
            self._mqtt, problem = connect(self.settings, client.device, self.topics, self._message, connect_timeout)
            self.problem = None if self._mqtt else "; ".join(p for p in (problem, self.problem) if p)

    def _message(self, c, userdata, message):
        self.queues[self.topics[message.topic]].put((time.monotonic(), message.payload))

    @property
    def over_mqtt(self):
        return self._mqtt is not None

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
