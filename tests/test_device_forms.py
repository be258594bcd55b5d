"""One device client for every verb: `pull`, `capture`, `status` and `swap-model` accept a
DEVICE as a URL, as host:port or as a devices.yaml name, and reach the same running service."""
import json
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from control.cli import main as ctl
from test_models_api import TOKEN, start_service


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("device-forms")
    svc = start_service(folder / "device")
    devices = folder / "devices.yaml"
    devices.write_text(f"devices:\n  cam:\n    url: {svc.url}\n    token: {TOKEN}\n")
    svc.devices_file = devices
    yield svc
    svc.stop()


FORMS = {"url": lambda svc: svc.url, "host:port": lambda svc: urlsplit(svc.url).netloc, "name": lambda svc: "cam"}
VERBS = {
    "pull": lambda device, out, pkg: (["pull", device, "-n", "1", "-o", str(out / "frames")],
                                      lambda: len(list((out / "frames").glob("frame_*.json"))) == 1),
    "capture": lambda device, out, pkg: (["capture", device, "-o", str(out / "frame.jpg")],
                                         lambda: (out / "frame.jpg").read_bytes()[:2] == b"\xff\xd8"),
    "status": lambda device, out, pkg: (["status", device, "--json"], None),
    "swap-model": lambda device, out, pkg: (["swap-model", device, str(pkg.folder), "--no-activate", "--json"], None),
}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_each_device_verb_takes_each_device_form(service, packages, tmp_path, monkeypatch, verb, form):
    monkeypatch.setenv("DEEPLENS_DEVICES", str(service.devices_file))
    monkeypatch.delenv("DEEPLENS_TOKEN", raising=False)  # the token comes from devices.yaml, for every form
    args, check = VERBS[verb](FORMS[form](service), tmp_path, packages["a"])
    result = CliRunner().invoke(ctl, args)
    assert result.exit_code == 0, result.output
    if verb == "status":
        assert json.loads(result.stdout)["device_id"] == "testcam"
    if verb == "swap-model":
        assert json.loads(result.stdout)["version"] == packages["a"].version
    if check:
        assert check()
