"""A device's MQTT side: its status documents and detection events as they come (docs/mqtt.md).

The Watcher asks the device (GET /status) which broker it publishes to and subscribes there to
the topics of core.topics; when that broker is out of reach it falls back to polling /status,
so a swap can still be followed (without detections).
"""
import json
import queue
import time
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from .errors import DeviceError
from .topics import topics

POLL_S = 0.5
LOOPBACK = ("127.0.0.1", "localhost", "0.0.0.0", "::1", "")


class Watcher:
    """The device's status documents and detection events as they come."""

    def __init__(self, client, connect_timeout=5.0):
        self.client = client
        status = client.status()
        names = topics(status["device_id"])
        self.topics = {names.status: "status", names.detections: "detections"}
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
