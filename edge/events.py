"""MQTT side of the edge service, behind one small interface (as Frigate's communicators).

The inference loop calls `publish_detections`, `publish_status` and `on_command` and never
learns the transport: `Publisher` talks MQTT through paho-mqtt 2.x, `NullPublisher` stands in
when the broker is 'none'. Topic names and documents are core.topics' (docs/mqtt.md).

Nothing is lost across a broker restart as long as the offline queue does not overflow: paho
keeps QoS 1 messages it could not send and sends them after its automatic reconnect; a full
queue refuses new ones, and those are counted as dropped.
"""
import json
import logging
import ssl
import threading

import paho.mqtt.client as mqtt

from core import topics as topics_contract

from .broker import local_host

log = logging.getLogger(__name__)

OFFLINE = json.dumps(topics_contract.OFFLINE)
RECONNECT_DELAY = (1, 30)  # seconds: paho doubles the wait from the first to the second
STOP_FLUSH_S = 2.0  # how long stop() waits for the broker to take the offline status


class NullPublisher:
    """The same interface with nothing behind it, for `--broker none`."""

    def start(self):
        log.info("MQTT is off (broker 'none'): events are not published")

    def stop(self):
        pass

    def publish_detections(self, event):
        pass

    def publish_legacy(self, mapping):
        pass

    def publish_status(self, doc):
        pass

    def on_command(self, name, callback):
        pass

    def stats(self):
        return {"connected": False, "queued": 0, "dropped": 0, "published": 0}


class Publisher:
    """Publishes a device's events over MQTT; every publish call returns at once.

    QoS 1 throughout. The status topic is retained and carries a last will of
    `{"state": "offline"}`, so a subscriber that comes late still sees a dead device.
    """

    def __init__(self, host, port, device_id, thing_name, *, username=None, password=None, tls=False,
                 ca_file=None, tls_verify=True, queue_limit=1000, legacy=False, client_id=None):
        self.address = f"{host}:{port}"
        self.topics = topics_contract.topics(device_id)
        self.legacy_topic = topics_contract.legacy_topic(thing_name) if legacy else None
        self._host, self._port = host, int(port)
        self._lock = threading.Lock()
        self._commands = {}  # topic -> callback(dict)
        self._status = None  # the last status document, re-sent after a reconnect
        self._connected = False
        self._accepted = self._acked = self._dropped = 0
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"deeplens-edge-{device_id}")
        if username:
            self._client.username_pw_set(username, password or None)
        if tls:  # verifies the broker's certificate, unless it is our own embedded broker on this machine
            self._client.tls_set(ca_certs=ca_file or None, cert_reqs=ssl.CERT_REQUIRED if tls_verify else ssl.CERT_NONE)
            self._client.tls_insecure_set(not tls_verify)
        self._client.max_queued_messages_set(queue_limit)
        self._client.reconnect_delay_set(*RECONNECT_DELAY)
        self._client.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # lifecycle

    def start(self):
        """Connect in the background; a broker that is down now is retried with backoff."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        log.info("MQTT publisher started", extra={"fields": {"broker": self.address, "prefix": self.topics.prefix}})

    def stop(self):
        """Say `offline` on the status topic (retained) and disconnect, so no last will fires."""
        if self._connected:
            info = self._client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(STOP_FLUSH_S)
            except (ValueError, RuntimeError) as exc:
                log.warning("could not publish the offline status", extra={"fields": {"error": exc}})
        self._client.disconnect()
        self._client.loop_stop()

    # publishing

    def publish_detections(self, event):
        self._publish(self.topics.detections, event)

    def publish_legacy(self, mapping):
        """DeepLens's `{label: prob}` on `$aws/things/<thing>/infer`, only when the option is on."""
        if self.legacy_topic:
            self._publish(self.legacy_topic, mapping)

    def publish_status(self, doc):
        doc = {**doc, "state": "online"}
        with self._lock:
            self._status = doc
        self._publish(self.topics.status, doc, retain=True)

    def _publish(self, topic, doc, retain=False):
        info = self._client.publish(topic, json.dumps(doc), qos=1, retain=retain)
        with self._lock:
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self._dropped += 1
                dropped = self._dropped
            else:  # MQTT_ERR_NO_CONN too: paho keeps the message and sends it after reconnecting
                self._accepted += 1
                dropped = 0
        if dropped and (dropped == 1 or dropped % 100 == 0):
            log.warning("MQTT offline queue full: dropping events", extra={"fields": {"dropped": dropped}})

    # commands

    def on_command(self, name, callback):
        """Call `callback(dict)` for each JSON message on `deeplens/<device>/<name>`."""
        topic = self.topics.command(name)
        with self._lock:
            self._commands[topic] = callback
        self._client.message_callback_add(topic, self._on_message)
        if self._connected:
            self._client.subscribe(topic, qos=1)

    def _on_message(self, client, userdata, message):
        callback = self._commands.get(message.topic)
        try:
            body = json.loads(message.payload)
            if not isinstance(body, dict):
                raise ValueError("the command must be a JSON object")
        except ValueError as exc:
            log.warning("ignoring a malformed MQTT command", extra={"fields": {"topic": message.topic, "error": exc}})
            return
        try:
            callback(body)
        except Exception:  # a failing command must not stop the MQTT thread
            log.exception("MQTT command failed", extra={"fields": {"topic": message.topic}})

    # paho callbacks (network thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("MQTT broker refused the connection", extra={"fields": {"broker": self.address, "reason": reason_code}})
            return
        with self._lock:
            self._connected = True
            status, commands = self._status, list(self._commands)
        log.info("MQTT connected", extra={"fields": {"broker": self.address}})
        for topic in commands:  # the session is clean: subscriptions do not survive a reconnect
            client.subscribe(topic, qos=1)
        if status is not None:  # a last will may have said offline while we were away
            self._publish(self.topics.status, status, retain=True)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._lock:
            was_connected, self._connected = self._connected, False
        if was_connected and reason_code.is_failure:  # not after our own disconnect()
            log.warning("MQTT disconnected; reconnecting", extra={"fields": {"broker": self.address, "reason": reason_code}})

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            self._acked += 1

    def stats(self):
        with self._lock:
            return {"connected": self._connected, "queued": self._accepted - self._acked,
                    "dropped": self._dropped, "published": self._acked}


def from_config(config, address):
    """The publisher for a Config and the broker address `start_broker` resolved (None: no MQTT)."""
    if address is None:
        return NullPublisher()
    host, _, port = address.rpartition(":")
    embedded = config.broker == "embedded"
    return Publisher(local_host(host) if embedded else host, int(port), config.device, config.thing,
                     username=config.mqtt_username or None, password=config.mqtt_password or None,
                     tls=bool(config.tls_cert) if embedded else config.mqtt_tls, ca_file=config.mqtt_ca_file or None,
                     tls_verify=not embedded, queue_limit=config.mqtt_queue, legacy=config.legacy_topic)
