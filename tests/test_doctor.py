"""`deeplens-ctl doctor`: one line per check, `ok` or the fix, against a stand-in device over
pinned HTTPS with a TLS+password mosquitto (test_pinning), on 127.0.0.1."""
import json

from click.testing import CliRunner

from conftest import free_port
from control.cli import main as ctl
from core import devices as dev
from test_pinning import TOKEN, certs, mqtt_doc, secure_mosquitto, stand_in  # noqa: F401 (fixtures)

CHECKS = ["dns", "tcp", "tls", "http", "token", "status", "broker", "clock", "disk", "camera", "model"]


def doctor(tmp_path, url, token=TOKEN, fingerprint="", *extra):
    devices_file = tmp_path / "devices.yaml"
    dev.save_device(dev.Device("cam", url, token, fingerprint), devices_file)
    result = CliRunner().invoke(ctl, ["doctor", "cam", *extra], env={"DEEPLENS_DEVICES": str(devices_file)})
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    return result, lines


def status_of(line):
    return line.split()[1]


def test_all_ok_against_a_working_device(stand_in, certs, secure_mosquitto, tmp_path):
    port = secure_mosquitto(certs["a"])
    device = stand_in(certs["a"], protect_reads=True, mqtt_doc=mqtt_doc(port),
                      mqtt={"broker": f"0.0.0.0:{port}", "tls": True, "auth": True, "connected": True})
    result, lines = doctor(tmp_path, device.url, TOKEN, certs["a"][2])
    assert result.exit_code == 0, result.output
    assert list(lines) == CHECKS
    assert all(status_of(line) == "ok" for line in lines.values()), result.output
    assert f"connected to 127.0.0.1:{port} (TLS, user 'camera')" in lines["broker"]
    as_json = CliRunner().invoke(ctl, ["doctor", device.url, "--json"],
                                 env={"DEEPLENS_DEVICES": str(tmp_path / "devices.yaml")})
    doc = json.loads(as_json.stdout)
    assert as_json.exit_code == 0 and doc["ok"] is True and doc["url"] == device.url
    assert [c["name"] for c in doc["checks"]] == CHECKS and {c["status"] for c in doc["checks"]} == {"ok"}


def test_a_wrong_token_says_so_and_skips_the_broker(stand_in, certs, secure_mosquitto, tmp_path):
    port = secure_mosquitto(certs["a"])
    device = stand_in(certs["a"], mqtt_doc=mqtt_doc(port))
    result, lines = doctor(tmp_path, device.url, "wrong-token", certs["a"][2])
    assert result.exit_code == 1
    assert status_of(lines["token"]) == "FAIL" and "the token is wrong" in lines["token"]
    assert "deeplens-ctl devices add cam" in lines["token"]
    assert status_of(lines["broker"]) == "skipped"
    assert status_of(lines["camera"]) == "ok"  # reads are open on this device


def test_a_closed_port_stops_after_tcp(tmp_path):
    result, lines = doctor(tmp_path, f"https://127.0.0.1:{free_port()}", TOKEN, "AB:" * 31 + "AB")
    assert result.exit_code == 1
    assert status_of(lines["dns"]) == "ok"
    assert status_of(lines["tcp"]) == "FAIL" and "nothing listens on 127.0.0.1:" in lines["tcp"]
    assert [status_of(lines[name]) for name in CHECKS[2:]] == ["skipped"] * (len(CHECKS) - 2)


def test_a_changed_certificate_names_both_fingerprints(stand_in, certs, tmp_path):
    device = stand_in(certs["b"])
    result, lines = doctor(tmp_path, device.url, TOKEN, certs["a"][2])
    assert result.exit_code == 1
    assert status_of(lines["tls"]) == "FAIL"
    assert certs["a"][2] in lines["tls"] and certs["b"][2] in lines["tls"] and "devices add" in lines["tls"]
    assert status_of(lines["http"]) == "skipped" and device.seen_tokens == []


def test_an_unpinned_self_signed_certificate_gets_the_command_that_pins_it(stand_in, certs, tmp_path):
    device = stand_in(certs["a"])
    result, lines = doctor(tmp_path, device.url, TOKEN, "")
    assert status_of(lines["tls"]) == "FAIL" and f"--fingerprint {certs['a'][2]}" in lines["tls"]


def test_what_the_device_reports_gives_warnings_and_fixes(stand_in, certs, tmp_path):
    device = stand_in(certs["a"], skew_s=-90, disk={"artifacts_free_mb": 50.0}, model=None,
                      model_error="no model configured",
                      camera={"source": "webcam:0", "connected": False, "error": "cannot open /dev/video0"})
    result, lines = doctor(tmp_path, device.url, TOKEN, certs["a"][2])
    assert result.exit_code == 1
    assert status_of(lines["broker"]) == "ok"  # no MQTT: /mqtt 404, status broker null
    assert status_of(lines["clock"]) == "WARN" and "behind" in lines["clock"]
    assert status_of(lines["disk"]) == "WARN" and "only 50 MB free" in lines["disk"]
    assert status_of(lines["camera"]) == "FAIL" and "cannot open /dev/video0" in lines["camera"]
    assert status_of(lines["model"]) == "WARN" and "deeplens-ctl swap-model cam" in lines["model"]


def test_a_wrong_broker_password_is_reported(stand_in, certs, secure_mosquitto, tmp_path):
    port = secure_mosquitto(certs["a"])
    device = stand_in(certs["a"], mqtt_doc=mqtt_doc(port, password="wrong"))
    result, lines = doctor(tmp_path, device.url, TOKEN, certs["a"][2])
    assert result.exit_code == 1
    assert status_of(lines["broker"]) == "FAIL" and "refused the user name 'camera'" in lines["broker"]
