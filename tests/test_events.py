"""edge.events against a real mosquitto: schema, offline queue, restarts, retained status, will."""
import inspect
import json
import queue
import subprocess
import sys
import time

import jsonschema
import paho.mqtt.client as mqtt
import pytest

from conftest import REPO, free_port
from mqtt_subscriber import Subscriber
from edge import config as config_mod
from core.topics import detection_event, event_schema, legacy_topic, topics
from edge.events import NullPublisher, Publisher, from_config

pytestmark = pytest.mark.mosquitto
SCHEMA = event_schema()


def event(seq):
    return detection_event(seq, "v1", 4.2, [{"class_id": 1, "label": "note", "score": 0.8, "box": [0.1, 0.2, 0.5, 0.9]}])


def figures(pub):
    """The queue figures of `pub.stats()` (it has more: liveness, reasons, counters)."""
    return {key: pub.stats()[key] for key in ("connected", "queued", "dropped", "published")}


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a condition")
        time.sleep(0.05)


def test_events_follow_the_schema(mosquitto, subscriber, publishers):
    sub = subscriber(mosquitto.address, topics("cam1").detections)
    pub = publishers(mosquitto.address)
    wait_until(lambda: pub.stats()["connected"])
    for seq in range(3):
        pub.publish_detections(event(seq))
    got = sub.take(3)
    assert [json.loads(m.payload)["seq"] for m in got] == [0, 1, 2]
    for message in got:
        assert message.topic == "deeplens/cam1/detections" and not message.retain
        jsonschema.validate(json.loads(message.payload), SCHEMA)
    wait_until(lambda: pub.stats()["published"] == 3)
    assert figures(pub) == {"connected": True, "queued": 0, "dropped": 0, "published": 3}


def test_schema_refuses_unnormalised_boxes_and_extra_keys():
    bad_box = event(0)
    bad_box["detections"][0]["box"] = [10, 20, 300, 290]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad_box, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**event(0), "frame": "..."}, SCHEMA)


def test_broker_down_at_start_then_up(mosquitto, subscriber, publishers):
    sub = subscriber(mosquitto.address, topics("cam1").detections, session=True)
    mosquitto.stop()
    pub = publishers(mosquitto.address)
    for seq in range(5):
        pub.publish_detections(event(seq))
    assert figures(pub) == {"connected": False, "queued": 5, "dropped": 0, "published": 0}
    mosquitto.start()
    assert [json.loads(m.payload)["seq"] for m in sub.take(5)] == list(range(5))
    wait_until(lambda: pub.stats()["queued"] == 0)


def test_broker_restart_loses_no_event(mosquitto, subscriber, publishers):
    sub = subscriber(mosquitto.address, topics("cam1").detections, session=True)
    pub = publishers(mosquitto.address)
    wait_until(lambda: pub.stats()["connected"])
    pub.publish_detections(event(0))
    assert len(sub.take(1)) == 1
    mosquitto.stop()
    for seq in range(1, 101):  # at once: the publisher may not even know yet that the broker is gone
        pub.publish_detections(event(seq))
    mosquitto.start()
    # QoS 1 is at-least-once: the broker may deliver again what was in flight when it stopped.
    got = [json.loads(m.payload)["seq"] for m in sub.take(101, timeout=10)]
    new = [seq for seq in got if seq > 0]
    assert new == list(range(1, 101)) and len(got) - len(new) <= 1
    wait_until(lambda: pub.stats()["queued"] == 0)
    assert pub.stats()["dropped"] == 0


def test_full_offline_queue_drops_and_counts():
    pub = Publisher("127.0.0.1", free_port(), "cam1", "deeplens_cam1", queue_limit=5)
    pub.start()
    try:
        for seq in range(12):
            pub.publish_detections(event(seq))
        assert figures(pub) == {"connected": False, "queued": 5, "dropped": 7, "published": 0}
    finally:
        pub.stop()


PUBLISHER_SCRIPT = """
import sys, time
from edge.events import Publisher
pub = Publisher("127.0.0.1", int(sys.argv[1]), "cam1", "deeplens_cam1")
pub.start()
pub.publish_status({"fps": 12.5})
while pub.stats()["published"] < 1:
    time.sleep(0.05)
print("ready", flush=True)
time.sleep(600)
"""


def retained_status(address):
    """What a subscriber arriving now sees on the status topic."""
    sub = Subscriber(address, topics("cam1").status)
    try:
        (message,) = sub.take(1, timeout=5)
    finally:
        sub.close()
    assert message.retain
    return json.loads(message.payload)


def test_retained_status_and_last_will_after_kill_9(mosquitto):
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER_SCRIPT, str(mosquitto.port)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert retained_status(mosquitto.address) == {"fps": 12.5, "state": "online"}
    finally:
        proc.kill()
        proc.wait(10)
    wait_until(lambda: retained_status(mosquitto.address) == {"state": "offline"})


def test_stop_says_offline(mosquitto, publishers):
    pub = publishers(mosquitto.address)
    pub.publish_status({"fps": 3})
    wait_until(lambda: pub.stats()["published"] >= 1)  # twice if it was queued before connecting
    pub.stop()
    assert retained_status(mosquitto.address) == {"state": "offline"}


def test_a_stop_sends_every_waiting_event_in_order_then_offline(mosquitto, subscriber, publishers):
    """Events are encoded and sent by the sender thread; a stop right after a burst still gets all
    of them to the broker, in the loop's order, before the offline status."""
    names = topics("cam1")
    sub = subscriber(mosquitto.address, names.detections, names.status)
    pub = publishers(mosquitto.address)
    wait_until(lambda: pub.stats()["connected"])
    for seq in range(300):
        pub.publish_detections(event(seq))
    pub.stop()
    got = [(m.topic, json.loads(m.payload)) for m in sub.take(301, timeout=10)]
    assert [doc["seq"] for topic, doc in got if topic == names.detections] == list(range(300))
    assert got[-1] == (names.status, {"state": "offline"})
    assert pub.stats()["dropped"] == 0


def test_an_event_json_cannot_hold_is_dropped_and_counted_not_raised(mosquitto, subscriber, publishers):
    sub = subscriber(mosquitto.address, topics("cam1").detections)
    pub = publishers(mosquitto.address)
    wait_until(lambda: pub.stats()["connected"])
    pub.publish_detections({**event(0), "detections": {1, 2}})  # encoded later, in the sender thread
    pub.publish_detections(event(1))
    assert [json.loads(m.payload)["seq"] for m in sub.take(1)] == [1]
    wait_until(lambda: pub.stats()["dropped"] == 1)


def test_threshold_command_survives_bad_input_and_reconnects(mosquitto, publishers, caplog):
    received = queue.Queue()

    def on_threshold(body):
        if body.get("boom"):
            raise RuntimeError("callback failed")
        received.put(body)
    pub = publishers(mosquitto.address)
    pub.on_command("threshold/set", on_threshold)
    wait_until(lambda: pub.stats()["connected"])
    time.sleep(0.3)  # let the SUBACK arrive

    def send(payload):
        host, _, port = mosquitto.address.rpartition(":")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect(host, int(port))
        client.loop_start()
        client.publish("deeplens/cam1/threshold/set", payload, qos=1).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()

    send(b"{not json")
    send(json.dumps({"boom": True}))
    send(json.dumps({"default": 0.6}))
    assert received.get(timeout=5) == {"default": 0.6}
    assert "malformed MQTT command" in caplog.text and "MQTT command failed" in caplog.text
    mosquitto.stop()
    mosquitto.start()
    wait_until(lambda: pub.stats()["connected"], timeout=15)
    time.sleep(0.3)
    send(json.dumps({"per_class": {"note": 0.7}}))
    assert received.get(timeout=5) == {"per_class": {"note": 0.7}}


def test_legacy_topic_only_when_enabled(mosquitto, subscriber, publishers):
    sub = subscriber(mosquitto.address, "$aws/things/+/infer")
    off = publishers(mosquitto.address)
    on = publishers(mosquitto.address, legacy=True, client_id="legacy-on")
    wait_until(lambda: off.stats()["connected"] and on.stats()["connected"])
    off.publish_legacy({"off": 0.9})
    on.publish_legacy({"note": 0.8})
    got = sub.take(2, timeout=3)
    assert [(m.topic, json.loads(m.payload)) for m in got] == [(legacy_topic("deeplens_cam1"), {"note": 0.8})]


def test_null_publisher_has_the_same_interface():
    public = {name for name in vars(Publisher) if not name.startswith("_")}
    for name in public:
        assert inspect.signature(getattr(NullPublisher, name)) == inspect.signature(getattr(Publisher, name)), name
    assert figures(NullPublisher()) == {"connected": False, "queued": 0, "dropped": 0, "published": 0}
    assert NullPublisher().alive() and NullPublisher().stats().keys() == Publisher("h", 1, "d", "t").stats().keys()


def test_from_config():
    config = config_mod.load(env={}, overrides={"device_id": "cam9", "legacy_topic": True, "mqtt_queue": 7})
    assert isinstance(from_config(config, None), NullPublisher)
    pub = from_config(config, "127.0.0.1:1883")
    assert pub.topics.detections == "deeplens/cam9/detections"
    assert pub.legacy_topic == "$aws/things/deeplens_cam9/infer"
