"""Who may do what on a device: the token for every change (and for reads when asked), HTTPS with
the certificate the controller pins, the broker's address and credentials for token holders, the
region the model sees, and a taken port that stops the start in one line, leaving nothing behind."""
import socket
import ssl
import subprocess
import sys

import pytest
import requests

from conftest import free_port
from core.tls import fingerprint, self_signed
from edge_service import EdgeService

SMALL = ("--frame-size", "640x360", "--device-id", "testcam")
TOKEN = "access-token"


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "edge.pem", tmp_path / "edge.key"
    return cert, key, self_signed(cert, key, "testcam", ["127.0.0.1", "localhost"])


def test_https_with_protected_reads(tmp_path, certificate, dummy_model):
    cert, key, expected = certificate
    service = EdgeService(tmp_path, *SMALL, "--broker", "embedded", "--mqtt-port", str(free_port()),
                          "--mqtt-username", "deeplens", "--mqtt-password", "broker-pw", "--model",
                          str(dummy_model.folder), "--tls-cert", str(cert), "--tls-key", str(key),
                          "--token", TOKEN, "--protect-reads", "yes").start()
    try:
        seen = ssl.get_server_certificate(("127.0.0.1", service.port))
        assert fingerprint(ssl.PEM_cert_to_DER_cert(seen)) == expected
        anonymous = requests.Session()
        anonymous.trust_env, anonymous.verify = False, False  # the environment's CA bundle would win
        assert anonymous.get(service.url + "/health").json() == {"status": "ok"}
        for path in ("/status", "/capture", "/threshold", "/models", "/mqtt"):
            refused = anonymous.get(service.url + path)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized", path
        doc = service.get("/status").json()
        assert doc["listen"] == {"url": f"https://127.0.0.1:{service.port}", "tls": True, "fingerprint": expected,
                                 "reads_need_token": True}
        assert doc["mqtt"]["tls"] is True and doc["mqtt"]["auth"] is True
        login = service.get("/mqtt").json()
        assert (login["tls"], login["username"], login["password"]) == (True, "deeplens", "broker-pw")
        assert doc["mqtt"]["broker"] == f"{login['host']}:{login['port']}"
        assert doc["disk"]["artifacts_free_mb"] > 0
    finally:
        service.stop()


def test_status_and_live_view_show_the_region_the_model_sees(tmp_path, dummy_model):
    service = EdgeService(tmp_path, *SMALL, "--broker", "none", "--model", str(dummy_model.folder)).start()
    try:
        doc = service.wait_status(lambda s: s["frames_processed"] >= 1)
        x, y, w, h = doc["crop"]["region"]  # a 300x300 model on 640x360 frames: the centred square
        assert doc["crop"]["policy"] == "center"
        assert (round(x, 4), y, round(w, 4), h) == (0.2188, 0.0, 0.5625, 1.0)
        assert doc["listen"]["url"] == service.url and doc["listen"]["reads_need_token"] is False
    finally:
        service.stop()


def test_a_taken_port_is_one_line_and_leaves_nothing_running(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "edge.cli", "serve", "--port", str(port), "--broker", "embedded",
                               "--mqtt-port", str(free_port()), "--state-dir", str(tmp_path / "state")],
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"deeplens-edge: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(is another deeplens-edge running? choose another with --port)"]
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "state")], capture_output=True, text=True)
    assert leftovers.stdout == ""
