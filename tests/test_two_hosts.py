"""Two machines: a device installed with `deeplens-edge install`, reached from a laptop over HTTPS.

Two network namespaces joined by a veth pair stand for the device and the laptop (made and
removed here; root needed, as in CI). The device runs the service exactly as the installed
systemd unit would (its ExecStart, as its User); the laptop types what README's device section
says: `devices add`, then `doctor`, `pull`, `swap-model`, `threshold`, `watch`.
"""
import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 for network namespaces (CI has both)")
BIN = Path(sys.executable).parent
DEVICE_IP, LAPTOP_IP = "10.231.0.1", "10.231.0.2"
PORT = 8443
USER = "dltest"
SYSTEM_PYTHON = "/usr/bin/python3"  # the service user cannot run a Python under /root (as pyenv's here)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sh(*command, check=True, **kwargs):
    return subprocess.run([str(c) for c in command], check=check, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def hosts():
    device, laptop = f"dl-dev-{os.getpid()}", f"dl-lap-{os.getpid()}"
    veth = f"dlv{os.getpid() % 100000}"
    for ns in (device, laptop):
        sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", veth + "d", "type", "veth", "peer", "name", veth + "l")
        for ns, end, address in ((device, "d", DEVICE_IP), (laptop, "l", LAPTOP_IP)):
            sh("ip", "link", "set", veth + end, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", veth + end)
            sh("ip", "-n", ns, "link", "set", veth + end, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield {"device": device, "laptop": laptop}
    finally:
        for ns in (device, laptop):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def root():
    folder = Path(tempfile.mkdtemp(prefix="deeplens-root-", dir="/tmp"))
    folder.chmod(0o755)  # the service user walks through it
    yield folder
    sh(BIN / "deeplens-edge", "install", "--root", folder, "--uninstall", "--purge", check=False)
    shutil.rmtree(folder, ignore_errors=True)


def install(root):
    """`sudo deeplens-edge install ...` as README's device section has it, under a temporary root."""
    done = sh(BIN / "deeplens-edge", "install", "--root", root, "--host", DEVICE_IP, "--port", PORT,
              "--camera", "synthetic?fps=10&size=640x360", "--user", USER, "--from", REPO,
              "--python", SYSTEM_PYTHON, timeout=600)
    return done.stdout


class Device:
    """The installed service, started in the device namespace with the unit's command line and user."""

    def __init__(self, root, namespace):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read(root / "etc/systemd/system/deeplens-edge.service")
        service = unit["Service"]
        self.command = ["ip", "netns", "exec", namespace, "runuser", "-u", service["User"], "--",
                        *shlex.split(service["ExecStart"])]
        self.log = root / "device.log"
        self.proc = None

    def start(self, laptop_namespace, timeout=90):
        """Start it and wait until the laptop can open its port."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env={"PATH": PATH})
        probe = f"import socket; socket.create_connection(('{DEVICE_IP}', {PORT}), 1).close()"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the device service exited:\n{self.log.read_text()[-3000:]}"
            if sh("ip", "netns", "exec", laptop_namespace, sys.executable, "-c", probe, check=False).returncode == 0:
                return self
            time.sleep(0.5)
        raise AssertionError(f"the device never listened:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Laptop:
    """`deeplens-ctl` typed on the laptop (its namespace), with its own devices file."""

    def __init__(self, namespace, folder):
        self.namespace, self.folder = namespace, folder
        self.devices = folder / "devices.yaml"

    def ctl(self, *args, devices=None, timeout=120):
        env = {"PATH": PATH, "HOME": str(self.folder), "DEEPLENS_DEVICES": str(devices or self.devices)}
        return sh("ip", "netns", "exec", self.namespace, BIN / "deeplens-ctl", *args, check=False, env=env,
                  timeout=timeout, cwd=self.folder)


def wait_healthy(laptop, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = laptop.ctl("status", "cam", "--json")
        if done.returncode == 0 and json.loads(done.stdout)["camera"]["connected"]:
            return json.loads(done.stdout)
        time.sleep(1)
    raise AssertionError(f"the device never answered: {done.stderr}")


def test_a_laptop_drives_an_installed_device_over_https(hosts, root, tmp_path, dummy_model):
    printed = install(root)
    token = re.search(r"token\s+(\S+)\s+\(shown once", printed).group(1)
    fingerprint = re.search(r"certificate fingerprint\s+(\S+)", printed).group(1)
    assert f"deeplens-ctl devices add NAME https://{DEVICE_IP}:{PORT} --token TOKEN --fingerprint {fingerprint}" \
        in printed
    etc = root / "etc/deeplens-edge"
    assert (etc / "token").read_text().strip() == token and (etc / "token").stat().st_mode & 0o777 == 0o600
    settings = (etc / "edge.yaml").read_text()
    assert token not in settings and "token_file:" in settings

    device, laptop = Device(root, hosts["device"]).start(hosts["laptop"]), Laptop(hosts["laptop"], tmp_path)
    try:
        added = laptop.ctl("devices", "add", "cam", f"https://{DEVICE_IP}:{PORT}", "--token", token,
                           "--fingerprint", fingerprint)
        assert added.returncode == 0, added.stderr
        assert oct(laptop.devices.stat().st_mode & 0o777) == "0o600"
        wait_healthy(laptop)
        doctor = laptop.ctl("doctor", "cam")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr

        pulled = laptop.ctl("pull", "cam", "-n", "2", "--interval-ms", "200", "-o", tmp_path / "frames")
        assert pulled.returncode == 0, pulled.stderr
        assert len(list((tmp_path / "frames").glob("frame_*.json"))) == 2

        swapped = laptop.ctl("swap-model", "cam", dummy_model.folder, "--wait", "90", "--json")
        assert swapped.returncode == 0, swapped.stderr
        result = json.loads(swapped.stdout)
        assert result["version"] == dummy_model.version and result.get("first_detections"), result

        assert laptop.ctl("threshold", "cam", "0.55").returncode == 0
        assert json.loads(laptop.ctl("threshold", "cam", "--json").stdout)["default"] == 0.55
        watched = laptop.ctl("watch", "cam", "-n", "2", "--json", timeout=60)
        events = [json.loads(line) for line in watched.stdout.splitlines()]
        assert len(events) == 2 and all(e["model_version"] == dummy_model.version for e in events), watched.stderr

        # Refusals: a wrong token, a changed certificate, an anonymous broker client.
        wrong_token = tmp_path / "wrong-token.yaml"
        wrong_token.write_text(laptop.devices.read_text().replace(token, "not-the-token"))
        refused = laptop.ctl("threshold", "cam", "0.9", devices=wrong_token)
        assert refused.returncode == 1 and "401" in refused.stderr and "token" in refused.stderr
        changed = tmp_path / "changed-cert.yaml"
        changed.write_text(laptop.devices.read_text().replace(fingerprint, "AB:" * 31 + "AB"))
        refused = laptop.ctl("status", "cam", devices=changed)
        assert refused.returncode == 1 and "certificate" in refused.stderr and fingerprint in refused.stderr
        anonymous = sh("ip", "netns", "exec", hosts["laptop"], "mosquitto_sub", "-h", DEVICE_IP, "-p", "1883",
                       "--cafile", etc / "edge.pem", "--insecure", "-t", "deeplens/#", "-C", "1", "-W", "5",
                       check=False)
        assert anonymous.returncode != 0 and "not authori" in (anonymous.stderr + anonymous.stdout).lower()
    finally:
        device.stop()

    # Installing again upgrades in place: same token, certificate and models; then uninstall.
    printed = install(root)
    assert "kept in" in printed and token not in printed and fingerprint in printed
    assert (etc / "token").read_text().strip() == token
    device = Device(root, hosts["device"]).start(hosts["laptop"])
    try:
        assert wait_healthy(laptop)["model"]["version"] == dummy_model.version
    finally:
        device.stop()
    done = sh(BIN / "deeplens-edge", "install", "--root", root, "--uninstall")
    assert not (root / "etc/systemd/system/deeplens-edge.service").exists() and not etc.exists()
    assert not (root / "opt/deeplens-kit").exists()
    assert list((root / "opt/awscam/artifacts/models").glob(f"*-{dummy_model.version}")), done.stderr
