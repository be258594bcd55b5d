"""MQTT when things go wrong: hostile commands, a dead or stuck client, a dying broker, a full
offline queue, a frozen device, and 10 s broker outages (external and embedded, SIGTERM and
SIGKILL) under a steady stream of events. Everything talks to 127.0.0.1 and every wait is bounded."""
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from conftest import REPO, Mosquitto, free_port
from mqtt_subscriber import Subscriber
from core.errors import InvalidInput
from core.jsonlimits import JSONMalformed, JSONTooDeep, JSONTooLarge, nesting_depth, parse_json
from core.topics import detection_event, topics
from edge import broker as broker_mod
from edge import config as config_mod
from edge import events
from edge.errors import BrokerError
from edge.events import Publisher
from edge.inference import InferenceLoop
from test_events import PUBLISHER_SCRIPT

pytestmark = pytest.mark.mosquitto
DETECTIONS, STATUS = topics("cam1").detections, topics("cam1").status
COMMAND = "deeplens/cam1/threshold/set"
DEEP = b"[" * 100_000  # json.loads: RecursionError, which used to kill paho's network thread
OUTAGE_S = 10.0


def event(seq):
    return detection_event(seq, "v1", 4.2, [{"class_id": 1, "label": "note", "score": 0.8, "box": [0.1, 0.2, 0.5, 0.9]}])


def wait_until(predicate, timeout=10.0, step=0.02):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for a condition")
        time.sleep(step)
    return time.monotonic()


def send(address, topic, payload):
    """Publish one message (QoS 1) as an anonymous client, and wait for the broker to take it."""
    host, _, port = address.rpartition(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(host, int(port))
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def retained(address, topic=STATUS, timeout=1.0):
    """The retained payload on `topic` as a client arriving now sees it, or None."""
    sub = Subscriber(address, topic)
    try:
        got = sub.take(1, timeout=timeout)
    finally:
        sub.close()
    return json.loads(got[0].payload) if got and got[0].retain else None


def seqs(sub, count=None, timeout=0.0):
    """The seqs of the detection events the subscriber holds now, waiting up to `timeout` seconds
    for `count` of them (all it holds when count is None)."""
    got = []
    deadline = time.monotonic() + timeout
    while count is None or len(got) < count:
        try:
            message = sub.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if message.topic == DETECTIONS:
            got.append(json.loads(message.payload)["seq"])
    return got


# -- core.jsonlimits ------------------------------------------------------------------------------

def test_parse_json_checks_size_and_depth_before_parsing():
    assert parse_json(b'{"default": 0.5, "per_class": {"a [b]": 0.6}}', 100, 2) == \
        {"default": 0.5, "per_class": {"a [b]": 0.6}}
    assert parse_json('"[[[["', 10, 0) == "[[[["  # brackets in strings do not nest
    assert nesting_depth('[{"a": [1, "]]]"]}, []]') == 3 and nesting_depth("7") == 0
    started = time.perf_counter()
    for data, kind in [(DEEP, JSONTooDeep), (DEEP.decode(), JSONTooDeep), (b"[" * 9 + b"]" * 9, JSONTooDeep),
                       (b" " * 101, JSONTooLarge), ("é" * 51, JSONTooLarge), (b"{not json", JSONMalformed),
                       (b"\xff\xfe", JSONMalformed), (b"[1]]", JSONMalformed), (b"1" * 5000, JSONMalformed)]:
        with pytest.raises(kind) as caught:
            parse_json(data, 100_000 if len(data) > 200 else 100, 8)
        assert isinstance(caught.value, InvalidInput) and caught.value.code.startswith("json_")
    assert time.perf_counter() - started < 1.0


# -- defect 1: one message must not stop all events ------------------------------------------------

def test_a_hostile_command_neither_kills_the_client_nor_stops_events(mosquitto, subscriber, publishers):
    sub = subscriber(mosquitto.address, DETECTIONS)
    pub = publishers(mosquitto.address)
    received = queue.Queue()
    pub.on_command("threshold/set", received.put)
    wait_until(lambda: pub.stats()["connected"])
    time.sleep(0.3)  # let the SUBACK arrive
    send(mosquitto.address, COMMAND, DEEP)
    send(mosquitto.address, COMMAND, b" " * (events.COMMAND_MAX_BYTES + 1))
    send(mosquitto.address, COMMAND, b"[1, 2]")
    send(mosquitto.address, COMMAND, json.dumps({"default": 0.6}))
    assert received.get(timeout=5) == {"default": 0.6}
    for seq in range(3):
        pub.publish_detections(event(seq))
    assert seqs(sub, 3, timeout=5) == [0, 1, 2]
    stats = pub.stats()
    assert stats["command_errors"] == 3 and stats["alive"] and stats["connected"] and stats["reason"] is None


def test_a_stuck_network_thread_is_noticed(mosquitto, publishers):
    pub = publishers(mosquitto.address, stuck_after=1.0)
    release = threading.Event()
    pub.on_command("threshold/set", lambda body: release.wait(10))  # a callback that hangs
    wait_until(lambda: pub.stats()["connected"])
    time.sleep(0.3)
    try:
        send(mosquitto.address, COMMAND, b"{}")
        wait_until(lambda: not pub.alive(), timeout=5)
        stats = pub.stats()
        assert not stats["alive"] and not stats["connected"] and "stuck" in stats["reason"]
    finally:
        release.set()
    wait_until(pub.alive, timeout=5)
    assert pub.stats()["connected"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the test
def test_a_dead_network_thread_is_restarted(mosquitto, subscriber, publishers):
    sub = subscriber(mosquitto.address, DETECTIONS)
    pub = publishers(mosquitto.address)
    wait_until(lambda: pub.stats()["connected"])
    loop = pub._client.loop

    def dies_once(timeout):
        pub._client.loop = loop
        raise SystemExit("a bug in the network thread")  # not an Exception: the thread ends
    pub._client.loop = dies_once
    wait_until(lambda: pub.stats()["loop_restarts"] == 1, timeout=5)
    pub.publish_detections(event(1))
    assert seqs(sub, 1, timeout=5) == [1]
    assert pub.alive() and pub.stats()["connected"]


class _Idle:
    """A camera that never delivers a frame (the loop pings the watchdog between tries)."""

    def wait_next(self, last_seq, timeout):
        time.sleep(0.02)


class _Publisher:
    is_alive = False

    def alive(self):
        return self.is_alive


def test_the_watchdog_is_pinged_only_while_the_mqtt_client_is_alive(monkeypatch):
    name = f"deeplens-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind("\0" + name)
        systemd.settimeout(0.5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        publisher = _Publisher()
        loop = InferenceLoop(_Idle(), None, publisher, None)
        loop.start()
        try:
            with pytest.raises(socket.timeout):
                systemd.recv(100)
            publisher.is_alive = True
            assert systemd.recv(100) == b"WATCHDOG=1"
        finally:
            loop.stop()


SMALL = ("--frame-size", "640x360", "--device-id", "testcam")


def test_the_service_survives_a_hostile_command(edge_service, dummy_model, mosquitto, subscriber):
    sub = subscriber(mosquitto.address, "deeplens/testcam/detections")
    service = edge_service(*SMALL, "--broker", mosquitto.address, "--model", str(dummy_model.folder),
                           "--threshold", "0.3")
    service.wait_status(lambda s: s["mqtt"]["connected"] and s["events_published"] > 0)
    time.sleep(0.3)
    send(mosquitto.address, "deeplens/testcam/threshold/set", DEEP)
    send(mosquitto.address, "deeplens/testcam/threshold/set", json.dumps({"default": 7}))  # refused: > 1
    send(mosquitto.address, "deeplens/testcam/threshold/set", json.dumps({"default": 0.35}))
    doc = service.wait_status(lambda s: s["threshold"]["default"] == 0.35)
    assert doc["mqtt"]["command_errors"] == 2 and doc["mqtt"]["alive"] and doc["mqtt"]["connected"]
    while not sub.messages.empty():
        sub.messages.get()
    event_after, _ = sub.next("deeplens/testcam/detections", timeout=10)  # events still flow
    assert event_after["model_version"] == dummy_model.version


# -- defect 2: the embedded broker is supervised ---------------------------------------------------

def _children(pid):
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _mosquitto_child(pid):
    for child in _children(pid):
        if Path(f"/proc/{child}/comm").read_text().strip() == "mosquitto":
            return child
    raise AssertionError("the service has no mosquitto child")


def test_the_service_restarts_its_embedded_broker(edge_service, subscriber):
    service = edge_service(*SMALL, "--broker", "embedded", "--mqtt-port", "0")
    doc = service.wait_status(lambda s: s["mqtt"]["connected"])
    assert doc["mqtt"]["embedded_broker"] == {"kind": "mosquitto", "running": True, "restarts": 0, "reason": None}
    first = _mosquitto_child(service.proc.pid)
    os.kill(first, signal.SIGKILL)
    doc = service.wait_status(lambda s: s["mqtt"]["embedded_broker"]["restarts"] == 1 and s["mqtt"]["connected"],
                              timeout=10)
    assert doc["mqtt"]["alive"] and doc["mqtt"]["embedded_broker"]["running"]
    assert _mosquitto_child(service.proc.pid) != first
    late = subscriber(doc["mqtt"]["broker"], "deeplens/testcam/status")  # same address as before
    status, retained_flag = late.next("deeplens/testcam/status")
    assert retained_flag and status["state"] == "online"


# -- defect 3: the queue drops the oldest, the status is kept, a frozen device is noticed ---------

def test_a_full_queue_drops_the_oldest_events_and_keeps_the_status(tmp_path, subscriber):
    broker = Mosquitto(tmp_path)
    broker.start()
    sub = subscriber(broker.address, DETECTIONS, session=True)
    broker.stop()
    pub = Publisher("127.0.0.1", broker.port, "cam1", "deeplens_cam1", queue_limit=5)
    pub.start()
    try:
        for seq in range(12):
            pub.publish_detections(event(seq))
        pub.publish_status({"fps": 4.0})
        stats = pub.stats()
        assert (stats["queued"], stats["dropped"]) == (6, 7)  # 5 events and the status
        broker.start()
        assert seqs(sub, 5, timeout=5) == [7, 8, 9, 10, 11]
        wait_until(lambda: retained(broker.address) == {"fps": 4.0, "state": "online"}, timeout=3)
    finally:
        pub.stop()
        broker.stop()


def test_a_frozen_device_gets_its_last_will_within_seconds(mosquitto):
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER_SCRIPT, str(mosquitto.port)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        frozen = time.monotonic()
        proc.send_signal(signal.SIGSTOP)  # as a device that lost power or its network: no FIN, no DISCONNECT
        # mosquitto drops a client 1.5 keepalives after its last packet, checking about every
        # second or two: about 10 s at a 5 s keepalive (it was 45 s or more at 30 s).
        seen = wait_until(lambda: retained(mosquitto.address) == {"state": "offline"}, timeout=13, step=0.2)
        assert seen - frozen >= 1.5 * events.KEEPALIVE_S - 1.5  # it was the keepalive, not something else
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)


# -- 10 s broker outages under a steady stream of events -------------------------------------------

class Feed(threading.Thread):
    """What the inference loop does: an event every 50 ms, a status every 0.5 s."""

    def __init__(self, pub):
        super().__init__(daemon=True)
        self.pub, self.sent, self.status_n = pub, 0, 0
        self.running, self.stopped = threading.Event(), threading.Event()
        self.running.set()

    def run(self):
        while not self.stopped.is_set():
            self.running.wait(1)
            if not self.running.is_set():
                continue
            self.pub.publish_detections(event(self.sent))
            self.sent += 1
            if self.sent % 10 == 0:
                self.status_n = self.sent
                self.pub.publish_status({"n": self.status_n})
            time.sleep(0.05)

    def pause(self):
        self.running.clear()
        time.sleep(0.1)

    def stop(self):
        self.stopped.set()
        self.join(5)


def _save(pid, folder):
    """Have mosquitto write its persistence file now (SIGUSR1), as its autosave would: after a
    SIGKILL it restarts from that file, and the subscriber's session must be in it."""
    db = Path(folder) / "mosquitto.db"
    before = db.stat().st_mtime_ns if db.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    wait_until(lambda: db.exists() and db.stat().st_mtime_ns != before, timeout=5)


def _outage(pub, address, sub, kill, revive, sig, save):
    """Run the events through a 10 s outage; returns the measured figures."""
    feed = Feed(pub)
    feed.start()
    received = []

    def collect():
        received.extend(seqs(sub))
        return set(received)
    try:
        wait_until(lambda: len(collect()) >= 10, timeout=10)
        if sig == signal.SIGKILL:  # what the broker had taken and not yet delivered is lost with it
            feed.pause()
            wait_until(lambda: collect() >= set(range(feed.sent)), timeout=10)
            save()
        kill(sig)
        feed.running.set()  # events go on through the outage
        wait_until(lambda: not pub.stats()["connected"], timeout=5)
        time.sleep(OUTAGE_S)
        status_before = feed.status_n
        back = revive()
        connected = wait_until(lambda: pub.stats()["connected"], timeout=10, step=0.01)
        online = wait_until(lambda: (retained(address, timeout=0.3) or {}).get("n", -1) >= status_before,
                            timeout=2.0, step=0.05)
        time.sleep(0.5)
    finally:
        feed.stop()
    wait_until(lambda: pub.stats()["queued"] == 0, timeout=10)
    deadline = time.monotonic() + 10
    while collect() != set(range(feed.sent)) and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = pub.stats()
    figures = {"events": feed.sent, "lost": len(set(range(feed.sent)) - set(received)),
               "duplicates": len(received) - len(set(received)), "dropped": stats["dropped"],
               "reconnect_s": round(connected - back, 3), "status_online_s": round(online - connected, 3)}
    print(f"outage {signal.Signals(sig).name}: {figures}")
    assert retained(address)["state"] == "online"
    return figures


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_an_external_broker_outage_loses_no_event(mosquitto, publishers, sig):
    sub = Subscriber(mosquitto.address, DETECTIONS, session=True)
    pub = publishers(mosquitto.address)
    wait_until(lambda: pub.stats()["connected"])

    def kill(sig):
        mosquitto.proc.send_signal(sig)
        mosquitto.proc.wait(10)

    def revive():
        mosquitto.start()  # same port, same persistence
        return time.monotonic()
    try:
        figures = _outage(pub, mosquitto.address, sub, kill, revive, sig,
                          lambda: _save(mosquitto.proc.pid, mosquitto.folder))
    finally:
        sub.close()
    assert figures["lost"] == 0 and figures["dropped"] == 0
    assert figures["reconnect_s"] <= 1.5 and figures["status_online_s"] <= 2.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_an_embedded_broker_outage_loses_no_event(tmp_path, sig):
    config = config_mod.load(env={}, overrides={"broker": "embedded", "state_dir": str(tmp_path / "state"),
                                                "mqtt_port": free_port(), "device_id": "cam1"})
    address, handle = broker_mod.start_broker(config)
    pub = events.from_config(config, address)
    pub.start()
    sub = Subscriber(address, DETECTIONS, session=True)
    host, _, port = address.rpartition(":")

    def refuse(**kwargs):
        raise BrokerError("held down by the test")

    def kill(sig):
        handle._spawn = refuse  # the supervisor's restarts fail for the whole outage
        os.kill(handle.pid, sig)

    def revive():
        del handle._spawn  # its next try (at most 2 s later) succeeds
        return wait_until(lambda: broker_mod._listening(host, int(port)), timeout=5, step=0.01)
    try:
        figures = _outage(pub, address, sub, kill, revive, sig, lambda: _save(handle.pid, tmp_path / "state" / "mosquitto"))
        stats = handle.stats()
    finally:
        sub.close()
        pub.stop()
        handle.stop()
    assert figures["lost"] == 0 and figures["dropped"] == 0
    assert figures["reconnect_s"] <= 1.5 and figures["status_online_s"] <= 2.0
    assert stats == {"kind": "mosquitto", "running": True, "restarts": 1, "reason": None}
