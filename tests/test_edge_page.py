"""The device's own page (GET /, edge/page/) in a real headless chromium against a real
`deeplens-edge serve`, and GET /detections behind it: what a person at a device without the
laptop studio relies on. Screenshots go to build/test-artefacts/edge-page-*.png."""
import re
import time

import pytest
import requests
from playwright.sync_api import expect

from browser import screenshot
from core.detector import Detector
from core.package import load_package
from core.ssd import dummy_package
from edge import demo
from shims.camera import SyntheticCamera
from test_models_api import tgz, upload

TOKEN = "page-token"
DEMO = load_package(demo.SHIPPED_MODEL)  # finds the synthetic camera's notes: real detections to show
SERVE = ("--frame-size", "640x360", "--broker", "none", "--model", str(DEMO.folder))
WAIT_MS = 15000


@pytest.fixture
def serve(edge_service, tmp_path):
    """Start a service running the demo model on 640x360 synthetic frames, with extra flags."""
    return lambda *args: edge_service(*SERVE, "--artifacts", str(tmp_path / "artifacts"), *args)


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """A second 160 px package (random weights), to switch to and back."""
    return dummy_package(tmp_path_factory.mktemp("other"), name="other", num_classes=2, size=160, seed=7)


def wait_until(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def open_page(page, service, token=None):
    page.goto(service.url + "/")
    if token is not None:
        page.fill("#token", token)
        page.press("#token", "Enter")


def frame_seq(page):
    return page.locator("#live").get_attribute("data-seq")


def frames_keep_coming(page, after=None):
    """The live view shows a frame other than `after`, then another: the stream flows."""
    for _ in range(2):
        wait_until(lambda: frame_seq(page) not in (None, "", after), 15)
        after = frame_seq(page)
    assert page.evaluate("document.querySelector('#live').naturalWidth") == 640  # never enlarged to 960


def row(page, version):
    return page.locator(f'#models tr[data-version="{version}"]')


# -- the page ----------------------------------------------------------------------------------
def test_without_the_token_the_page_shows_status_live_view_and_detections_read_only(serve, page):
    service = serve("--token", TOKEN)
    assert upload(service, tgz(DEMO), token=TOKEN).status_code == 201
    open_page(page, service)
    expect(page.locator("#status-device")).to_have_text("testcam", timeout=WAIT_MS)
    expect(page.locator("#status-model")).to_have_text(f"demo {DEMO.version}")
    expect(page.locator("#status-camera")).to_have_text(re.compile(r"^synthetic.*: connected$"))
    expect(page.locator("#status-mqtt")).to_have_text("off")
    expect(page.locator("#status-inference")).to_have_text(re.compile(r"^\d+\.\d ms$"))
    expect(page.locator("#region")).to_have_text("model sees: centre 360x360 of 640x360 (outlined on the live view)")
    expect(page.locator("#detections li[data-label]").first).to_have_text(re.compile(r"^note_\d+ \d\.\d\d at "))
    frames_keep_coming(page)
    expect(page.locator("#token-state")).to_contain_text("read-only")
    expect(row(page, DEMO.version)).to_be_visible()
    for control in ("#threshold-default", "#threshold-class-0", "#rollback", "#models button.activate",
                    "#models button.delete"):
        expect(page.locator(control)).to_be_disabled()
    screenshot(page, "edge-page-read-only")


def test_with_the_token_the_threshold_sliders_change_the_device_and_survive_a_reload(serve, page):
    service = serve("--token", TOKEN)
    open_page(page, service, TOKEN)
    expect(page.locator("#token-state")).to_have_text("token accepted: controls on", timeout=WAIT_MS)
    default = page.locator("#threshold-default")
    expect(default).to_be_enabled()
    expect(default).to_have_value("0.4")
    default.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    wait_until(lambda: service.get("/threshold").json()["default"] == 0.45)

    page.reload()  # the token stays for this tab; the value shown is the device's
    expect(default).to_have_value("0.45", timeout=WAIT_MS)
    expect(page.locator("#threshold-default-value")).to_have_text("0.45")
    expect(default).to_be_enabled()
    note = page.locator("#threshold-class-0")  # note_2000, the demo model's first class
    expect(page.locator("#threshold-class-0-value")).to_have_text("0.45 (default)")
    note.focus()
    for _ in range(5):
        page.keyboard.press("ArrowLeft")
    wait_until(lambda: service.get("/threshold").json() == {"default": 0.45, "per_class": {"note_2000": 0.4}})
    expect(page.locator("#threshold-class-0-value")).to_have_text("0.40")
    screenshot(page, "edge-page-threshold")
    page.click("#threshold-class-0-clear")
    wait_until(lambda: service.get("/threshold").json()["per_class"] == {})
    expect(page.locator("#threshold-class-0-value")).to_have_text("0.45 (default)")


def test_a_wrong_token_says_so_and_leaves_the_controls_off(serve, page):
    service = serve("--token", TOKEN)
    open_page(page, service, "not-the-token")
    expect(page.locator("#token-state")).to_have_text("the token is wrong", timeout=WAIT_MS)
    expect(page.locator("#threshold-default")).to_be_disabled()
    expect(page.locator("#status-device")).to_have_text("testcam")  # reads stay open on loopback
    screenshot(page, "edge-page-wrong-token")
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    expect(page.locator("#token-state")).to_have_text("token accepted: controls on")
    expect(page.locator("#threshold-default")).to_be_enabled()


def test_activate_roll_back_and_delete_from_the_model_list(serve, page, other):
    service = serve("--token", TOKEN, "--health-frames", "3", "--health-slowdown", "100")
    for package in (DEMO, other):
        assert upload(service, tgz(package), token=TOKEN).status_code == 201
    open_page(page, service, TOKEN)
    expect(page.locator("#token-state")).to_have_text("token accepted: controls on", timeout=WAIT_MS)

    for package in (DEMO, other):  # the store's own versions, so that the first is there to roll back to
        button = row(page, package.version).locator("button.activate")
        expect(button).to_be_enabled(timeout=WAIT_MS)  # off while the previous swap is watched
        button.click()
        expect(page.locator("#message")).to_contain_text(f"{package.version} is active", timeout=WAIT_MS)
    expect(page.locator("#status-model")).to_have_text(f"other {other.version}", timeout=WAIT_MS)
    expect(page.locator("#last-swap")).to_contain_text(f"activate {DEMO.version} → {other.version}")

    rollback = page.locator("#rollback")
    expect(rollback).to_have_text(f"roll back to {DEMO.version}")
    expect(rollback).to_be_enabled(timeout=WAIT_MS)
    rollback.click()
    expect(page.locator("#message")).to_have_text(f"rolled back: {DEMO.version} is active", timeout=WAIT_MS)
    expect(page.locator("#last-rollback")).to_contain_text(f"{other.version} → {DEMO.version}: requested")
    assert service.get("/status").json()["model"]["version"] == DEMO.version
    screenshot(page, "edge-page-models")

    page.once("dialog", lambda dialog: dialog.accept())
    delete = row(page, other.version).locator("button.delete")
    expect(delete).to_be_enabled(timeout=WAIT_MS)
    delete.click()
    expect(row(page, other.version)).to_have_count(0, timeout=WAIT_MS)
    assert other.version not in {v["version"] for v in service.get("/models").json()["versions"]}


def test_a_banner_says_when_the_device_stops_answering_and_goes_when_it_is_back(serve, page):
    service = serve()
    open_page(page, service)
    banner = page.locator("#banner")
    expect(page.locator("#status-device")).to_have_text("testcam", timeout=WAIT_MS)
    expect(banner).to_be_hidden()
    frames_keep_coming(page)
    last = frame_seq(page)
    service.stop()
    expect(banner).to_have_text("device not answering — retrying", timeout=WAIT_MS)
    expect(banner).to_be_visible()
    screenshot(page, "edge-page-device-gone")
    service.start()  # the same port
    expect(banner).to_be_hidden(timeout=30000)
    frames_keep_coming(page, after=last)  # the live view reconnected by itself


def test_when_reads_are_protected_the_page_asks_for_the_token_then_shows_frames(serve, page):
    service = serve("--token", TOKEN, "--protect-reads", "yes")
    anonymous = requests.Session()
    anonymous.trust_env = False
    assert anonymous.get(service.url + "/", timeout=10).status_code == 200  # the page itself is open
    assert anonymous.get(service.url + "/static/page.js", timeout=10).status_code == 200
    for path in ("/detections", f"/models/{DEMO.version}/archive"):
        assert anonymous.get(service.url + path, timeout=10).status_code == 401, path

    open_page(page, service)
    expect(page.locator("#auth-needed")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#token")).to_be_focused()
    assert page.locator("#live").get_attribute("src") is None and not frame_seq(page)
    page.fill("#token", "not-the-token")
    page.press("#token", "Enter")
    expect(page.locator("#auth-needed")).to_contain_text("the token is wrong")
    expect(page.locator("#token-state")).to_have_text("the token is wrong")

    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    expect(page.locator("#auth-needed")).to_be_hidden(timeout=WAIT_MS)
    expect(page.locator("#status-device")).to_have_text("testcam")
    expect(page.locator("#token-state")).to_have_text("token accepted: controls on")
    frames_keep_coming(page)
    expect(page.locator("#detections li").first).to_be_visible()
    screenshot(page, "edge-page-protected-reads")


# -- GET /detections ---------------------------------------------------------------------------
def test_detections_are_the_models_detections_of_that_frame(serve):
    service = serve()
    doc = {"detections": []}
    deadline = time.monotonic() + 15
    while not doc.get("detections") and time.monotonic() < deadline:
        doc = service.get("/detections").json()  # 503 no_frame_yet until the camera's first frame
    assert doc["model"] == {"name": "demo", "version": DEMO.version}
    assert doc["region"] == [0.21875, 0.0, 0.5625, 1.0] and doc["frame"] == {"width": 640, "height": 360}
    # The synthetic camera is deterministic: frame `seq` is render(seq), so the detections can be redone here.
    image = SyntheticCamera(0, (640, 360)).render(doc["seq"])[0]
    expected = [d for d in Detector.open(DEMO.folder, crop="center").detect(image)[0] if d["score"] >= 0.4]
    assert [d["label"] for d in doc["detections"]] == [d["label"] for d in expected]
    for got, want in zip(doc["detections"], expected):
        assert got["score"] == pytest.approx(want["score"], abs=1e-3)
        assert got["box"] == pytest.approx(want["box"], abs=1e-3)


def test_detections_without_a_model_or_a_frame(edge_service, tmp_path):
    capture_only = edge_service("--frame-size", "640x360", "--broker", "none", "--artifacts", str(tmp_path / "a"))
    wait_until(lambda: capture_only.get("/detections").status_code == 200)
    doc = capture_only.get("/detections").json()
    assert (doc["model"], doc["region"], doc["detections"]) == (None, None, [])
    capture_only.stop()
    empty = tmp_path / "no-images"
    empty.mkdir()
    blind = edge_service("--camera", f"folder:{empty}", "--broker", "none", "--artifacts", str(tmp_path / "b"))
    response = blind.get("/detections")
    assert response.status_code == 503 and response.json()["error"]["code"] == "no_frame_yet"
