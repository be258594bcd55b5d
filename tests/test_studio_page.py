"""The studio's page (control/studio/static) in a real browser over a real studio (control/studio/app.py):
the box editor with mouse and keys, saves that land in labels.manifest, two tabs on one frame,
the gallery's filters and exclusion, and the Devices, Capture and Train views against a real
device (`deeplens-edge serve` on a synthetic camera)."""
import json
import re
import threading
import time

import cv2
import numpy as np
import pytest
import requests

from browser import screenshot
from conftest import free_port
from test_models_api import tgz

CLASSES = ["note_2000", "note_1000"]
SIZE = 160


# -- a small project ------------------------------------------------------------------------------------
def synthetic_frame(seed, index=400):
    """A 160x160 frame of a synthetic camera (the centre square, as /capture?crop=square&size=160) and its truth."""
    from edge.capture import map_truth, shape
    from shims.camera import SyntheticCamera
    image, truth = SyntheticCamera(seed, (640, 360)).render(index)
    shaped, mapping = shape(image, "square", SIZE)
    return shaped, map_truth(truth, mapping, SIZE, SIZE)


def write_frame(folder, number, pixels, truth=None, sidecar=True):
    """frame_NNNNNN.jpg and its sidecar, as `deeplens-ctl pull` keeps them (control/dataset/pull.py)."""
    from core.dhash import dhash
    name = f"frame_{number:06d}.jpg"
    data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    (folder / name).write_bytes(data)
    if sidecar:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        meta = {"file": name, "device": "http://127.0.0.1:8080", "seq": number, "time": "2026-01-01T00:00:00+00:00",
                "timestamp": 1767225600.0 + number, "width": pixels.shape[1], "height": pixels.shape[0],
                "capture": {"format": "jpeg", "count": 1, "crop": "square", "size": SIZE},
                "dhash": f"{dhash(decoded):016x}", "truth": truth or []}
        (folder / f"frame_{number:06d}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return name


def make_project(root, seeds=(1, 2, 3, 4, 5), duplicate=True, broken=False):
    project = root / "project"
    frames = project / "frames"
    frames.mkdir(parents=True)
    (project / "project.json").write_text(json.dumps({"classes": CLASSES, "devices": []}))
    number = 0
    for seed in seeds:
        pixels, truth = synthetic_frame(seed)
        write_frame(frames, number, pixels, truth)
        number += 1
    if duplicate:  # a near-copy of the first frame: one duplicates group
        pixels, truth = synthetic_frame(seeds[0])
        write_frame(frames, number, pixels, truth)  # the same scene again
        number += 1
    if broken:  # a flat band at the bottom, as a half-decoded frame; no sidecar, so the studio reads its pixels
        pixels, _ = synthetic_frame(99)
        pixels[SIZE // 2:] = (128, 128, 128)
        write_frame(frames, number, pixels, sidecar=False)
    return project


class Studio:
    """control.studio.app.create_app served by werkzeug in a thread, as `deeplens-ctl studio` does."""

    def __init__(self, project):
        from werkzeug.serving import make_server
        from control.studio.app import create_app
        self.project = project
        self.app = create_app(project)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def api(self, method, path, **kwargs):
        response = requests.request(method, self.url + path, timeout=30, **kwargs)
        return response

    def manifest(self):
        """{frame name: [(class_id, left, top, width, height), ...]} of labels.manifest."""
        path = self.project / "labels.manifest"
        found = {}
        if not path.exists():
            return found
        for line in path.read_text().splitlines():
            if line.strip():
                doc = json.loads(line)
                name = doc["source-ref"].rsplit("/", 1)[-1]
                found[name] = [(a["class_id"], a["left"], a["top"], a["width"], a["height"])
                               for a in doc["labels"]["annotations"]]
        return found

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.app.extensions["studio"].runs.stop_all()


@pytest.fixture
def studio(tmp_path):
    server = Studio(make_project(tmp_path, broken=True))
    yield server
    server.close()


def wait_until(predicate, timeout=10.0, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}")


# -- driving the editor ----------------------------------------------------------------------------------
class Editor:
    """Mouse and keys on #editor-canvas in image pixels."""

    def __init__(self, page):
        self.page = page

    def geometry(self):
        box = self.page.locator("#editor-canvas").bounding_box()
        zoom = float(self.page.locator("#editor-canvas").get_attribute("data-zoom"))
        return box, zoom

    def at(self, x, y):
        box, zoom = self.geometry()
        return box["x"] + x * zoom, box["y"] + y * zoom

    def drag(self, start, end, steps=8):
        mouse = self.page.mouse
        mouse.move(*self.at(*start))
        mouse.down()
        mouse.move(*self.at(*end), steps=steps)
        mouse.up()

    def click(self, x, y):
        self.page.mouse.click(*self.at(x, y))

    def saved(self):
        self.page.wait_for_selector("#save-state[data-state=saved]", timeout=10000)

    def open(self, name):
        self.page.locator(f'#gallery .thumb[data-name="{name}"]').click()
        self.shown(name)

    def shown(self, name):
        """Wait until `name` is fully open: its labels and pixels on the canvas."""
        self.page.wait_for_selector(f'#editor-canvas[data-frame="{name}"]')


def open_label(page, studio):
    page.goto(studio.url + "/#label")
    page.wait_for_selector("#gallery .thumb")


def near(actual, expected, tolerance=1.01):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def test_page_loads_offline_with_every_view(page, studio):
    """Every asset comes from the studio itself; each tab shows its view."""
    outside = []
    page.on("request", lambda r: r.url.startswith((studio.url, "data:")) or outside.append(r.url))
    page.goto(studio.url + "/")
    for view in ("devices", "capture", "label", "train"):
        page.click(f"#tab-{view}")
        page.wait_for_selector(f"#view-{view}:not([hidden])")
        assert page.get_attribute(f"#tab-{view}", "aria-selected") == "true"
        assert page.locator(".view:not([hidden])").count() == 1
    assert not outside, f"the page fetched from elsewhere: {outside}"
    # every id the first comment of index.html lists (for other tests to drive) is on the page
    from control.studio.app import STATIC
    index = (STATIC / "index.html").read_text()
    listed = set(re.findall(r"#([a-z][a-z0-9-]+)", index.split("-->")[0]))
    present = set(re.findall(r'id="([^"]+)"', index))
    routes = {"devices", "capture", "label", "train"}
    dynamic = {i for script in STATIC.glob("*.js") for i in re.findall(r"'([a-z][a-z0-9-]+)'", script.read_text())}
    missing = listed - present - dynamic - routes
    assert not missing, f"ids listed in index.html's comment but absent from the page: {missing}"


def test_gallery_counts_filters_and_exclusion(page, studio):
    open_label(page, studio)
    page.wait_for_function("document.querySelector('#filter-all .count').textContent === '7'")
    assert page.text_content("#filter-unlabelled .count") == "7"
    assert page.text_content("#filter-problems .count") == "1"
    assert page.locator("#gallery .thumb").count() == 7
    assert page.locator("#gallery .thumb img[data-src]").count() == 7
    # the near-copy of frame 0 and frame 0 form one group
    page.click("#filter-duplicates")
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 2")
    names = page.eval_on_selector_all("#gallery .thumb", "els => els.map(e => e.dataset.name)")
    assert names == ["frame_000000.jpg", "frame_000005.jpg"]
    # the broken frame is a problem; "exclude invalid frames" moves it to excluded/
    page.click("#filter-problems")
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 1")
    assert page.get_attribute("#gallery .thumb", "data-name") == "frame_000006.jpg"
    assert page.text_content("#gallery .thumb .badge").startswith("!")
    screenshot(page, "studio-label-problems")
    page.click("#exclude-invalid")
    page.wait_for_selector("#label-message[data-kind=ok]")
    assert "frame_000006.jpg" in page.text_content("#label-message")
    assert (studio.project / "excluded" / "frame_000006.jpg").is_file()
    page.wait_for_function("document.querySelector('#count-excluded').textContent === '1'")
    page.wait_for_function("document.querySelector('#filter-all .count').textContent === '6'")
    # exclude one frame with its thumbnail's button
    page.click("#filter-all")
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 6")
    thumb = page.locator('#gallery .thumb[data-name="frame_000004.jpg"]')
    thumb.hover()
    thumb.locator(".thumb-exclude").click()
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 5")
    assert (studio.project / "excluded" / "frame_000004.jpg").is_file()
    page.wait_for_function("document.querySelector('#count-excluded').textContent === '2'")


def test_box_editor_with_mouse_and_keys(page, studio):
    open_label(page, studio)
    editor = Editor(page)
    editor.open("frame_000000.jpg")
    assert page.get_attribute("#editor-canvas", "data-boxes") == "0"
    page.click('#class-list .class-item[data-class-id="0"]')

    # draw: a drag on an empty area makes a box of the current class, saved at once
    editor.drag((20, 30), (60, 80))
    editor.saved()
    assert page.get_attribute("#editor-canvas", "data-boxes") == "1"
    labels = studio.manifest()["frame_000000.jpg"]
    assert len(labels) == 1 and labels[0][0] == 0
    assert near(labels[0][1:], (20, 30, 40, 50)), labels
    screenshot(page, "studio-label-editor")

    # move it by dragging its inside
    editor.drag((40, 55), (50, 60))
    editor.saved()
    wait_until(lambda: near(studio.manifest()["frame_000000.jpg"][0][1:], (30, 35, 40, 50)), message="the move saved")

    # resize it by its bottom-right corner handle (the box is still selected)
    editor.drag((70, 85), (90, 95))
    editor.saved()
    wait_until(lambda: near(studio.manifest()["frame_000000.jpg"][0][1:], (30, 35, 60, 60)), message="the resize saved")

    # a digit chooses the class and changes the selected box's class
    page.keyboard.press("2")
    editor.saved()
    wait_until(lambda: studio.manifest()["frame_000000.jpg"][0][0] == 1, message="class 1 saved")
    assert "current" in page.get_attribute('#class-list .class-item[data-class-id="1"]', "class")

    # Delete removes the selected box: the frame is now "no objects"
    editor.click(45, 45)
    page.keyboard.press("Delete")
    editor.saved()
    wait_until(lambda: studio.manifest()["frame_000000.jpg"] == [], message="the delete saved")
    assert page.get_attribute("#editor-canvas", "data-boxes") == "0"

    # Ctrl+Z brings it back, with its class
    page.keyboard.press("Control+z")
    editor.saved()
    wait_until(lambda: len(studio.manifest()["frame_000000.jpg"]) == 1, message="the undo saved")
    assert studio.manifest()["frame_000000.jpg"][0][0] == 1
    assert near(studio.manifest()["frame_000000.jpg"][0][1:], (30, 35, 60, 60))

    # Backspace removes too; a second box of the current class (1)
    editor.drag((100, 100), (140, 130))
    editor.saved()
    wait_until(lambda: len(studio.manifest()["frame_000000.jpg"]) == 2, message="a second box")
    assert studio.manifest()["frame_000000.jpg"][1][0] == 1
    page.keyboard.press("Backspace")
    editor.saved()
    wait_until(lambda: len(studio.manifest()["frame_000000.jpg"]) == 1, message="backspace saved")

    # undo walks back several steps: the second box, then the class change... up to the first draw
    for _ in range(7):
        page.keyboard.press("Control+z")
        editor.saved()
    wait_until(lambda: "frame_000000.jpg" not in studio.manifest(), message="undo back to unlabelled")
    assert page.get_attribute("#editor-state", "data-state") == "unlabelled"
    page.keyboard.press("Control+z")
    assert "nothing to undo" in page.text_content("#editor-message")

    # arrows: next and previous frame of the current filter
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('#editor-frame').textContent === 'frame_000001.jpg'")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('#editor-frame').textContent === 'frame_000002.jpg'")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("document.querySelector('#editor-frame').textContent === 'frame_000001.jpg'")
    assert page.url.endswith("#label/frame_000001.jpg")

    # "no objects here" saves an empty box list
    page.wait_for_selector("#box-list li")
    page.click("#no-objects")
    editor.saved()
    wait_until(lambda: studio.manifest().get("frame_000001.jpg") == [], message="no objects saved")
    assert page.get_attribute("#editor-state", "data-state") == "empty"
    thumb = page.locator('#gallery .thumb[data-name="frame_000001.jpg"]')
    assert thumb.get_attribute("data-state") == "empty"
    page.wait_for_function("document.querySelector('#filter-empty .count').textContent === '1'")

    # zoom: buttons and the wheel change the scale; fit comes back
    fit = float(page.get_attribute("#editor-canvas", "data-zoom"))
    page.click("#zoom-in")
    assert float(page.get_attribute("#editor-canvas", "data-zoom")) > fit
    page.mouse.move(*editor.at(80, 80))
    page.mouse.wheel(0, 300)
    page.click("#zoom-fit")
    assert float(page.get_attribute("#editor-canvas", "data-zoom")) == pytest.approx(fit)

    # a reload shows what was saved
    page.reload()
    page.wait_for_function("document.querySelector('#editor-frame').textContent === 'frame_000001.jpg'")
    page.wait_for_function("document.querySelector('#editor-state').dataset.state === 'empty'")


def test_moving_a_box_after_zoom_and_label_class_from_keys(page, studio):
    """Zoomed in, image pixels still map to the mouse; keys 1-9 pick the class of new boxes."""
    open_label(page, studio)
    editor = Editor(page)
    editor.open("frame_000002.jpg")
    page.click("#zoom-in")
    page.click("#zoom-out")
    page.keyboard.press("2")
    editor.drag((10, 10), (50, 40))
    editor.saved()
    wait_until(lambda: studio.manifest().get("frame_000002.jpg"), message="the box")
    cid, *box = studio.manifest()["frame_000002.jpg"][0]
    assert cid == 1 and near(box, (10, 10, 40, 30))
    assert page.locator("#box-list .box-row").count() == 1
    # the thumbnail's badge counts the boxes
    badge = page.locator('#gallery .thumb[data-name="frame_000002.jpg"] .badge')
    wait_until(lambda: badge.text_content() == "1", message="the thumbnail's badge")


def test_two_tabs_on_one_frame_first_save_wins(browser, studio):
    pages = []
    contexts = [browser.new_context(viewport={"width": 1280, "height": 860}) for _ in range(2)]
    errors = []
    try:
        for context in contexts:
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            open_label(page, studio)
            Editor(page).open("frame_000003.jpg")
            pages.append(page)
        first, second = pages
        Editor(first).drag((10, 10), (60, 60))
        Editor(first).saved()
        wait_until(lambda: studio.manifest().get("frame_000003.jpg"), message="the first save")
        # the second tab started from the unlabelled frame: its save is refused, it shows the first's labels
        Editor(second).drag((80, 80), (150, 150))
        second.wait_for_selector("#save-state[data-state=conflict]")
        message = second.text_content("#editor-message")
        assert "first save wins" in message and "another tab" in message
        assert second.get_attribute("#editor-message", "data-kind") == "conflict"
        assert second.get_attribute("#editor-canvas", "data-boxes") == "1"
        rows = second.eval_on_selector_all("#box-list .box-row .coords", "els => els.map(e => e.textContent)")
        assert rows == ["10, 10, 60, 60"] or near([float(v) for v in rows[0].split(",")], (10, 10, 60, 60)), rows
        labels = studio.manifest()["frame_000003.jpg"]
        assert len(labels) == 1 and near(labels[0][1:], (10, 10, 50, 50))
        screenshot(second, "studio-label-edited-elsewhere")
        # the person redoes the change on top: it now saves
        Editor(second).drag((80, 80), (150, 150))
        Editor(second).saved()
        wait_until(lambda: len(studio.manifest()["frame_000003.jpg"]) == 2, message="the redo on top")
    finally:
        for context in contexts:
            context.close()
    assert not errors, errors


def test_classes_import_and_suggestion_controls(page, studio, tmp_path):
    open_label(page, studio)
    page.fill("#class-new", "coin")
    page.click("#class-add")
    page.wait_for_selector('#class-list .class-item[data-class-id="2"]')
    assert json.loads((studio.project / "project.json").read_text())["classes"] == [*CLASSES, "coin"]
    # import a folder of pull frames: their truth becomes labels
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    for k, seed in enumerate((11, 12)):
        pixels, truth = synthetic_frame(seed)
        write_frame(folder, k, pixels, truth)
    page.fill("#import-path", str(folder))
    page.select_option("#import-format", "images")
    page.click("#import-start")
    page.wait_for_selector("#import-result[data-kind=ok]")
    assert page.text_content("#import-result").startswith("added 2 images")
    page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 9")
    # no model yet: nothing to suggest with
    Editor(page).open("frame_000000.jpg")
    assert page.locator("#accept-all").is_disabled() and page.locator("#reject-all").is_disabled()


# -- a real device ----------------------------------------------------------------------------------------
@pytest.fixture
def device(edge_service, dummy_model, tmp_path):
    """A device on a synthetic camera serving the dummy model, with a token."""
    return edge_service("--camera", "synthetic:0", "--frame-size", "640x360", "--broker", "none", "--token", "sesame",
                        "--artifacts", str(tmp_path / "artifacts"), "--model", str(dummy_model.folder))


def set_range(slider, value):
    """Move a range input as a person lets go of it: input events, then change."""
    slider.evaluate("(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input'));"
                    " el.dispatchEvent(new Event('change')); }", value)


def wait_text(page, selector, text, timeout=10000, start=True):
    """Wait until the element's text starts with (or, start=False, contains) `text`."""
    page.wait_for_function("([sel, text, start]) => { const t = document.querySelector(sel).textContent;"
                           " return start ? t.startsWith(text) : t.includes(text); }",
                           arg=[selector, text, start], timeout=timeout)


def restart(device):
    """Start a stopped device again; its /health may be slow to answer while the model loads."""
    try:
        device.start()
    except requests.Timeout:
        wait_until(lambda: _healthy(device), timeout=30, message="the device's /health")


def _healthy(device):
    try:
        return device.get("/health", timeout=2).ok
    except requests.RequestException:
        return False


def add_device(page, studio, url, token):
    page.goto(studio.url + "/#devices")
    page.fill("#device-url", url)
    page.fill("#device-token", token)
    page.click("#device-add")
    page.wait_for_selector("#device-panel:not([hidden])")


def test_devices_view_against_a_real_device(page, studio, device, packages):
    add_device(page, studio, device.url, "sesame")
    page.wait_for_function("document.querySelector('#device-model').textContent.startsWith('dummy')", timeout=20000)
    assert page.get_attribute("#device-live", "src").endswith("/stream")
    page.wait_for_function("document.querySelector('#device-fps').textContent !== '–'")
    page.wait_for_selector("#device-thresholds #threshold-default")
    # a per-class slider, applied on change, persisted on the device and shown after a reload
    sliders = page.locator("#device-thresholds .threshold-slider")
    assert sliders.count() == 2
    name = sliders.first.get_attribute("data-class")
    set_range(sliders.first, 0.73)
    page.wait_for_selector("#threshold-message[data-kind=ok]")
    assert device.get("/threshold").json()["per_class"][name] == pytest.approx(0.73)
    page.reload()
    page.wait_for_selector(f'.threshold-slider[data-class="{name}"]')
    page.wait_for_function(f"document.querySelector('.threshold-slider[data-class=\"{name}\"]').value === '0.73'")
    set_range(page.locator("#threshold-default"), 0.35)
    wait_text(page, "#threshold-message", "default 0.35", start=False)
    assert device.get("/threshold").json()["default"] == pytest.approx(0.35)
    # stored models: activate one (its health gate passes), another, then roll back to the first
    for key in ("a", "b"):
        response = device.session.post(device.url + "/models", data=tgz(packages[key]), timeout=60,
                                       headers={"Content-Type": "application/gzip"})
        assert response.status_code == 201, response.text
    page.wait_for_function("document.querySelectorAll('#device-models tr.model-row').length === 2", timeout=20000)
    for key in ("a", "b"):
        version = packages[key].version
        page.click(f'.model-activate[data-version="{version}"]')
        wait_text(page, "#models-message", f"activated {version[:12]}", timeout=30000)
        page.wait_for_selector(f'#device-models tr.model-row.active[data-version="{version}"]', timeout=20000)
        page.wait_for_selector("#device-health[data-result=ok]", timeout=30000)
        assert f"{packages[key].name} {version[:12]}" == page.text_content("#device-model")
    assert "passed" in page.text_content("#device-health")
    screenshot(page, "studio-devices")
    page.click("#device-rollback")
    wait_text(page, "#models-message", "rolled back to", timeout=30000)
    page.wait_for_selector(f'#device-models tr.model-row.active[data-version="{packages["a"].version}"]', timeout=20000)
    wait_text(page, "#device-health", "last rollback", timeout=20000, start=False)
    page.wait_for_selector("#device-health[data-result=ok]", timeout=30000)  # the rollback's health check passed
    # delete takes two clicks
    remove = page.locator(f'.model-delete[data-version="{packages["b"].version}"]')
    remove.click()
    assert remove.text_content() == "really delete?"
    remove.click()
    page.wait_for_function("document.querySelectorAll('#device-models tr.model-row').length === 1", timeout=20000)

    # the device goes away: a notice, polling goes on; it comes back: the notice clears
    device.stop()
    page.wait_for_selector("#device-notice[data-kind=unreachable]", timeout=20000)
    assert "not answering" in page.text_content("#device-notice")
    screenshot(page, "studio-devices-unreachable")
    restart(device)
    page.wait_for_selector("#device-notice", state="hidden", timeout=20000)
    page.wait_for_function("document.querySelector('#device-live').src.endsWith('/stream')")


def test_wrong_token_says_so(page, studio, device):
    add_device(page, studio, device.url, "not-the-token")
    # the device protects only changes on loopback: status answers, a threshold change is refused
    page.wait_for_selector("#threshold-default")
    set_range(page.locator("#threshold-default"), 0.5)
    page.wait_for_selector("#device-notice[data-kind=auth]")
    assert "token is wrong" in page.text_content("#device-notice")
    page.fill("#device-token-fix", "sesame")
    page.click("#device-token-save")
    set_range(page.locator("#threshold-default"), 0.5)
    page.wait_for_selector("#threshold-message[data-kind=ok]")


def test_capture_frames_from_a_device(page, studio, device):
    add_device(page, studio, device.url, "sesame")
    page.click("#tab-capture")
    page.fill("#capture-count", "3")
    assert page.text_content("#capture-start") == "capture 3 clean frames"
    page.click("#capture-start")
    page.wait_for_selector("#capture-progress[data-state=done]", timeout=60000)
    assert page.text_content("#capture-progress-text").startswith("3 / 3")
    assert "3 new frames" in page.text_content("#capture-message")
    screenshot(page, "studio-capture")
    page.click("#tab-label")
    page.wait_for_function("document.querySelector('#filter-all .count').textContent === '10'")


def test_train_evaluate_suggest_deploy_and_roll_back(page, studio, device, packages, tmp_path):
    """The rest of the round on the page: labelled frames in, a short run, its evaluation, its
    suggestions on a frame, deploy to the device and roll back."""
    folder = tmp_path / "labelled"
    folder.mkdir()
    for k, seed in enumerate(range(21, 31)):
        pixels, truth = synthetic_frame(seed)
        write_frame(folder, k, pixels, truth)
    # the device runs a stored version first, so that a rollback has somewhere to go
    stored = device.session.post(device.url + "/models", data=tgz(packages["a"]), timeout=60,
                                 headers={"Content-Type": "application/gzip"})
    assert stored.status_code == 201, stored.text
    assert device.session.post(device.url + f"/models/{packages['a'].version}/activate", timeout=60).ok
    add_device(page, studio, device.url, "sesame")
    page.click("#tab-label")
    page.fill("#import-path", str(folder))
    page.click("#import-start")
    page.wait_for_selector("#import-result[data-kind=ok]")

    page.click("#tab-train")
    assert page.input_value("#train-minutes") == "1" and page.input_value("#train-arch") == "mobilenet"
    page.fill("#train-name", "quick")
    page.fill("#train-minutes", "0.1")
    page.select_option("#train-arch", "tiny")
    page.select_option("#train-flip", "none")
    page.click("#train-start")
    page.wait_for_selector('#run-list .run-item[data-run="quick"]')
    page.wait_for_function("document.querySelector('#run-name').textContent === 'quick'")
    page.wait_for_selector("#run-state[data-state=running]")
    page.wait_for_function("Number(document.querySelector('#loss-chart').dataset.points) > 0", timeout=60000)
    screenshot(page, "studio-train-running")
    page.wait_for_selector("#run-state[data-state=done]", timeout=120000)
    page.wait_for_selector("#evaluation:not([hidden])", timeout=60000)
    assert page.locator("#eval-per-class tr").count() == 1 + len(CLASSES)
    assert page.locator("#eval-confusion tr").count() == 1 + len(CLASSES) + 1
    assert "Best F1" in page.text_content("#eval-best-threshold")
    page.wait_for_function("document.querySelector('#pr-image').naturalWidth > 0")
    assert page.get_attribute('#eval-summary .card[data-key="map50"]', "data-key") == "map50"
    screenshot(page, "studio-train-done")

    # the run's model suggests boxes: dashed proposals, accepted or rejected by a person
    page.click("#tab-label")
    page.wait_for_selector('#suggest-model option[value="run:quick"]', state="attached")
    page.select_option("#suggest-model", "run:quick")
    page.fill("#suggest-threshold", "0.01")
    editor = Editor(page)
    editor.open("frame_000001.jpg")
    page.click("#suggest")
    page.wait_for_function("document.querySelector('#suggest-message').textContent !== 'asking the model…'",
                           timeout=30000)
    proposals = page.locator("#proposal-list .proposal").count()
    assert proposals > 0, page.text_content("#suggest-message")
    assert "frame_000001.jpg" not in studio.manifest()   # nothing saved by itself
    screenshot(page, "studio-label-suggestions")
    page.locator("#proposal-list .proposal .proposal-accept").first.click()
    editor.saved()
    wait_until(lambda: len(studio.manifest().get("frame_000001.jpg", [])) == 1, message="the accepted proposal saved")
    assert page.locator("#proposal-list .proposal").count() == proposals - 1
    if proposals > 1:
        page.click("#reject-all")
        assert page.locator("#proposal-list .proposal").count() == 0
    assert len(studio.manifest()["frame_000001.jpg"]) == 1

    # deploy the run to the device: phases, then the new version, its health check and detections
    page.click("#tab-train")
    page.wait_for_function("document.querySelector('#run-name').textContent === 'quick'")
    page.wait_for_selector("#deploy:not([disabled])")
    page.click("#deploy")
    page.wait_for_selector("#deploy-progress[data-state=done], #deploy-progress[data-state=failed]", timeout=120000)
    screenshot(page, "studio-train-deployed")
    assert page.get_attribute("#deploy-progress", "data-state") == "done", page.text_content("#deploy-result")
    version = page.text_content("#deploy-version code")
    assert device.get("/models").json()["active"] == version
    assert page.get_attribute("#deploy-health", "data-result") == "ok"
    # and roll back
    wait_until(lambda: device.get("/status").json()["models"]["swap"]["state"] in ("idle", "confirmed"), timeout=30)
    page.click("#rollback")
    page.wait_for_selector("#rollback-result .health-line", timeout=60000)
    assert "rolled back" in page.text_content("#rollback-result")
    assert device.get("/models").json()["active"] == packages["a"].version
    screenshot(page, "studio-train-rolled-back")


# -- answers shaped by the test (page.route), the rest by the real studio -----------------------------------
def json_route(body, status=200):
    return lambda route: route.fulfill(status=status, content_type="application/json", body=json.dumps(body))


PROPOSALS = [{"class_id": 0, "label": CLASSES[0], "score": 0.91, "box": [10, 10, 50, 50]},
             {"class_id": 1, "label": CLASSES[1], "score": 0.82, "box": [80, 80, 120, 120]},
             {"class_id": 0, "label": CLASSES[0], "score": 0.55, "box": [100, 20, 140, 60]}]


def test_suggestions_stay_proposals_until_a_person_acts(page, studio):
    page.route("**/api/models", json_route([{"id": "run:fake", "name": "fake", "version": "abc123", "classes": CLASSES,
                                              "source": "training run fake"}]))
    asked = []

    def suggest(route):
        asked.append(json.loads(route.request.post_data))
        json_route({"model": "run:fake", "boxes": PROPOSALS})(route)
    page.route("**/api/frames/*/suggest", suggest)
    open_label(page, studio)
    editor = Editor(page)
    editor.open("frame_000002.jpg")
    page.fill("#suggest-threshold", "0.5")
    page.click("#suggest")
    page.wait_for_function("document.querySelectorAll('#proposal-list .proposal').length === 3")
    assert asked == [{"model": "run:fake", "threshold": 0.5}]
    assert page.get_attribute("#editor-canvas", "data-proposals") == "3"
    assert page.get_attribute("#editor-canvas", "data-boxes") == "0"
    assert "frame_000002.jpg" not in studio.manifest()

    # moving a proposal accepts it where it was put
    editor.drag((30, 30), (40, 35))
    editor.saved()
    wait_until(lambda: studio.manifest().get("frame_000002.jpg") == [(0, 20, 15, 40, 40)], message="the moved proposal")
    assert page.locator("#proposal-list .proposal").count() == 2
    # accept one with its button, reject the other
    page.locator('#proposal-list .proposal[data-index="0"] .proposal-accept').click()
    editor.saved()
    wait_until(lambda: len(studio.manifest()["frame_000002.jpg"]) == 2, message="the accepted proposal")
    assert studio.manifest()["frame_000002.jpg"][1] == (1, 80, 80, 40, 40)
    page.locator('#proposal-list .proposal[data-index="0"] .proposal-reject').click()
    assert page.locator("#proposal-list .proposal").count() == 0
    time.sleep(0.3)
    assert len(studio.manifest()["frame_000002.jpg"]) == 2

    # resizing a proposal by its corner accepts it too; a click on a proposal selects it only
    page.click("#suggest")
    page.wait_for_function("document.querySelectorAll('#proposal-list .proposal').length === 3")
    editor.click(120, 40)                      # selects the third proposal (inside it, not on a box)
    assert page.locator("#proposal-list .proposal.selected").count() == 1
    time.sleep(0.3)
    assert len(studio.manifest()["frame_000002.jpg"]) == 2
    editor.drag((140, 60), (150, 70))
    editor.saved()
    wait_until(lambda: (0, 100, 20, 50, 50) in studio.manifest()["frame_000002.jpg"], message="the resized proposal")
    # reject all, then accept all of a new suggestion
    page.click("#reject-all")
    assert page.locator("#proposal-list .proposal").count() == 0
    page.click("#suggest")
    page.wait_for_function("document.querySelectorAll('#proposal-list .proposal').length === 3")
    page.click("#accept-all")
    editor.saved()
    wait_until(lambda: len(studio.manifest()["frame_000002.jpg"]) == 6, message="accept all")

    # auto-suggest on open: proposals, still nothing saved
    page.check("#auto-suggest")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('#editor-frame').textContent === 'frame_000003.jpg'")
    page.wait_for_function("document.querySelectorAll('#proposal-list .proposal').length === 3")
    assert "frame_000003.jpg" not in studio.manifest()


GOOD, BAD = "a1b2c3d4e5f6", "3f9c0a51d2e7"
REASON = "NaN in the outputs on frame 4"


def status_doc(**models):
    """A device's /status (docs/rest-api.md) whose last model change failed its health check."""
    return {"device_id": "cam", "model": {"name": "notes", "version": GOOD, "classes": CLASSES}, "model_error": None,
            "models": {"active": GOOD, "swap": {"state": "rolled_back"}, **models},
            "threshold": {"default": 0.4, "per_class": {CLASSES[1]: 0.6}},
            "camera": {"source": "synthetic:0", "connected": True, "error": None, "fps": 15.0, "frames": 100,
                       "failures": 0},
            "fps": 14.7, "inference_ms": {"p50": 41.2, "p99": 55.0}, "frames_processed": 1000, "frames_dropped": 3,
            "mqtt": {"broker": "127.0.0.1:1883", "tls": False, "auth": False, "connected": True}}


def version_doc(version, bad=None):
    return {"version": version, "name": "notes", "classes": CLASSES, "bytes": 4211840, "bad": bad,
            "added": "2026-12-01T09:00:00Z"}


def test_device_health_gate_detections_and_token_messages(page, studio):
    url = f"http://127.0.0.1:{free_port()}"    # nothing listens there: the studio answers 502 when not routed
    failed = status_doc(
        last_swap={"kind": "activate", "from": GOOD, "to": BAD, "at": "2026-12-01T10:00:00Z", "warm_ms": 120,
                   "result": "rolled_back"},
        last_rollback={"from": BAD, "to": GOOD, "at": "2026-12-01T10:00:02Z", "reason": REASON, "automatic": True})
    detection = {"class_id": 1, "label": CLASSES[1], "score": 0.93, "box": [0.41, 0.28, 0.6, 0.74]}
    routes = {
        "status": json_route(failed),
        "detections": json_route({"ts": 1764584561.0, "seq": 1842, "model_version": GOOD, "inference_ms": 41.7,
                                  "detections": [detection]}),
        "threshold": json_route({"default": 0.4, "per_class": {CLASSES[1]: 0.6}}),
        "models": json_route({"active": GOOD, "trial": False, "previous": [], "rollback_to": None, "keep": 5,
                              "versions": [version_doc(GOOD),
                                           version_doc(BAD, {"reason": REASON, "at": "2026-12-01T10:00:02Z"})]})}
    for name, handler in routes.items():
        page.route(f"**/api/devices/*/{name}", handler)
    page.route("**/api/devices/*/stream", lambda route: route.fulfill(status=502, body="{}"))
    add_device(page, studio, url, "")
    page.wait_for_selector("#device-health[data-result=rolled_back]")
    health = page.text_content("#device-health")
    assert "failed" in health and REASON in health and "automatic" in health
    assert page.text_content("#device-model") == f"notes {GOOD}"
    assert page.text_content("#device-inference").startswith("41.2 ms")
    assert page.text_content("#device-dropped").startswith("3 of 1000")
    assert page.text_content("#device-mqtt").startswith("connected")
    page.wait_for_selector("#device-detections .detection")
    assert CLASSES[1] in page.text_content("#device-detections") and "0.93" in page.text_content("#device-detections")
    assert page.input_value(f'.threshold-slider[data-class="{CLASSES[1]}"]') == "0.6"
    assert page.input_value(f'.threshold-slider[data-class="{CLASSES[0]}"]') == "0.4"   # inherits the default
    assert page.locator("#device-models tr.model-row.bad").count() == 1
    assert page.locator("#device-rollback").is_disabled()        # no rollback target
    screenshot(page, "studio-devices-rolled-back")
    # a wrong token
    page.unroute("**/api/devices/*/status")
    refused = {"error": {"code": "unauthorized", "message": "wrong token"}}
    page.route("**/api/devices/*/status", json_route(refused, 401))
    page.wait_for_selector("#device-notice[data-kind=auth]")
    assert "the token is wrong" in page.text_content("#device-notice")
    assert page.locator("#device-token-fix").is_visible()
    # the device's own answer from the studio: nothing listens there, 502 device_unreachable
    page.unroute("**/api/devices/*/status")
    page.wait_for_selector("#device-notice[data-kind=unreachable]", timeout=20000)
    assert page.text_content("#device-notice-text") == "device not answering — reconnecting…"
    # it answers again: the notice clears and the live view restarts
    page.route("**/api/devices/*/status", routes["status"])
    page.wait_for_selector("#device-notice", state="hidden")
    page.wait_for_function("document.querySelector('#device-live').src.endsWith('/stream')")


def test_a_thousand_frames_page_fast_and_load_lazily(page, tmp_path):
    project = make_project(tmp_path, seeds=(1,), duplicate=False)
    frames = project / "frames"
    source = frames / "frame_000000.jpg"
    meta = json.loads((frames / "frame_000000.json").read_text())
    for number in range(1, 1000):
        name = f"frame_{number:06d}"
        (frames / f"{name}.jpg").write_bytes(source.read_bytes())
        (frames / f"{name}.json").write_text(json.dumps({**meta, "file": f"{name}.jpg", "seq": number}))
    server = Studio(project)
    try:
        thumbs = []
        page.on("request", lambda r: thumbs.append(r.url) if r.url.endswith("/thumb") else None)
        started = time.monotonic()
        page.goto(server.url + "/#label")
        page.wait_for_function("document.querySelectorAll('#gallery .thumb').length === 200")
        took = time.monotonic() - started
        assert took < 5, f"the first page of thumbnails took {took:.1f}s"
        assert page.text_content("#filter-all .count") == "1000"
        page.wait_for_timeout(500)
        assert 0 < len(thumbs) < 120, f"{len(thumbs)} thumbnails fetched for one screen"
        page.click("#gallery-next")
        page.wait_for_function("document.querySelector('#gallery-page').textContent === '201–400'")
        assert page.get_attribute("#gallery .thumb", "data-name") == "frame_000200.jpg"
        # the last frame of a page leads on to the next page's first
        Editor(page).open("frame_000399.jpg")
        page.keyboard.press("ArrowRight")
        page.wait_for_function("document.querySelector('#editor-frame').textContent === 'frame_000400.jpg'")
        assert page.text_content("#gallery-page") == "401–600"
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("document.querySelector('#editor-frame').textContent === 'frame_000399.jpg'")
        screenshot(page, "studio-label-thousand")
    finally:
        server.close()


def test_a_run_stopped_from_the_page_still_exports_and_evaluates(page, studio, tmp_path):
    folder = tmp_path / "labelled"
    folder.mkdir()
    for k, seed in enumerate(range(41, 47)):
        pixels, truth = synthetic_frame(seed)
        write_frame(folder, k, pixels, truth)
    assert studio.api("POST", "/api/import", json={"path": str(folder), "format": "images"}).ok
    page.goto(studio.url + "/#train")
    page.fill("#train-name", "long")
    page.fill("#train-minutes", "5")
    page.select_option("#train-arch", "tiny")
    page.click("#train-start")
    page.wait_for_selector("#run-state[data-state=running]")
    page.wait_for_function("Number(document.querySelector('#loss-chart').dataset.points) >= 2", timeout=60000)
    page.click("#run-stop")
    page.wait_for_selector("#run-state[data-state=stopped]", timeout=60000)
    page.wait_for_selector("#evaluation:not([hidden])", timeout=60000)
    assert page.locator("#run-stop").is_hidden()
    assert "long" in page.text_content("#run-package")
    # a finished run can start the next one
    page.wait_for_selector('#train-init option[value="long"]', state="attached")
