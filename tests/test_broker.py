"""edge.broker: external and no broker as given; embedded mosquitto, and amqtt without it."""
import os
import queue
import signal
import socket
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import free_port
from edge import broker as broker_mod
from edge import config as config_mod


def config(tmp_path, broker, **settings):
    return config_mod.load(env={}, overrides={"broker": broker, "state_dir": str(tmp_path / "state"), **settings})


def round_trip(address, user=None):
    """Publish a retained message (as `user`, (name, password)), then read it back anonymously."""
    host, _, port = address.rpartition(":")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if user:
        pub.username_pw_set(*user)
    pub.connect(host, int(port))
    pub.loop_start()
    pub.publish("deeplens/t/status", b'{"state": "online"}', qos=1, retain=True).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    return retained(address)


def retained(address):
    """The retained message on deeplens/t/status, read by an anonymous client."""
    host, _, port = address.rpartition(":")
    got = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("deeplens/t/status", qos=1)
    sub.on_message = lambda c, u, m: got.put(m.payload)
    sub.connect(host, int(port))
    sub.loop_start()
    try:
        return got.get(timeout=5)
    finally:
        sub.disconnect()
        sub.loop_stop()


def closed(address):
    host, _, port = address.rpartition(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()
    return True


def test_none_and_external_are_taken_as_given(tmp_path):
    assert broker_mod.start_broker(config(tmp_path, "none")) == (None, None)
    assert broker_mod.start_broker(config(tmp_path, "broker.lan:8883")) == ("broker.lan:8883", None)


@pytest.mark.mosquitto
def test_embedded_mosquitto_on_the_preferred_port(tmp_path, caplog):
    caplog.set_level("INFO", logger="edge.broker")
    port = free_port()
    address, handle = broker_mod.start_broker(config(tmp_path, "embedded", mqtt_port=port))
    try:
        assert (address, handle.kind) == (f"127.0.0.1:{port}", "mosquitto")
        assert "persistence true" in (tmp_path / "state" / "mosquitto" / "mosquitto.conf").read_text()
        assert {"broker": "mosquitto", "address": address} in [getattr(r, "fields", None) for r in caplog.records]
        assert round_trip(address) == b'{"state": "online"}'
    finally:
        handle.stop()
    assert closed(address)


@pytest.mark.mosquitto
def test_embedded_mosquitto_moves_off_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address, handle = broker_mod.start_broker(config(tmp_path, "embedded", mqtt_port=taken.getsockname()[1]))
        try:
            assert address != f"127.0.0.1:{taken.getsockname()[1]}"
            assert round_trip(address) == b'{"state": "online"}'
        finally:
            handle.stop()


def test_amqtt_without_mosquitto(tmp_path, monkeypatch):
    monkeypatch.setattr(broker_mod.shutil, "which", lambda name: None)
    address, handle = broker_mod.start_broker(config(tmp_path, "embedded", mqtt_port=free_port()))
    try:
        assert handle.kind == "amqtt"
        assert round_trip(address) == b'{"state": "online"}'
    finally:
        handle.stop()
    assert closed(address)


def test_amqtt_on_a_taken_port_says_what_to_do():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(broker_mod.BrokerError, match="install mosquitto"):
            broker_mod.AmqttBroker(taken.getsockname()[1])


@pytest.mark.mosquitto
def test_with_a_password_only_that_user_publishes_and_anonymous_clients_read_on_loopback(tmp_path):
    settings = {"mqtt_port": free_port(), "mqtt_username": "deeplens", "mqtt_password": "pw-1"}
    address, handle = broker_mod.start_broker(config(tmp_path, "embedded", **settings))
    try:
        assert round_trip(address, ("deeplens", "pw-1")) == b'{"state": "online"}'
        host, _, port = address.rpartition(":")
        anonymous = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        anonymous.connect(host, int(port))
        anonymous.loop_start()
        anonymous.publish("deeplens/t/status", b"forged", qos=1, retain=True).wait_for_publish(5)
        anonymous.disconnect()
        anonymous.loop_stop()
        assert retained(address) == b'{"state": "online"}'  # the forged one was dropped
        assert "pw-1" not in (tmp_path / "state" / "mosquitto" / "passwd").read_text()  # hashed
    finally:
        handle.stop()


def test_listening_beyond_loopback_needs_a_password(tmp_path):
    with pytest.raises(broker_mod.BrokerError, match="without a password: set mqtt_username and mqtt_password"):
        broker_mod.start_broker(config(tmp_path, "embedded", host="0.0.0.0", mqtt_port=free_port()))


@pytest.mark.mosquitto
def test_embedded_mosquitto_is_restarted_on_the_same_port_when_it_dies(tmp_path):
    address, handle = broker_mod.start_broker(config(tmp_path, "embedded", mqtt_port=free_port()))
    try:
        assert round_trip(address) == b'{"state": "online"}'
        assert handle.stats() == {"kind": "mosquitto", "running": True, "restarts": 0, "reason": None}
        for restarts, sig in enumerate((signal.SIGTERM, signal.SIGKILL), start=1):
            pid = handle.pid
            os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while handle.stats()["restarts"] < restarts:
                assert time.monotonic() < deadline, f"not restarted after {sig.name}: {handle.stats()}"
                time.sleep(0.05)
            assert handle.pid != pid and handle.stats()["running"]
            # the same address, and the retained message is still there (saved at the SIGTERM)
            assert retained(address) == b'{"state": "online"}'
    finally:
        handle.stop()
    assert closed(address) and handle.stats()["running"] is False
