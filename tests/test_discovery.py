"""Home Assistant MQTT discovery (edge/discovery.py): the configs, their removal, availability.

Templates are rendered with Jinja's immutable sandbox, the environment Home Assistant renders
them in, against the documents the device really publishes."""
import json
import signal
import subprocess
import sys
import time

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from core import topics as topics_contract
from edge import config as edge_config
from edge.discovery import Discovery, prefix_problem, slug
from edge.errors import ConfigError
from edge.events import NullPublisher

SMALL = ("--frame-size", "640x360")
NEEDED = {"name", "unique_id", "default_entity_id", "object_id", "state_topic", "value_template", "state_class",
          "availability_topic", "availability_template", "payload_available", "payload_not_available", "device"}


def render(template, payload):
    """What Home Assistant makes of `template` for an MQTT message carrying `payload`."""
    return ImmutableSandboxedEnvironment().from_string(template).render(value_json=json.loads(payload)).strip()


class FakePublisher:
    """Records publish_retained calls; `retained` is what a broker would keep."""

    def __init__(self, device="cam1"):
        self.topics = topics_contract.topics(device)
        self.calls, self.retained = [], {}

    def publish_retained(self, topic, doc):
        self.calls.append((topic, doc))
        if doc is None:
            self.retained.pop(topic, None)
        else:
            self.retained[topic] = doc


def make(tmp_path, publisher=None, **settings):
    config = edge_config.load(env={}, overrides={"device_id": "cam1", "state_dir": str(tmp_path / "state"),
                                                 **settings})
    publisher = publisher or FakePublisher()
    return Discovery(publisher, config), publisher


def config_topic(object_id, node="deeplens_cam1", prefix="homeassistant"):
    return f"{prefix}/sensor/{node}/{object_id}/config"


COUNTS = json.dumps({"ts": 1.0, "model_version": "v1", "counts": {"2000 RUB": 3, "1000 RUB": 0},
                     "zones": {"tray": {"2000 RUB": 1, "1000 RUB": 2}}, "total": 6000,
                     "zone_totals": {"tray": 4000}})


# -- unit: sync() with a fake publisher ---------------------------------------------------------
def test_one_sensor_per_class_zone_and_total_with_what_home_assistant_needs(tmp_path):
    discovery, publisher = make(tmp_path)
    discovery.sync(["2000 RUB", "1000 RUB"], ["tray"], True)
    assert set(publisher.retained) == {config_topic(o) for o in (
        "class-2000_rub", "class-1000_rub", "zone-tray-2000_rub", "zone-tray-1000_rub", "total", "zone-tray-total")}
    states, entity_ids = {}, set()
    for doc in publisher.retained.values():
        assert NEEDED <= set(doc), NEEDED - set(doc)
        assert json.loads(json.dumps(doc)) == doc
        assert doc["state_topic"] == "deeplens/cam1/counts" and doc["state_class"] == "measurement"
        assert doc["availability_topic"] == "deeplens/cam1/status"
        assert doc["device"]["identifiers"] == ["deeplens_cam1"] and doc["device"]["model"] == "deeplens-kit"
        assert doc["device"]["name"] == "cam1" and doc["device"]["sw_version"]
        assert doc["default_entity_id"] == "sensor." + doc["object_id"]
        entity_ids.add(doc["default_entity_id"])
        states[doc["default_entity_id"]] = render(doc["value_template"], COUNTS)
    assert states == {"sensor.cam1_2000_rub": "3", "sensor.cam1_1000_rub": "0", "sensor.cam1_tray_2000_rub": "1",
                      "sensor.cam1_tray_1000_rub": "2", "sensor.cam1_total": "6000", "sensor.cam1_tray_total": "4000"}
    assert len({doc["unique_id"] for doc in publisher.retained.values()}) == 6
    units = {doc["default_entity_id"]: doc.get("unit_of_measurement") for doc in publisher.retained.values()}
    assert units["sensor.cam1_2000_rub"] == "notes" and units["sensor.cam1_total"] is None  # no currency known


def test_availability_follows_the_status_document_and_the_last_will(tmp_path):
    discovery, publisher = make(tmp_path)
    discovery.sync(["a"], [], False)
    doc = next(iter(publisher.retained.values()))
    online = json.dumps({"device_id": "cam1", "fps": 12.0, "state": "online"})  # as Publisher.publish_status
    assert render(doc["availability_template"], online) == doc["payload_available"]
    assert render(doc["availability_template"], json.dumps(topics_contract.OFFLINE)) == doc["payload_not_available"]


def test_templates_survive_awkward_names_and_missing_keys(tmp_path):
    discovery, publisher = make(tmp_path)
    awkward = ['it\'s "}} {{', "рубль", "a\\b"]
    discovery.sync(awkward, ["z"], True)
    counts = json.dumps({"counts": {awkward[0]: 2, awkward[1]: 5, awkward[2]: 7}, "zones": {}, "total": None})
    states = {doc["name"]: render(doc["value_template"], counts) for doc in publisher.retained.values()}
    assert states[awkward[0]] == "2" and states[awkward[1]] == "5" and states[awkward[2]] == "7"
    assert states[f"z {awkward[0]}"] == "0" and states["Total"] == "0" and states["z total"] == "0"
    for doc in publisher.retained.values():  # what HA accepts in entity ids: a-z, 0-9, single underscores
        assert doc["default_entity_id"].startswith("sensor.cam1_")
        assert all(c.isascii() and (c.isalnum() or c == "_") for c in doc["object_id"]) and "__" not in doc["object_id"]
    assert slug("рубль") == slug("рубль") and slug("2000 RUB") == "2000_rub"


def test_same_slug_twice_gets_distinct_sensors(tmp_path):
    discovery, publisher = make(tmp_path)
    discovery.sync(["2000 RUB", "2000-rub"], [], False)
    assert {doc["default_entity_id"] for doc in publisher.retained.values()} == {
        "sensor.cam1_2000_rub", "sensor.cam1_2000_rub_2"}


def test_configs_of_classes_that_went_are_removed_and_unchanged_layouts_publish_nothing(tmp_path):
    discovery, publisher = make(tmp_path)
    discovery.sync(["a", "b"], ["tray"], False)
    publisher.calls.clear()
    discovery.sync(["a", "b"], ["tray"], False)
    assert publisher.calls == []
    discovery.sync(["a", "c"], [], False)
    removed = {topic for topic, doc in publisher.calls if doc is None}
    assert removed == {config_topic("class-b"), config_topic("zone-tray-a"), config_topic("zone-tray-b")}
    assert set(publisher.retained) == {config_topic("class-a"), config_topic("class-c")}


def test_a_restart_with_another_model_removes_the_sensors_of_the_previous_one(tmp_path):
    first, publisher = make(tmp_path)
    first.sync(["note_2000", "note_1000"], [], True)
    assert json.loads((tmp_path / "state" / "discovery.json").read_text())["published"]
    restarted, _ = make(tmp_path, publisher)  # a new process: only the state file remembers
    restarted.sync(["cat", "dog"], [], False)
    assert set(publisher.retained) == {config_topic("class-cat"), config_topic("class-dog")}
    removed = {topic for topic, doc in publisher.calls if doc is None}
    assert removed == {config_topic("class-note_2000"), config_topic("class-note_1000"), config_topic("total")}
    publisher.calls.clear()
    again, _ = make(tmp_path, publisher)  # earlier removals are repeated once at the next start
    again.sync(["cat", "dog"], [], False)
    assert config_topic("class-note_2000") in {topic for topic, doc in publisher.calls if doc is None}


def test_turning_discovery_off_removes_what_was_published(tmp_path):
    on, publisher = make(tmp_path)
    on.sync(["a"], [], False)
    off, _ = make(tmp_path, publisher, discovery_prefix="none")
    off.sync(["a"], [], False)
    assert publisher.retained == {} and publisher.calls[-1] == (config_topic("class-a"), None)


def test_another_prefix_moves_the_sensors(tmp_path):
    first, publisher = make(tmp_path)
    first.sync(["a"], [], False)
    moved, _ = make(tmp_path, publisher, discovery_prefix="ha/test")
    moved.sync(["a"], [], False)
    assert set(publisher.retained) == {config_topic("class-a", prefix="ha/test")}


def test_without_mqtt_nothing_happens(tmp_path):
    discovery, _ = make(tmp_path, NullPublisher())
    discovery.sync(["a"], [], True)
    assert not (tmp_path / "state" / "discovery.json").exists()


@pytest.mark.parametrize("prefix", ["home/#", "+", "ha/+/x", "/ha", "ha/", "ha//x", "$SYS", "home assistant",
                                    "ha\x00"])
def test_a_prefix_that_is_no_topic_prefix_is_refused(prefix):
    assert prefix_problem(prefix)
    with pytest.raises(ConfigError, match="'discovery_prefix' must"):
        edge_config.load(env={}, overrides={"discovery_prefix": prefix})


@pytest.mark.parametrize("prefix", ["homeassistant", "ha/test", "none", ""])
def test_prefixes_that_are_fine(prefix):
    assert prefix_problem(prefix) is None


def test_the_service_refuses_a_wildcard_prefix_at_start(tmp_path):
    result = subprocess.run([sys.executable, "-m", "edge.cli", "serve", "--broker", "none", "--state-dir",
                             str(tmp_path), "--discovery-prefix", "homeassistant/#"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "option --discovery-prefix: 'discovery_prefix' must be an MQTT topic prefix" in result.stderr
    assert "no wildcards (+, #)" in result.stderr


# -- a real broker ------------------------------------------------------------------------------
def retained_configs(subscriber, address, prefix="homeassistant", settle=1.0):
    """{topic: config} as a Home Assistant that subscribes now sees them after `settle` s: the
    retained configs, then any change published meanwhile (an empty payload removes)."""
    sub = subscriber(address, f"{prefix}/#")
    configs = {}
    for message in sub.take(1000, timeout=settle):
        if message.payload:
            configs[message.topic] = json.loads(message.payload)
        else:
            configs.pop(message.topic, None)
    return configs


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_configs_are_retained_on_the_broker_and_removed_again(mosquitto, publishers, subscriber, tmp_path):
    publisher = publishers(mosquitto.address)
    discovery, _ = make(tmp_path, publisher)
    watcher = subscriber(mosquitto.address, "homeassistant/#")
    discovery.sync(["2000 RUB", "1000 RUB"], ["tray"], True)
    assert wait_for(lambda: publisher.stats()["queued"] == 0)
    configs = retained_configs(subscriber, mosquitto.address)
    assert set(configs) == {config_topic(o) for o in (
        "class-2000_rub", "class-1000_rub", "zone-tray-2000_rub", "zone-tray-1000_rub", "total", "zone-tray-total")}
    assert all(NEEDED <= set(doc) for doc in configs.values())
    late = subscriber(mosquitto.address, "homeassistant/#").take(6, timeout=5)
    assert len(late) == 6 and all(message.retain for message in late)
    watcher.take(6, timeout=5)

    discovery.sync(["2000 RUB"], [], False)  # a model with one class, no zones, no values
    removals = [m for m in watcher.take(20, timeout=3) if not m.payload]
    assert {m.topic for m in removals} == {config_topic(o) for o in (
        "class-1000_rub", "zone-tray-2000_rub", "zone-tray-1000_rub", "total", "zone-tray-total")}
    assert set(retained_configs(subscriber, mosquitto.address)) == {config_topic("class-2000_rub")}


def test_configs_come_back_after_the_broker_lost_them(mosquitto, publishers, subscriber, tmp_path):
    """A broker restarted without its retained messages gets them again at the reconnect."""
    publisher = publishers(mosquitto.address)
    discovery, _ = make(tmp_path, publisher)
    discovery.sync(["a"], [], False)
    assert wait_for(lambda: publisher.stats()["queued"] == 0 and publisher.stats()["published"] >= 1)
    mosquitto.stop()
    for leftover in mosquitto.folder.glob("*.db"):  # forget everything, as a broker without persistence
        leftover.unlink()
    mosquitto.start()
    assert wait_for(lambda: publisher.stats()["connects"] >= 2, timeout=15)
    assert wait_for(lambda: set(retained_configs(subscriber, mosquitto.address, settle=0.3)) ==
                    {config_topic("class-a")}, timeout=10)


def test_a_real_service_announces_its_model_and_goes_unavailable_when_killed(
        edge_service, dummy_model, mosquitto, subscriber, tmp_path):
    from core.ssd import build, export_package
    status_topic = "deeplens/testcam/status"
    watcher = subscriber(mosquitto.address, status_topic)
    service = edge_service(*SMALL, "--broker", mosquitto.address, "--model", str(dummy_model.folder))
    node = "deeplens_testcam"
    expected = {config_topic("class-class0", node), config_topic("class-class1", node)}
    assert wait_for(lambda: set(retained_configs(subscriber, mosquitto.address, settle=0.3)) == expected)
    configs = retained_configs(subscriber, mosquitto.address)
    counts = subscriber(mosquitto.address, "deeplens/testcam/counts").take(1)[0]
    assert counts.retain
    for doc in configs.values():
        assert doc["availability_topic"] == status_topic and doc["state_topic"] == "deeplens/testcam/counts"
        label = doc["name"]
        assert render(doc["value_template"], counts.payload) == str(json.loads(counts.payload)["counts"][label])
    online, _ = watcher.next(status_topic)
    template = next(iter(configs.values()))["availability_template"]
    assert render(template, json.dumps(online)) == "online"

    service.stop(sig=signal.SIGKILL)  # no goodbye: the broker publishes the last will (1.5 keepalives)
    offline, retained = watcher.next(status_topic, timeout=20, where=lambda doc: doc.get("state") == "offline")
    assert render(template, json.dumps(offline)) == "offline"
    late = subscriber(mosquitto.address, status_topic)  # a Home Assistant that starts now sees it too
    message = late.take(1)[0]
    assert message.retain and render(template, message.payload) == "offline"

    # The same device with another model: the old sensors go, the new ones come.
    other = export_package(build("tiny", 2, seed=1), tmp_path / "notes", "notes", ["note_2000", "note_1000"], 300)
    edge_service(*SMALL, "--broker", mosquitto.address, "--model", str(other.folder))
    expected = {config_topic("class-note_2000", node), config_topic("class-note_1000", node)}
    assert wait_for(lambda: set(retained_configs(subscriber, mosquitto.address, settle=0.3)) == expected)
