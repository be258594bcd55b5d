"""Fixtures shared by the whole suite: a real mosquitto broker, a tiny model, free ports."""
import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BANKNOTES = REPO.parent / "shared" / "datasets" / "banknotes"


# mosquitto started as root drops to the `mosquitto` user, which cannot read a test's private
# folder; keep it as whoever runs the tests.
BROKER_USER = f"user {getpass.getuser()}\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Mosquitto:
    """Debian's mosquitto on a free loopback port, restartable (same port, same persistence)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.port = free_port()
        self.proc = None
        conf = self.folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{BROKER_USER}"
                        f"persistence true\npersistence_location {self.folder}/\n")
        self.conf = conf

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path):
    if not shutil.which("mosquitto"):
        pytest.fail("mosquitto is not installed: run `make test`, which installs it")
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def dummy_model(tmp_path_factory):
    """A random-weight 2-class SSD package (300x300), built once per session in about a second."""
    from core.ssd import dummy_package
    folder = tmp_path_factory.mktemp("dummy-model")
    return dummy_package(folder, name="dummy", num_classes=2, size=300)


@pytest.fixture
def subscriber():
    """Make MQTT subscribers (mqtt_subscriber.Subscriber), closed after the test."""
    from mqtt_subscriber import Subscriber
    made = []

    def make(*args, **kwargs):
        made.append(Subscriber(*args, **kwargs))
        return made[-1]

    yield make
    for sub in made:
        sub.close()


@pytest.fixture
def publishers():
    """Make edge.events Publishers for device cam1 on a broker address, stopped after the test."""
    from edge.events import Publisher
    made = []

    def make(address, **kwargs):
        host, _, port = address.rpartition(":")
        made.append(Publisher(host, int(port), "cam1", "deeplens_cam1", **kwargs))
        made[-1].start()
        return made[-1]

    yield make
    for pub in made:
        pub.stop()


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(trainer, package, manifest) of a tiny model trained once per session (a few seconds)."""
    from control.train.trainer import train_local
    from test_train import tiny_config, write_synthetic_set
    folder = tmp_path_factory.mktemp("train")
    manifest = write_synthetic_set(folder / "data", count=16)
    trainer, package = train_local(tiny_config(), manifest, manifest, runs_dir=folder / "runs")
    return trainer, package, manifest


@pytest.fixture(scope="session")
def packages(tmp_path_factory):
    """Random-weight packages: a, b, c (300 px), small (256 px) and nan (NaN weights), made once."""
    from test_models_api import make_package
    root = tmp_path_factory.mktemp("packages")
    return {"a": make_package(root / "a", 1), "b": make_package(root / "b", 2), "c": make_package(root / "c", 3),
            "small": make_package(root / "small", 4, size=256), "nan": make_package(root / "nan", 5, nan=True)}


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """An empty artifacts folder that the shims use instead of /opt/awscam/artifacts."""
    folder = tmp_path / "artifacts"
    folder.mkdir()
    monkeypatch.setenv("DEEPLENS_ARTIFACTS", str(folder))
    return folder


@pytest.fixture(autouse=True)
def _clean_deeplens_env(monkeypatch):
    """No DEEPLENS_* variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("DEEPLENS_") or key == "AWS_IOT_THING_NAME":
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _stop_services_a_test_left_running():
    """Services a test started and did not stop are stopped after it (fixture-held ones are kept)."""
    from edge_service import EdgeService
    before = set(EdgeService.running)
    yield
    for service in EdgeService.running - before:
        service.stop()


@pytest.fixture
def edge_service(tmp_path):
    """Start `deeplens-edge serve` with extra arguments: `edge_service('--camera', 'synthetic')`."""
    from edge_service import EdgeService
    started = []

    def start(*args, env=None):
        service = EdgeService(tmp_path, *args, env=env).start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def banknotes():
    if not (BANKNOTES / "sg-manifest.manifest").is_file():
        pytest.skip(f"the shared banknotes set is not at {BANKNOTES}")
    return BANKNOTES


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium driven by Playwright (tests/browser.py), one per session."""
    if not os.path.exists("/usr/bin/chromium"):
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    from browser import launch
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser page (own cookies and storage) for one test; console errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"

