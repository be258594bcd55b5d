"""A paho subscriber for tests and benchmarks: collects the messages of some topics in a queue."""
import json
import queue
import time
import uuid

import paho.mqtt.client as mqtt


class Subscriber:
    """Subscribes (QoS 1) and returns once the broker has confirmed it. With `session` it keeps a
    persistent session under a fixed client id, so the broker queues its messages while it (or
    the broker) is away. `messages` holds paho's messages as they arrive."""

    def __init__(self, address, *topics, session=False):
        host, _, port = address.rpartition(":")
        self.messages = queue.Queue()
        subscribed = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
                                  clean_session=not session)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
        self.client.on_subscribe = lambda *args: subscribed.put(True)
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.connect(host, int(port))
        self.client.loop_start()
        for _ in topics:
            subscribed.get(timeout=10)

    def take(self, n, timeout=15.0):
        """Up to `n` messages, as many as arrive within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            try:
                got.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return got

    def payload(self, timeout=10.0):
        """The JSON payload of the next message."""
        return json.loads(self.messages.get(timeout=timeout).payload)

    def next(self, topic, timeout=15.0, where=lambda payload: True):
        """(JSON payload, retained) of the next message on `topic` that `where` accepts."""
        deadline = time.monotonic() + timeout
        for message in iter(lambda: self.take(1, max(0.0, deadline - time.monotonic())), []):
            payload = json.loads(message[0].payload)
            if message[0].topic == topic and where(payload):
                return payload, message[0].retain
        raise AssertionError(f"no message on {topic} within {timeout}s")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
