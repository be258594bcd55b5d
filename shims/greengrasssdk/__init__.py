"""`greengrasssdk` as a DeepLens Lambda uses it: `client('iot-data').publish(topic=..., payload=...)`.

Messages go to the MQTT broker in `DEEPLENS_BROKER` (HOST:PORT) at QoS 1 from one connection
per process, made on the first publish, as `DEEPLENS_MQTT_USERNAME` when set, over TLS when
`DEEPLENS_MQTT_TLS` says so (the device's own broker: its certificate is not checked). Without a broker they are dropped, as on a device
without connectivity. What is still in flight at interpreter exit gets a bounded wait.
"""
import atexit
import logging
import ssl
import threading
import uuid

import paho.mqtt.client as mqtt

from shims import settings

log = logging.getLogger(__name__)

EXIT_FLUSH_S = 5.0
QUEUE_LIMIT = 1000  # messages kept while the broker is away; newer ones are dropped
_lock = threading.Lock()
_connection = None  # made on the first publish
_warned = False


def client(client_type, *args, **kwargs):
    if client_type == "iot-data":
        return IoTDataClient()
    if client_type == "lambda":
        raise NotImplementedError("greengrasssdk.client('lambda') (invoking other Lambdas) is not "
                                  "available under deeplens-kit; only 'iot-data' is.")
    raise ValueError(f"unknown greengrasssdk client type {client_type!r}; use 'iot-data'")


class IoTDataClient:
    def publish(self, **kwargs):
        """Keyword arguments only, as the real SDK; `topic` required, `payload` str or bytes; others ignored."""
        if "topic" not in kwargs:
            raise ValueError("publish() needs topic=...")
        payload = kwargs.get("payload", b"")
        if not isinstance(payload, (str, bytes, bytearray)):
            raise TypeError(f"payload must be str or bytes, not {type(payload).__name__}")
        connection = _shared_connection()
        if connection is None:
            log.debug("greengrasssdk: dropped a message", extra={"fields": {"topic": kwargs["topic"]}})
            return
        connection.publish(kwargs["topic"], payload)


def _shared_connection():
    """One connection per process, as the Greengrass core is; None without a broker."""
    global _connection, _warned
    with _lock:
        if _connection is None:
            address = settings.broker()
            if address:
                _connection = _Connection(address)
                atexit.register(_connection.close)
            elif not _warned:
                _warned = True
                log.warning("greengrasssdk: DEEPLENS_BROKER is not set; messages are dropped, "
                            "as on a device without connectivity")
        return _connection


class _Connection:
    """A paho client that connects in the background and counts acknowledgements, so exit can wait.

    (paho's own MQTTMessageInfo cannot be waited on for a message published before the
    connection was up: its rc stays MQTT_ERR_NO_CONN even once the message is sent.)
    """

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self._acked = threading.Condition()
        self._sent = self._done = 0
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"greengrass-{uuid.uuid4().hex[:12]}")
        self._client.on_publish = self._on_publish
        username, password = settings.broker_login()
        if username:
            self._client.username_pw_set(username, password or None)
        if settings.broker_tls():
            self._client.tls_set(cert_reqs=ssl.CERT_NONE)
            self._client.tls_insecure_set(True)
        self._client.reconnect_delay_set(1, 30)
        self._client.max_queued_messages_set(QUEUE_LIMIT)
        self._client.connect_async(host, int(port))
        self._client.loop_start()
        log.info("greengrasssdk: publishing to MQTT", extra={"fields": {"broker": address}})

    def publish(self, topic, payload):
        info = self._client.publish(topic, payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            log.debug("greengrasssdk: queue full, dropped a message", extra={"fields": {"topic": topic}})
            return
        with self._acked:
            self._sent += 1

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._acked:
            self._done += 1
            self._acked.notify_all()

    def close(self):
        """Wait up to EXIT_FLUSH_S for the broker to acknowledge what was published, then disconnect."""
        with self._acked:
            self._acked.wait_for(lambda: self._done >= self._sent, EXIT_FLUSH_S)
            unsent = self._sent - self._done
        if unsent:
            log.warning("greengrasssdk: messages not delivered at exit", extra={"fields": {"count": unsent}})
        self._client.disconnect()
        self._client.loop_stop()
