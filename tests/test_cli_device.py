"""deeplens-ctl device verbs against a real `deeplens-edge serve`, and the device config file.

The acceptance test: a model made by `deeplens-ctl train` goes onto a running service with
`swap-model --wait`, no restart, and its detections arrive on MQTT tagged with its version.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from core import devices as dev
from core.errors import DeviceError
from core.quality import flat_band_rows
from mqtt_subscriber import Subscriber
from test_models_api import TOKEN, start_service, tgz


CTL = str(Path(sys.executable).with_name("deeplens-ctl"))


def ctl(*args, token=TOKEN, devices_file=None, timeout=120):
    env = {**os.environ, "DEEPLENS_TOKEN": token or "", "DEEPLENS_DEVICES": str(devices_file or "/nonexistent")}
    if not token:
        env.pop("DEEPLENS_TOKEN")
    return subprocess.run([CTL, *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def trained_run(tmp_path, banknotes):
    """A run folder from a 1-epoch `deeplens-ctl train` of the tiny network at 128 px, on the
    banknotes with local image paths and without the frames that `train` refuses as broken."""
    runs = tmp_path / "runs"
    runs.mkdir()
    manifest = runs / "banknotes.manifest"
    with open(manifest, "w") as out:
        for line in (banknotes / "sg-manifest.manifest").read_text().splitlines():
            record = json.loads(line)
            image = banknotes.joinpath(*record["source-ref"].split("/")[-2:])
            if not flat_band_rows(cv2.imread(str(image))):
                out.write(json.dumps({**record, "source-ref": str(image)}) + "\n")
    done = subprocess.run([CTL, "train", str(manifest),
                           "--name", "tiny", "--arch", "tiny", "--size", "128", "--epochs", "1", "--batch-size", "8",
                           "--runs-dir", str(runs)], capture_output=True, text=True, timeout=600)
    if done.returncode or not (runs / "tiny" / "model" / "model.json").is_file():
        pytest.fail(f"deeplens-ctl train did not leave runs/tiny/model:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")
    return runs / "tiny"


def test_swap_model_puts_a_trained_model_on_a_running_service(tmp_path, trained_run, mosquitto):
    service = start_service(tmp_path / "device", "--broker", mosquitto.address, "--threshold", "0.0",
                            "--health-frames", "5", "--health-slowdown", "100")
    pid = service.proc.pid
    version = json.loads((trained_run / "model" / "model.json").read_text())["version"]
    sub = Subscriber(mosquitto.address, "deeplens/testcam/detections")
    try:
        done = ctl("swap-model", service.url, str(trained_run), "--wait", "60")
        assert done.returncode == 0, done.stderr
        assert f"{version} is active and passed its health check" in done.stdout
        assert f"by {version}:" in done.stdout  # the first detections of the new model
        event, _ = sub.next("deeplens/testcam/detections", where=lambda e: e["model_version"] == version)
    finally:
        sub.close()
    assert event["detections"] and service.proc.pid == pid and service.proc.poll() is None
    assert service.get("/status").json()["model"]["version"] == version


def test_swap_model_json_no_activate_then_models_and_rollback(tmp_path, packages):
    service = start_service(tmp_path, "--health-frames", "3", "--health-slowdown", "100")
    first = ctl("swap-model", service.url, str(packages["a"].folder), "--json", "--wait", "30")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["version"] == packages["a"].version and result["status"]["active"] == packages["a"].version
    assert result["over_mqtt"] is False and "first_detections" not in result  # --broker none: HTTP polling
    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(tgz(packages["b"]))
    stored = ctl("swap-model", service.url, str(archive), "--no-activate", "--json")
    assert stored.returncode == 0 and "swap" not in json.loads(stored.stdout)
    assert ctl("swap-model", service.url, str(packages["b"].folder), "--wait", "30").returncode == 0
    listing = json.loads(ctl("models", service.url, "--json").stdout)
    assert listing["active"] == packages["b"].version and listing["rollback_to"] == packages["a"].version
    back = ctl("rollback", service.url)
    assert back.returncode == 0 and f"-> {packages['a'].version}" in back.stdout
    assert service.wait_status(lambda s: s["model"]["version"] == packages["a"].version)


def test_refusals_exit_non_zero_with_the_devices_reason(tmp_path, packages):
    service = start_service(tmp_path, "--health-frames", "0")
    assert ctl("swap-model", service.url, str(packages["a"].folder), "--wait", "0").returncode == 0
    wrong_size = ctl("swap-model", service.url, str(packages["small"].folder))
    assert wrong_size.returncode == 1 and "256x256" in wrong_size.stderr
    nan = ctl("swap-model", service.url, str(packages["nan"].folder))
    assert nan.returncode == 1 and "NaN" in nan.stderr
    no_token = ctl("rollback", service.url, token=None)
    assert no_token.returncode == 1 and "DEEPLENS_TOKEN" in no_token.stderr
    wrong_token = ctl("rollback", service.url, token="nope")
    assert wrong_token.returncode == 1 and "401" in wrong_token.stderr
    not_a_package = ctl("swap-model", service.url, str(tmp_path))
    assert not_a_package.returncode == 1 and "has the run finished?" in not_a_package.stderr


def test_small_verbs_by_configured_name(tmp_path, packages, mosquitto):
    service = start_service(tmp_path, "--broker", mosquitto.address, "--model", str(packages["a"].folder),
                            "--threshold", "0.0")
    devices_file = tmp_path / "devices.yaml"
    devices_file.write_text(f"devices:\n  cam:\n    url: {service.url}\n    token: {TOKEN}\n  other: example:8080\n")
    listed = ctl("devices", "--json", devices_file=devices_file, token=None)
    assert json.loads(listed.stdout) == {"cam": {"url": service.url, "token": True},
                                         "other": {"url": "http://example:8080", "token": False}}
    status = json.loads(ctl("status", "cam", "--json", devices_file=devices_file).stdout)
    assert status["model"]["version"] == packages["a"].version
    assert json.loads(ctl("threshold", "cam", "0.5", "--class", "class0=0.7", "--json",
                          devices_file=devices_file).stdout) == {"default": 0.5, "per_class": {"class0": 0.7}}
    shot = tmp_path / "frame.jpg"
    assert ctl("capture", "cam", "-o", str(shot), devices_file=devices_file).returncode == 0
    assert shot.read_bytes()[:2] == b"\xff\xd8"
    watched = ctl("watch", "cam", "-n", "2", "--json", devices_file=devices_file)
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert len(events) == 2 and all(e["model_version"] == packages["a"].version for e in events)
    typo = ctl("status", "camm", devices_file=devices_file)
    assert typo.returncode == 1 and "did you mean 'cam'?" in typo.stderr


def test_token_from_the_environment_wins_over_the_file(tmp_path, monkeypatch):
    devices_file = tmp_path / "devices.yaml"
    devices_file.write_text("devices:\n  cam:\n    url: cam.local:8080\n    token: from-file\n")
    found = dev.load_devices(devices_file)
    assert dev.resolve("cam", found).token == "from-file"
    assert dev.resolve("http://cam.local:8080/", found).token == "from-file"  # a URL of a configured device
    monkeypatch.setenv("DEEPLENS_TOKEN", "from-env")
    assert dev.resolve("cam", found) == dev.Device("cam", "http://cam.local:8080", "from-env")
    devices_file.write_text("devices: [cam]\n")
    with pytest.raises(DeviceError, match="expected a mapping"):
        dev.load_devices(devices_file)
