"""edge.broker: external and no broker as given; embedded mosquitto, and amqtt without it."""
import queue
import socket

import paho.mqtt.client as mqtt
import pytest

from conftest import free_port
from edge import broker as broker_mod
from edge import config as config_mod


def config(tmp_path, broker):
    return config_mod.load(env={}, overrides={"broker": broker, "state_dir": str(tmp_path / "state")})


def round_trip(address):
    """Publish a retained message, then read it back with a second client."""
    host, _, port = address.rpartition(":")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(host, int(port))
    pub.loop_start()
    pub.publish("deeplens/t/status", b'{"state": "online"}', qos=1, retain=True).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
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
def test_embedded_mosquitto_on_the_preferred_port(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="edge.broker")
    port = free_port()
    monkeypatch.setattr(broker_mod, "PREFERRED_PORT", port)
    address, handle = broker_mod.start_broker(config(tmp_path, "embedded"))
    try:
        assert (address, handle.kind) == (f"127.0.0.1:{port}", "mosquitto")
        assert "persistence true" in (tmp_path / "state" / "mosquitto" / "mosquitto.conf").read_text()
        assert {"broker": "mosquitto", "address": address} in [getattr(r, "fields", None) for r in caplog.records]
        assert round_trip(address) == b'{"state": "online"}'
    finally:
        handle.stop()
    assert closed(address)


@pytest.mark.mosquitto
def test_embedded_mosquitto_moves_off_a_taken_port(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(broker_mod, "PREFERRED_PORT", taken.getsockname()[1])
        address, handle = broker_mod.start_broker(config(tmp_path, "embedded"))
        try:
            assert address != f"127.0.0.1:{taken.getsockname()[1]}"
            assert round_trip(address) == b'{"state": "online"}'
        finally:
            handle.stop()


def test_amqtt_without_mosquitto(tmp_path, monkeypatch):
    monkeypatch.setattr(broker_mod.shutil, "which", lambda name: None)
    monkeypatch.setattr(broker_mod, "PREFERRED_PORT", free_port())
    address, handle = broker_mod.start_broker(config(tmp_path, "embedded"))
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
