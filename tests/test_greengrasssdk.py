"""The greengrasssdk shim: publishes to DEEPLENS_BROKER like the device's SDK, and flushes at exit."""
import json
import os
import subprocess
import sys
import time

import pytest

import greengrasssdk
from conftest import REPO, free_port

TOPIC = "$aws/things/deeplens_test/infer"

LAMBDA_LIKE = """
import greengrasssdk
client = greengrasssdk.client("iot-data")
for i in range(20):
    client.publish(topic="$aws/things/deeplens_test/infer", payload='{"note": 0.%d}' % i, qos=0)
client.publish(topic="$aws/things/deeplens_test/infer", payload=b"Model loaded")
"""


def mosquitto_sub(address, *args):
    host, _, port = address.rpartition(":")
    return ["mosquitto_sub", "-h", host, "-p", port, "-q", "1", "-t", TOPIC, *args]


def run_script(script, broker, **env):
    env = {**os.environ, "DEEPLENS_BROKER": broker, **env}
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.mosquitto
def test_messages_published_then_exit_all_arrive(mosquitto):
    """The process exits right after publishing, before it has even connected: atexit delivers."""
    session = ["-i", "gg-test", "-c"]
    subprocess.run(mosquitto_sub(mosquitto.address, *session, "-E"), check=True, timeout=10)
    assert run_script(LAMBDA_LIKE, mosquitto.address).returncode == 0
    got = subprocess.run(mosquitto_sub(mosquitto.address, *session, "-C", "21", "-W", "10"),
                         capture_output=True, text=True, timeout=15).stdout.splitlines()
    assert [json.loads(line) for line in got[:20]] == [{"note": float(f"0.{i}")} for i in range(20)]
    assert got[20] == "Model loaded"


def test_unreachable_broker_waits_a_bounded_time():
    script = "import greengrasssdk\ngreengrasssdk.EXIT_FLUSH_S = 0.5\n" + LAMBDA_LIKE
    started = time.monotonic()
    done = run_script(script, f"127.0.0.1:{free_port()}")
    assert done.returncode == 0 and time.monotonic() - started < 10
    assert "messages not delivered at exit" in done.stderr


def test_without_a_broker_messages_are_dropped_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(greengrasssdk, "_connection", None)
    monkeypatch.setattr(greengrasssdk, "_warned", False)
    client = greengrasssdk.client("iot-data")
    client.publish(topic=TOPIC, payload="one")
    client.publish(topic=TOPIC, payload="two")
    assert [r.getMessage() for r in caplog.records].count(
        "greengrasssdk: DEEPLENS_BROKER is not set; messages are dropped, as on a device without connectivity") == 1


def test_publish_is_keyword_only_like_the_sdk():
    client = greengrasssdk.client("iot-data")
    with pytest.raises(TypeError):
        client.publish(TOPIC, "positional")
    with pytest.raises(ValueError, match="topic"):
        client.publish(payload="no topic")
    with pytest.raises(TypeError, match="str or bytes"):
        client.publish(topic=TOPIC, payload={"not": "serialised"})


def test_other_clients():
    with pytest.raises(NotImplementedError, match="only 'iot-data'"):
        greengrasssdk.client("lambda")
    with pytest.raises(ValueError, match="iot-data"):
        greengrasssdk.client("s3")
