"""What the edge service says over MQTT: detection events, retained status, threshold commands."""
import json
import time

import jsonschema
import pytest

from conftest import Mosquitto, free_port
from core.topics import event_schema

SMALL = ("--frame-size", "640x360", "--device-id", "testcam")


def test_detection_events_follow_the_schema(edge_service, dummy_model, mosquitto, subscriber):
    sub = subscriber(mosquitto.address, "deeplens/testcam/#")
    edge_service(*SMALL, "--broker", mosquitto.address, "--model", str(dummy_model.folder), "--threshold", "0.3")
    schema = event_schema()
    seqs = []
    for _ in range(5):
        event, retained = sub.next("deeplens/testcam/detections")
        jsonschema.validate(event, schema)
        assert not retained and event["model_version"] == dummy_model.version
        assert all(d["score"] >= 0.3 and d["label"] in ("class0", "class1") for d in event["detections"])
        seqs.append(event["seq"])
    assert seqs == sorted(seqs)


def test_status_is_retained_and_threshold_can_be_set_over_mqtt(edge_service, dummy_model, mosquitto, subscriber):
    service = edge_service(*SMALL, "--broker", mosquitto.address, "--model", str(dummy_model.folder))
    service.wait_status(lambda s: s["mqtt"]["connected"])
    late = subscriber(mosquitto.address, "deeplens/testcam/status")
    status, retained = late.next("deeplens/testcam/status")
    assert retained and status["state"] == "online" and status["device_id"] == "testcam"
    command = subscriber(mosquitto.address)
    command.client.publish("deeplens/testcam/threshold/set", json.dumps({"default": 0.85}), qos=1)
    service.wait_status(lambda s: s["threshold"]["default"] == 0.85)
    late.next("deeplens/testcam/status", where=lambda s: s["threshold"]["default"] == 0.85)


def test_events_stop_below_the_threshold(edge_service, dummy_model, mosquitto, subscriber):
    service = edge_service(*SMALL, "--broker", mosquitto.address, "--model", str(dummy_model.folder),
                           "--threshold", "1.0")
    sub = subscriber(mosquitto.address, "deeplens/testcam/detections")
    service.wait_status(lambda s: s["frames_processed"] > 20)
    assert sub.messages.empty() and service.get("/status").json()["events_published"] == 0


def test_legacy_deeplens_topic_carries_label_to_prob(edge_service, dummy_model, mosquitto, subscriber):
    sub = subscriber(mosquitto.address, "$aws/things/deeplens_testcam/infer")
    edge_service(*SMALL, "--broker", mosquitto.address, "--model", str(dummy_model.folder),
                 "--legacy-topic", "--threshold", "0.3")
    payload, _ = sub.next("$aws/things/deeplens_testcam/infer")
    assert payload and all(label in ("class0", "class1") and 0.3 <= p <= 1 for label, p in payload.items())


def test_broker_down_at_start_then_up(edge_service, dummy_model, tmp_path, subscriber):
    broker = Mosquitto(tmp_path)
    service = edge_service(*SMALL, "--broker", broker.address, "--model", str(dummy_model.folder))
    doc = service.wait_status(lambda s: s["frames_processed"] > 5)
    assert doc["mqtt"]["connected"] is False
    broker.start()
    try:
        sub = subscriber(broker.address, "deeplens/testcam/detections")
        service.wait_status(lambda s: s["mqtt"]["connected"], timeout=30)
        event, _ = sub.next("deeplens/testcam/detections", timeout=20)
        assert event["model_version"] == dummy_model.version
    finally:
        broker.stop()


def test_event_rate_limit_thins_events_not_frames(edge_service, dummy_model, mosquitto, subscriber):
    sub = subscriber(mosquitto.address, "deeplens/testcam/detections")
    service = edge_service(*SMALL, "--broker", mosquitto.address, "--model", str(dummy_model.folder),
                           "--threshold", "0.3", "--max-event-rate", "2")
    first = service.wait_status(lambda s: s["events_published"] >= 1)
    time.sleep(3)
    last = service.get("/status").json()
    frames = last["frames_processed"] - first["frames_processed"]
    events = last["events_published"] - first["events_published"]
    assert frames > 3 * events and 3 <= events <= 8
    received = sub.messages.qsize()
    assert received >= events
