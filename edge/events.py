"""MQTT side of the edge service, behind one small interface (as Frigate's communicators).

The inference loop calls `publish_detections`, `publish_status` and `on_command` and never
learns the transport: `Publisher` talks MQTT through paho-mqtt 2.x, `NullPublisher` stands in
when the broker is 'none'. Topic names and documents are core.topics' (docs/mqtt.md).

`Publisher` runs two threads of its own around a paho client:

- the network thread drives paho (`loop()`, `reconnect()`): it retries a lost broker after
  0.1, 0.2, 0.4, 0.8 s and then every second, so it is back within about a second of the
  broker's return. No exception can end it (paho's callbacks are ours and catch everything);
  if it ends anyway, the sender thread restarts it.
- the sender thread moves messages from our offline queue to paho while the broker is there,
  at most `WINDOW` unacknowledged at a time, encoding each event's JSON as it goes (a
  detections event can be 20 KB: not the inference loop's time). The queue holds `queue_limit`
  detection (and legacy) events; when it is full the OLDEST is dropped and counted. On stop,
  the events still waiting are sent before the offline status (for up to STOP_FLUSH_S). The
  status document is kept apart: never dropped, sent first, and sent again after every connect
  (a last will may have said offline meanwhile). So are other retained documents
  (`publish_retained`: Home Assistant discovery), sent after the status and before waiting events.

`alive()` is false when the network thread is dead or has made no progress for `stuck_after`
seconds; the inference loop then stops its systemd watchdog pings (edge/inference.py), so a
wedged MQTT client gets the service restarted. `/status` shows it under `mqtt`.
"""
import collections
import json
import logging
import ssl
import threading
import time

import paho.mqtt.client as mqtt

from core import topics as topics_contract
from core.errors import DeepLensError, InvalidInput
from core.jsonlimits import parse_json

from .broker import local_host

log = logging.getLogger(__name__)

OFFLINE = json.dumps(topics_contract.OFFLINE)
# The broker publishes our last will 1.5 keepalives after it last heard from us, and we notice a
# broker that vanished (no FIN: a crashed host, a cut cable) within about as long: 7.5 s at 5 s,
# not 45 s as at 30 s. The price is one 2-byte PINGREQ every 5 s when no event went out.
KEEPALIVE_S = 5
RETRY_DELAY_S = (0.1, 1.0)  # after a lost or refused TCP connection: doubling from the first to the cap
REFUSED_RETRY_S = 5.0  # the broker answers but refuses us (a wrong password): no need to hammer it
LOOP_TIMEOUT_S = 1.0  # the network thread's longest wait in select(): its heartbeat
WINDOW = 20  # messages handed to paho and not yet acknowledged (paho's own in-flight default)
STUCK_AFTER_S = 30.0  # no heartbeat from the network thread for this long: not alive
SUPERVISE_S = 1.0  # how often the sender thread looks at the network thread
MAX_THREAD_DEATHS = 5  # network thread deaths within DEATH_WINDOW_S before we leave it to the watchdog
DEATH_WINDOW_S = 60.0
STOP_FLUSH_S = 2.0  # how long stop() sends the waiting events, then how long it waits for the broker
# to take the offline status
COMMAND_MAX_BYTES = 64 * 1024  # a threshold command with a thousand classes is about 40 KB
COMMAND_MAX_DEPTH = 8  # {"per_class": {"label": 0.5}} nests 2 levels


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

    def publish_retained(self, topic, doc):
        pass

    def publish_counts(self, doc):
        pass

    def on_command(self, name, callback):
        pass

    def alive(self):
        return True

    def stats(self):
        return {"connected": False, "queued": 0, "dropped": 0, "published": 0, "alive": True,
                "reason": "MQTT is off (broker 'none')", "command_errors": 0, "connects": 0, "loop_restarts": 0}


class Publisher:
    """Publishes a device's events over MQTT; every publish call returns at once.

    QoS 1 throughout. The status topic is retained and carries a last will of
    `{"state": "offline"}`, so a subscriber that comes late still sees a dead device.
    """

    def __init__(self, host, port, device_id, thing_name, *, username=None, password=None, tls=False,
                 ca_file=None, tls_verify=True, queue_limit=1000, legacy=False, client_id=None,
                 keepalive=KEEPALIVE_S, stuck_after=STUCK_AFTER_S):
        self.address = f"{host}:{port}"
        self.topics = topics_contract.topics(device_id)
        self.legacy_topic = topics_contract.legacy_topic(thing_name) if legacy else None
        self._host, self._port, self._keepalive = host, int(port), keepalive
        self._stuck_after = stuck_after
        self._queue_limit = max(1, int(queue_limit))
        # One lock for our state, and the condition the sender thread waits on. It is never held
        # while calling into paho (paho holds its own locks while calling us back).
        self._cond = threading.Condition()
        self._queue = collections.deque()  # (topic, document) of detection and legacy events, oldest first
        self._status = None  # the last status payload: never dropped, re-sent after every connect
        self._status_due = False
        self._retained = {}  # topic -> payload of publish_retained messages: re-sent after every connect
        self._retained_due = {}  # topic -> payload (b"" clears the topic) not yet handed to paho
        self._commands = {}  # topic -> callback(dict)
        self._connected = False
        self._closing = False  # stop() began: the sender flushes, the network thread stops reconnecting
        self._flush_until = float("inf")  # when stop() gives up sending the waiting events
        self._done = threading.Event()  # the network thread ends
        self._handed = self._acked = self._dropped = 0
        self._command_errors = self._connects = self._loop_restarts = 0
        self._refused = False
        self._reason = "not started"
        self._down_since = time.monotonic()
        self._beat = time.monotonic()
        self._deaths = collections.deque(maxlen=MAX_THREAD_DEATHS)
        self._network = self._sender = None
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"deeplens-edge-{device_id}")
        if username:
            self._client.username_pw_set(username, password or None)
        if tls:  # verifies the broker's certificate, unless it is our own embedded broker on this machine
            self._client.tls_set(ca_certs=ca_file or None, cert_reqs=ssl.CERT_REQUIRED if tls_verify else ssl.CERT_NONE)
            self._client.tls_insecure_set(not tls_verify)
        self._client.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        self._client.suppress_exceptions = True  # a callback's exception is logged, never kills the loop
        self._client.enable_logger(logging.getLogger(__name__ + ".paho"))
        # Only the network thread writes to the socket: with this hook set, paho's publish() and
        # subscribe() from other threads queue the packet and wake the network thread instead.
        self._client.on_socket_register_write = lambda client, userdata, sock: None
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # lifecycle

    def start(self):
        """Connect in the background; a broker that is down now is retried."""
        self._client.connect_async(self._host, self._port, keepalive=self._keepalive)
        with self._cond:
            self._reason = f"connecting to {self.address}"
        self._network = self._thread(self._network_main, "mqtt-network")
        self._sender = self._thread(self._sender_main, "mqtt-sender")
        log.info("MQTT publisher started", extra={"fields": {"broker": self.address, "prefix": self.topics.prefix}})

    def stop(self):
        """Send the events still waiting (STOP_FLUSH_S at most), then say `offline` on the status
        topic (retained) and disconnect, so no last will fires."""
        with self._cond:
            self._closing = True
            self._flush_until = time.monotonic() + STOP_FLUSH_S
            self._cond.notify_all()
        if self._sender is not None:
            self._sender.join(STOP_FLUSH_S + SUPERVISE_S)  # it stops at _flush_until, its last publish done
        with self._cond:
            connected = self._connected
        network_runs = self._network is not None and self._network.is_alive()
        if connected and network_runs:
            with self._cond:
                self._handed += 1
            info = self._client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(STOP_FLUSH_S)
            except (ValueError, RuntimeError) as exc:
                log.warning("could not publish the offline status", extra={"fields": {"error": exc}})
            self._client.disconnect()  # the network thread sends it and closes the socket
            deadline = time.monotonic() + 1.0
            while self._client.socket() is not None and time.monotonic() < deadline:
                time.sleep(0.01)
        self._done.set()
        if self._network is not None:
            self._network.join(STOP_FLUSH_S)

    def _thread(self, target, name):
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    # publishing (any thread; never blocks on the network)

    def publish_detections(self, event):
        self._enqueue(self.topics.detections, event)

    def publish_legacy(self, mapping):
        """DeepLens's `{label: prob}` on `$aws/things/<thing>/infer`, only when the option is on."""
        if self.legacy_topic:
            self._enqueue(self.legacy_topic, mapping)

    def publish_status(self, doc):
        payload = json.dumps({**doc, "state": "online"})
        with self._cond:
            self._status, self._status_due = payload, True
            self._cond.notify_all()

    def publish_retained(self, topic, doc):
        """Publish `doc` as JSON, retained, on `topic`; `doc` None clears the topic's retained
        message. Like the status, kept apart from the event queue and never dropped; the latest
        document of each topic is sent again after every connect, so a broker that lost its
        retained messages (no persistence, or another broker) gets them back. A clearing goes
        out once. Used for Home Assistant discovery (edge/discovery.py)."""
        payload = b"" if doc is None else json.dumps(doc)
        with self._cond:
            if self._closing:
                return
            if doc is None:
                self._retained.pop(topic, None)
            else:
                self._retained[topic] = payload
            self._retained_due.pop(topic, None)  # to the end: after what was published before it
            self._retained_due[topic] = payload
            self._cond.notify_all()

    def publish_counts(self, doc):
        """The stabilised counts (edge/counting.py), retained on `deeplens/<device>/counts`. A
        count is a state, not an event: only the latest document waits (never dropped; one not
        yet sent is replaced by a newer one), and it is sent again after every connect."""
        self.publish_retained(self.topics.counts, doc)

    def _enqueue(self, topic, doc):
        """Queue `doc` for the sender thread, which encodes it: the caller must not change it after."""
        dropped = 0
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self._queue_limit:
                self._queue.popleft()  # the oldest: a fresh event says more about now
                self._dropped += 1
                dropped = self._dropped
            self._queue.append((topic, doc))
            self._cond.notify_all()
        if dropped and (dropped == 1 or dropped % 100 == 0):
            log.warning("MQTT offline queue full: dropping the oldest events",
                        extra={"fields": {"dropped": dropped, "limit": self._queue_limit}})

    def _sender_main(self):
        """Hand queued messages to paho while connected, the status first, WINDOW at a time; once
        stop() began, only until nothing waits, the broker is gone or STOP_FLUSH_S has passed."""
        check_at = 0.0
        while True:
            with self._cond:
                while True:  # however busy, look at the network thread every SUPERVISE_S
                    now = time.monotonic()
                    if now >= check_at:
                        self._supervise()
                        check_at = now + SUPERVISE_S
                    if self._closing and not (self._connected and now < self._flush_until and self._waiting()):
                        return
                    if self._sendable():
                        break
                    self._cond.wait(min(check_at, self._flush_until) - now)
                event = None
                if self._status_due:
                    topic, payload, retain = self.topics.status, self._status, True
                    self._status_due = False
                elif self._retained_due:
                    topic = next(iter(self._retained_due))
                    payload, retain = self._retained_due.pop(topic), True
                else:
                    (topic, event), retain = self._queue.popleft(), False
                self._handed += 1  # before publish(): its acknowledgement may come first
            try:
                if event is not None:
                    payload = json.dumps(event)
                # Not connected any more? paho keeps a QoS 1 message and sends it after reconnecting.
                self._client.publish(topic, payload, qos=1, retain=retain)
            except Exception as exc:  # not JSON, or a payload paho refuses (too large for MQTT): lose it, loudly
                with self._cond:
                    self._handed -= 1
                    self._dropped += 1
                log.error("MQTT publish failed", extra={"fields": {"topic": topic, "error": exc}})

    def _waiting(self):
        return self._status_due or bool(self._retained_due) or bool(self._queue)

    def _sendable(self):
        if not self._connected:
            return False
        return self._status_due or (self._waiting() and self._handed - self._acked < WINDOW)

    # commands

    def on_command(self, name, callback):
        """Call `callback(dict)` for each JSON message on `deeplens/<device>/<name>`."""
        topic = self.topics.command(name)
        with self._cond:
            self._commands[topic] = callback
            connected = self._connected
        self._client.message_callback_add(topic, self._on_message)
        if connected:
            self._client.subscribe(topic, qos=1)

    def _on_message(self, client, userdata, message):
        """Parse and run one command. Nothing a sender puts in a message may end the network
        thread: every failure is logged and counted (`command_errors`), then forgotten."""
        try:
            callback = self._commands.get(message.topic)
            body = parse_json(message.payload, COMMAND_MAX_BYTES, COMMAND_MAX_DEPTH)
            if not isinstance(body, dict):
                raise InvalidInput("the command must be a JSON object")
            if callback is not None:
                callback(body)
        except InvalidInput as exc:
            self._count_command_error()
            log.warning("ignoring a malformed MQTT command",
                        extra={"fields": {"topic": message.topic, "bytes": len(message.payload), "error": exc.message}})
        except DeepLensError as exc:  # the command was understood and refused
            self._count_command_error()
            log.warning("MQTT command refused", extra={"fields": {"topic": message.topic, "error": exc.message}})
        except Exception:
            self._count_command_error()
            log.exception("MQTT command failed", extra={"fields": {"topic": message.topic}})

    def _count_command_error(self):
        with self._cond:
            self._command_errors += 1

    # the network thread

    def _network_main(self):
        delay = RETRY_DELAY_S[0]
        need_connect = True
        while not self._done.is_set():
            self._beat = time.monotonic()
            if need_connect:
                if self._closing:  # stop() is under way: no new connection
                    self._done.wait(0.05)
                    continue
                try:
                    self._client.reconnect()  # TCP (and TLS) now; CONNACK comes through loop()
                    need_connect = False
                except Exception as exc:
                    with self._cond:
                        self._reason = f"cannot reach the broker at {self.address}: {exc}"
                    self._done.wait(delay)
                    delay = min(delay * 2, RETRY_DELAY_S[1])
                    continue
            try:  # (paho logs an error when loop() finds no socket: it closed it itself)
                rc = self._client.loop(LOOP_TIMEOUT_S) if self._client.socket() is not None else mqtt.MQTT_ERR_NO_CONN
            except Exception as exc:  # paho itself failed: start over with a fresh connection
                log.exception("MQTT network loop failed; reconnecting", extra={"fields": {"broker": self.address}})
                rc = exc
                self._lost(f"network loop failed: {exc}")
            if rc == mqtt.MQTT_ERR_SUCCESS:
                if self._connected:
                    delay = RETRY_DELAY_S[0]
                continue
            # The connection is gone (paho closed the socket) or was refused.
            need_connect = True
            self._lost(f"connection lost: {mqtt.error_string(rc) if isinstance(rc, int) else rc}")
            with self._cond:
                refused, self._refused = self._refused, False
            self._done.wait(REFUSED_RETRY_S if refused else delay)
            delay = min(delay * 2, RETRY_DELAY_S[1])
        if self._client.socket() is not None:  # stop() timed out: close without a last will
            try:
                self._client.disconnect()
                self._client.loop_write()
            except Exception:  # noqa: BLE001 - the socket is going away anyway
                pass

    def _lost(self, reason):
        with self._cond:
            if self._connected:
                self._connected, self._down_since = False, time.monotonic()
            if not self._refused:
                self._reason = reason

    def _supervise(self):
        """(sender thread, lock held) Restart a network thread that died, unless it keeps dying."""
        if self._closing or self._network is None or self._network.is_alive():
            return
        now = time.monotonic()
        if len(self._deaths) == MAX_THREAD_DEATHS and now - self._deaths[0] < DEATH_WINDOW_S:
            self._reason = (f"the MQTT network thread died {MAX_THREAD_DEATHS} times within {DEATH_WINDOW_S:.0f} s; "
                            "not restarted (the systemd watchdog restarts the service)")
            return
        self._deaths.append(now)
        self._loop_restarts += 1
        self._connected = False
        self._reason = "the MQTT network thread died; restarted"
        log.error("the MQTT network thread died; restarting it", extra={"fields": {"restarts": self._loop_restarts}})
        self._beat = now
        self._network = self._thread(self._network_main, "mqtt-network")

    # paho callbacks (network thread)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            with self._cond:
                reason = f"broker refused the connection: {reason_code}"
                first = self._reason != reason
                self._refused, self._reason = True, reason
            if first:
                log.warning("MQTT broker refused the connection",
                            extra={"fields": {"broker": self.address, "reason": reason_code}})
            return
        with self._cond:
            self._connected, self._refused, self._reason = True, False, None
            self._connects += 1
            down_s = time.monotonic() - self._down_since
            self._status_due = self._status is not None  # a last will may have said offline meanwhile
            self._retained_due.update(self._retained)  # the broker may have lost them (publish_retained)
            commands = list(self._commands)
            self._cond.notify_all()
        log.info("MQTT connected", extra={"fields": {"broker": self.address, "after_s": round(down_s, 2)}})
        for topic in commands:  # the session is clean: subscriptions do not survive a reconnect
            client.subscribe(topic, qos=1)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            was_connected, self._connected = self._connected, False
            if was_connected:
                self._down_since = time.monotonic()
                self._reason = f"disconnected: {reason_code}"
            closing = self._closing
        if was_connected and not closing:
            log.warning("MQTT disconnected; reconnecting", extra={"fields": {"broker": self.address, "reason": reason_code}})

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._cond:
            self._acked += 1
            self._cond.notify_all()

    # health

    def alive(self):
        """False when the network thread is dead or stuck (see STUCK_AFTER_S), or the sender died."""
        return self._liveness()[0]

    def _liveness(self):
        if self._network is None or self._sender is None or self._closing:  # not started, or stopping
            return True, None
        if not self._sender.is_alive():
            return False, "the MQTT sender thread died"
        if not self._network.is_alive():
            return False, "the MQTT network thread is dead"
        stalled = time.monotonic() - self._beat
        if stalled > self._stuck_after:
            return False, f"the MQTT network thread has been stuck for {stalled:.0f} s (in a callback?)"
        return True, None

    def stats(self):
        alive, why = self._liveness()
        with self._cond:
            return {"connected": self._connected and alive,
                    "queued": len(self._queue) + len(self._retained_due) + max(0, self._handed - self._acked)
                    + int(self._status_due),
                    "dropped": self._dropped, "published": self._acked, "alive": alive,
                    "reason": why or self._reason, "command_errors": self._command_errors,
                    "connects": self._connects, "loop_restarts": self._loop_restarts}


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
