"""A device over HTTPS with its own self-signed certificate: `devices add` pins its fingerprint,
the device client then accepts that certificate only, and the Watcher reaches the device's
TLS+password broker with the credentials from GET /mqtt, checking the same fingerprint.

The device here is a stand-in (a small Flask app on 127.0.0.1 over TLS) that follows the REST
contract; the broker is Debian's mosquitto.
"""
import datetime
import ipaddress
import json
import os
import queue
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

from conftest import BROKER_USER, free_port, wait_for_port
from control.cli import main as ctl
from core import devices as dev
from core.client import DeviceClient
from core.errors import DeviceError
from core.watch import Watcher

TOKEN = "stand-in-token"


# -- a certificate, a stand-in device and a TLS+password broker ----------------------------------
def make_cert(folder, name="device"):
    """A self-signed certificate for 127.0.0.1/localhost: (cert path, key path, fingerprint)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    fingerprint = ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
    return cert_path, key_path, fingerprint


class _Handler(WSGIRequestHandler):
    def date_time_string(self, timestamp=None):  # the Date header, with the stand-in's clock skew
        return super().date_time_string((timestamp or time.time()) + self.server.skew_s)

    def log_message(self, *args):
        pass


class StandIn:
    """A device that follows the REST contract: /health, /status, /mqtt, token, over http(s)."""

    def __init__(self, cert=None, token=TOKEN, protect_reads=False, mqtt_doc=None, skew_s=0.0, **status):
        self.token, self.protect_reads, self.mqtt_doc = token, protect_reads, mqtt_doc
        self.seen_tokens = []
        self.status_doc = {
            "device_id": "testcam", "model": {"name": "notes", "version": "3f9c0a51d2e7", "classes": ["a", "b"]},
            "model_error": None, "models": {}, "threshold": {"default": 0.4, "per_class": {}},
            "camera": {"source": "synthetic", "connected": True, "error": None},
            "fps": 10.0, "inference_ms": {"p50": 40, "p99": 50}, "frames_processed": 100, "frames_dropped": 0,
            "inference_errors": 0, "uptime_s": 12.0, "disk": {"artifacts_free_mb": 5000.0},
            "mqtt": {"broker": None, "tls": False, "auth": False, "connected": False},
        }
        self.status_doc.update(status)
        app = Flask("stand-in")

        def error(status_code, code, message):
            return jsonify({"error": {"code": code, "message": message}}), status_code

        def authorised():
            self.seen_tokens.append(request.headers.get("Authorization"))
            return request.headers.get("Authorization") == f"Bearer {self.token}"

        @app.get("/health")
        def health():
            return jsonify({"status": "ok"})

        @app.get("/status")
        def status_():
            if self.protect_reads and not authorised():
                return error(401, "unauthorized", "a valid token is needed")
            return jsonify({**self.status_doc, "listen": {"url": self.url, "tls": cert is not None,
                                                          "fingerprint": self.fingerprint}})

        @app.get("/mqtt")
        def mqtt_():
            if not authorised():
                return error(401, "unauthorized", "a valid token is needed")
            if self.mqtt_doc is None:
                return error(404, "no_broker", "the device runs without MQTT")
            return jsonify(self.mqtt_doc)

        @app.post("/models/rollback")
        def rollback():
            if not authorised():
                return error(401, "unauthorized", "a valid token is needed")
            return jsonify({"last_swap": {"from": "b", "to": "a"}})

        context = None
        self.fingerprint = None
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert[0], cert[1])
            self.fingerprint = cert[2]
        self.server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Handler, ssl_context=context)
        self.server.skew_s = skew_s
        self.url = f"{'https' if cert else 'http'}://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in():
    """Start stand-in devices: `stand_in(cert, **options)`; stopped after the test."""
    started = []

    def start(*args, **kwargs):
        started.append(StandIn(*args, **kwargs))
        return started[-1]

    yield start
    for device in started:
        device.stop()


@pytest.fixture
def certs(tmp_path):
    """Two unrelated self-signed certificates: `a` (the device's) and `b` (a reinstall, or someone else)."""
    return {"a": make_cert(tmp_path / "certs", "a"), "b": make_cert(tmp_path / "certs", "b")}


@pytest.fixture
def secure_mosquitto(tmp_path):
    """Start mosquitto with TLS (a given certificate) and the user camera/s3cret: `secure_mosquitto(cert)`."""
    if not shutil.which("mosquitto"):
        pytest.fail("mosquitto is not installed: run `make test`, which installs it")
    procs = []

    def start(cert):
        folder = tmp_path / f"broker-{len(procs)}"
        folder.mkdir()
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(folder / "passwords"), "camera", "s3cret"], check=True)
        port = free_port()
        (folder / "mosquitto.conf").write_text(
            f"listener {port} 127.0.0.1\n{BROKER_USER}allow_anonymous false\npassword_file {folder}/passwords\n"
            f"certfile {cert[0]}\nkeyfile {cert[1]}\n")
        procs.append(subprocess.Popen(["mosquitto", "-c", str(folder / "mosquitto.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(port)
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def mqtt_doc(port, password="s3cret", host="0.0.0.0"):
    return {"host": host, "port": port, "tls": True, "username": "camera", "password": password}


def pinned(device, fingerprint, token=TOKEN):
    return DeviceClient(dev.Device("cam", device.url, token, fingerprint))


# -- the device client ---------------------------------------------------------------------------
def test_a_pinned_certificate_is_accepted_whatever_its_name_and_issuer(stand_in, certs, recwarn):
    device = stand_in(certs["a"], protect_reads=True)
    client = pinned(device, certs["a"][2])
    assert client.status()["device_id"] == "testcam"
    assert device.seen_tokens[-1] == f"Bearer {TOKEN}"  # the token goes with reads too
    assert client.rollback()["last_swap"]["to"] == "a"
    assert not [w for w in recwarn if "Unverified HTTPS" in str(w.message)]


def test_a_changed_certificate_is_refused_before_the_token_is_sent(stand_in, certs):
    device = stand_in(certs["b"])
    with pytest.raises(DeviceError) as caught:
        pinned(device, certs["a"][2]).status()
    message = str(caught.value)
    assert certs["a"][2] in message and certs["b"][2] in message
    assert "deeplens-ctl devices add cam" in message and "reinstalled" in message and "\n" not in message
    assert device.seen_tokens == []


def test_an_unpinned_self_signed_certificate_says_to_pin_it(stand_in, certs):
    device = stand_in(certs["a"])
    with pytest.raises(DeviceError, match=r"does not trust .*deeplens-ctl devices add"):
        DeviceClient(device.url).status()


def test_a_plain_http_url_to_an_https_device_says_so(stand_in, certs):
    device = stand_in(certs["a"])
    with pytest.raises(DeviceError, match="that port speaks HTTPS: use https://127.0.0.1"):
        DeviceClient(device.url.replace("https://", "http://")).status()


def test_a_url_or_host_port_of_an_entry_gets_its_token_and_fingerprint(tmp_path):
    found = {"cam": dev.Device("cam", "https://cam.local:8443", "tok", "AB:" * 31 + "AB")}
    for form in ("cam", "https://cam.local:8443/", "cam.local:8443"):
        resolved = dev.resolve(form, found)
        assert (resolved.url, resolved.token, resolved.fingerprint) == \
               ("https://cam.local:8443", "tok", "AB:" * 31 + "AB"), form
    assert dev.resolve("http://cam.local:8443", found).fingerprint == ""  # another scheme: not that entry


def test_fingerprints_are_read_in_the_usual_spellings():
    canonical = ":".join(["3A"] * 32)
    for text in (canonical.lower(), "3a" * 32, f"SHA256:{canonical}", f"sha256 Fingerprint={canonical}"):
        assert dev.normalise_fingerprint(text) == canonical
    with pytest.raises(ValueError, match="not a SHA-256 fingerprint"):
        dev.normalise_fingerprint("3A:3A")


# -- deeplens-ctl devices add / remove ------------------------------------------------------------
def run_ctl(*args, devices_file):
    return CliRunner().invoke(ctl, list(args), env={"DEEPLENS_DEVICES": str(devices_file)})


def test_devices_add_pins_the_certificate_and_writes_a_private_file(stand_in, certs, tmp_path):
    device = stand_in(certs["a"], mqtt_doc=mqtt_doc(1883))
    devices_file = tmp_path / "config" / "deeplens-kit" / "devices.yaml"  # the folders do not exist yet
    devices_file.parent.mkdir(parents=True)
    devices_file.write_text("devices:\n  garage: http://garage.local:8080\n")
    added = run_ctl("devices", "add", "kitchen", device.url, "--token", TOKEN, devices_file=devices_file)
    assert added.exit_code == 0, added.output
    assert f"SHA-256 fingerprint {certs['a'][2]}" in added.stdout and "certificate pinned" in added.stdout
    assert stat.S_IMODE(os.stat(devices_file).st_mode) == 0o600
    stored = dev.load_devices(devices_file)
    assert stored["kitchen"] == dev.Device("kitchen", device.url, TOKEN, certs["a"][2])
    assert stored["garage"].url == "http://garage.local:8080"
    # the same device, by name, through the pinned connection
    status = run_ctl("status", "kitchen", "--json", devices_file=devices_file)
    assert status.exit_code == 0 and json.loads(status.stdout)["device_id"] == "testcam"
    listed = json.loads(run_ctl("devices", "--json", devices_file=devices_file).stdout)
    assert listed["kitchen"] == {"url": device.url, "token": True, "fingerprint": certs["a"][2]}
    removed = run_ctl("devices", "remove", "kitchen", devices_file=devices_file)
    assert removed.exit_code == 0 and set(dev.load_devices(devices_file)) == {"garage"}
    assert stat.S_IMODE(os.stat(devices_file).st_mode) == 0o600


def test_devices_add_creates_the_folders_and_checks_a_given_fingerprint(stand_in, certs, tmp_path):
    device = stand_in(certs["a"])  # no MQTT: /mqtt answers 404 after the token check
    devices_file = tmp_path / "new" / "folder" / "devices.yaml"
    given = certs["a"][2].replace(":", "").lower()
    added = run_ctl("devices", "add", "cam", device.url, "--token", TOKEN, "--fingerprint", given,
                    devices_file=devices_file)
    assert added.exit_code == 0, added.output
    assert dev.load_devices(devices_file)["cam"].fingerprint == certs["a"][2]


def test_devices_add_refuses_a_fingerprint_mismatch_and_a_wrong_token(stand_in, certs, tmp_path):
    device = stand_in(certs["b"])
    devices_file = tmp_path / "devices.yaml"
    mismatch = run_ctl("devices", "add", "cam", device.url, "--token", TOKEN, "--fingerprint", certs["a"][2],
                       devices_file=devices_file)
    assert mismatch.exit_code == 1
    assert certs["a"][2] in mismatch.output and certs["b"][2] in mismatch.output and "nothing stored" in mismatch.output
    assert device.seen_tokens == [] and not devices_file.exists()
    wrong = run_ctl("devices", "add", "cam", device.url, "--token", "nope", devices_file=devices_file)
    assert wrong.exit_code == 1 and "the token is wrong" in wrong.output and not devices_file.exists()
    bad = run_ctl("devices", "add", "cam", device.url, "--token", TOKEN, "--fingerprint", "12:34",
                  devices_file=devices_file)
    assert bad.exit_code == 2 and "not a SHA-256 fingerprint" in bad.output
    unknown = run_ctl("devices", "remove", "camm", devices_file=devices_file)
    assert unknown.exit_code == 1 and "no device 'camm'" in unknown.output


# -- the Watcher over a TLS+password broker --------------------------------------------------------
class Publisher:
    """Publishes a detection event every 0.2 s to the broker, as the device would."""

    def __init__(self, port, cert):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.username_pw_set("camera", "s3cret")
        self.client.tls_set(ca_certs=str(cert[0]))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        seq = 0
        while not self.stop_event.wait(0.2):
            seq += 1
            event = {"ts": time.time(), "seq": seq, "model_version": "3f9c0a51d2e7", "inference_ms": 40.0,
                     "detections": [{"class_id": 0, "label": "a", "score": 0.9, "box": [0.1, 0.1, 0.5, 0.5]}]}
            self.client.publish("deeplens/testcam/detections", json.dumps(event), qos=1)

    def close(self):
        self.stop_event.set()
        self.thread.join()
        self.client.loop_stop()
        self.client.disconnect()


def test_the_watcher_uses_the_brokers_credentials_over_pinned_tls(stand_in, certs, secure_mosquitto, tmp_path):
    port = secure_mosquitto(certs["a"])
    device = stand_in(certs["a"], mqtt_doc=mqtt_doc(port),
                      mqtt={"broker": f"0.0.0.0:{port}", "tls": True, "auth": True, "connected": True})
    publisher = Publisher(port, certs["a"])
    try:
        with Watcher(pinned(device, certs["a"][2])) as watcher:
            assert watcher.over_mqtt, watcher.problem
            assert watcher.broker == ("127.0.0.1", port)  # 0.0.0.0 means the device's host
            event = watcher.next("detections", time.monotonic() + 10)
            assert event["model_version"] == "3f9c0a51d2e7"
        # `deeplens-ctl watch` by a devices.yaml name
        devices_file = tmp_path / "devices.yaml"
        dev.save_device(dev.Device("cam", device.url, TOKEN, certs["a"][2]), devices_file)
        watched = run_ctl("watch", "cam", "-n", "2", "--json", devices_file=devices_file)
        assert watched.exit_code == 0, watched.output
        assert [json.loads(line)["model_version"] for line in watched.stdout.splitlines()] == ["3f9c0a51d2e7"] * 2
    finally:
        publisher.close()


def test_the_watcher_says_why_a_wrong_password_is_refused(stand_in, certs, secure_mosquitto):
    port = secure_mosquitto(certs["a"])
    device = stand_in(certs["a"], mqtt_doc=mqtt_doc(port, password="wrong"))
    with Watcher(pinned(device, certs["a"][2]), connect_timeout=3) as watcher:
        assert not watcher.over_mqtt
        assert f"the broker at 127.0.0.1:{port} refused the user name 'camera'" in watcher.problem


class RecordingTLSServer:
    """A TLS server that records every byte a client sends after the handshake."""

    def __init__(self, cert):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert[0], cert[1])
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = queue.Queue()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        conn, _ = self.sock.accept()
        data = b""
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(3)
                while chunk := tls.recv(4096):
                    data += chunk
        except OSError:
            pass
        self.received.put(data)

    def close(self):
        self.sock.close()


def test_the_watcher_sends_nothing_to_a_broker_with_another_certificate(stand_in, certs):
    impostor = RecordingTLSServer(certs["b"])
    try:
        device = stand_in(certs["a"], mqtt_doc=mqtt_doc(impostor.port))
        with Watcher(pinned(device, certs["a"][2]), connect_timeout=3) as watcher:
            assert not watcher.over_mqtt
            assert certs["b"][2] in watcher.problem and certs["a"][2] in watcher.problem
            assert "nothing was sent" in watcher.problem
        assert impostor.received.get(timeout=5) == b""  # no CONNECT packet, so no password
    finally:
        impostor.close()


def test_without_a_token_the_watcher_falls_back_to_the_status_broker(stand_in, mosquitto):
    device = stand_in(None, mqtt={"broker": mosquitto.address, "tls": False, "auth": False, "connected": True})
    with Watcher(DeviceClient(dev.Device("cam", device.url))) as watcher:
        assert watcher.over_mqtt and watcher.broker == ("127.0.0.1", mosquitto.port)
    with Watcher(DeviceClient(dev.Device("cam", device.url, TOKEN))) as watcher:  # /mqtt 404: the same
        assert watcher.over_mqtt and watcher.problem is None
