"""An external broker with TLS and a password is used as configured; a wrong password is reported."""
import json
import queue
import shutil
import subprocess

import paho.mqtt.client as mqtt
import pytest

from conftest import BROKER_USER, free_port, wait_for_port

SMALL = ("--frame-size", "640x360", "--device-id", "testcam", "--threshold", "0.3")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def secure_broker(tmp_path):
    """mosquitto with a TLS listener (certificate from a throw-away CA) and a password file."""
    if not shutil.which("openssl"):
        pytest.fail("openssl is not installed: run `make test`, which installs it")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=tmp_path)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr", cwd=tmp_path)
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "san.ext", "-out", "server.pem", cwd=tmp_path)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwords"), "camera", "s3cret"], check=True)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\n{BROKER_USER}allow_anonymous false\npassword_file {tmp_path}/passwords\n"
                    f"cafile {tmp_path}/ca.pem\ncertfile {tmp_path}/server.pem\nkeyfile {tmp_path}/server.key\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield {"address": f"127.0.0.1:{port}", "port": port, "ca": str(tmp_path / "ca.pem")}
    proc.terminate()
    proc.wait(10)


def test_events_reach_a_tls_broker_with_a_password(edge_service, dummy_model, secure_broker):
    messages = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set("camera", "s3cret")
    client.tls_set(ca_certs=secure_broker["ca"])
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("deeplens/testcam/detections", qos=1)
    client.on_message = lambda c, u, m: messages.put(json.loads(m.payload))
    client.connect("127.0.0.1", secure_broker["port"])
    client.loop_start()
    try:
        service = edge_service(*SMALL, "--broker", secure_broker["address"], "--model", str(dummy_model.folder),
                               "--mqtt-tls", "--mqtt-ca-file", secure_broker["ca"],
                               "--mqtt-username", "camera", "--mqtt-password", "s3cret")
        service.wait_status(lambda s: s["mqtt"]["connected"])
        assert messages.get(timeout=15)["model_version"] == dummy_model.version
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_wrong_password_leaves_the_service_up_and_says_not_connected(edge_service, dummy_model, secure_broker):
    service = edge_service(*SMALL, "--broker", secure_broker["address"], "--model", str(dummy_model.folder),
                           "--mqtt-tls", "--mqtt-ca-file", secure_broker["ca"],
                           "--mqtt-username", "camera", "--mqtt-password", "wrong")
    doc = service.wait_status(lambda s: s["frames_processed"] > 10)
    assert doc["mqtt"]["connected"] is False
    assert service.get("/capture").status_code == 200
