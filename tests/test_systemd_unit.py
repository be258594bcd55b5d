"""The systemd unit is one systemd accepts, and keeps the promises the service relies on."""
import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "deeplens-edge.service"


def unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_unit_restarts_on_failure_watches_the_loop_and_runs_unprivileged():
    service = unit()["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) > 0
    assert service["User"] != "root" and "video" in service["SupplementaryGroups"]
    assert "/opt/awscam/artifacts" in service["ReadWritePaths"]
    assert service["ProtectSystem"] == "strict"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit():
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if "is not executable" not in line]
    assert not problems, problems


def test_a_notify_that_fails_never_raises(monkeypatch, tmp_path):
    """The inference loop pings the watchdog every frame: a missing socket must not kill it."""
    from edge import systemd
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert systemd.notify("WATCHDOG=1") is False
