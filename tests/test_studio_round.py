"""The whole round in the studio, as a person plays it in a real browser, against a real device
(`deeplens-edge serve` on the synthetic camera, a real mosquitto): capture 30 frames, draw boxes on
three with the mouse, label the others by accepting the device model's suggestions, train a tiny
model for half a minute, deploy it, see its version on the devices view, move a threshold slider,
roll back. Each view's screenshot is kept in build/test-artefacts/studio-round-*.png."""
import json

from browser import screenshot
from core.client import DeviceClient
from core.devices import Device
from core.package import load_package
from edge import demo
from test_models_api import tgz, upload
from test_studio_page import Editor, Studio, set_range, wait_until

TOKEN = "round-token"
DEMO = load_package(demo.SHIPPED_MODEL)  # knows the synthetic notes: its suggestions are worth accepting
CLASSES = ["note_2000", "note_1000"]
FRAMES, DRAWN = 30, 3
MINUTE = 60_000


def test_the_whole_round_in_the_browser(page, tmp_path, edge_service, mosquitto):
    device = edge_service("--camera", "synthetic:3", "--frame-size", "640x360", "--token", TOKEN,
                          "--broker", mosquitto.address, "--artifacts", str(tmp_path / "artifacts"))
    client = DeviceClient(Device("round", device.url, TOKEN))
    assert upload(device, tgz(DEMO), token=TOKEN).status_code == 201
    client.activate(DEMO.version)   # the model on the device before the round
    wait_until(lambda: client.status()["models"]["swap"]["state"] in ("confirmed", "idle"), 60, "the demo model")
    studio = Studio(tmp_path / "project")
    try:
        play_the_round(page, studio, device, client)
    finally:
        studio.close()


def play_the_round(page, studio, device, client):
    # Devices: add the device with its token; its status shows the model it runs.
    page.goto(studio.url + "/#devices")
    page.fill("#device-url", device.url)
    page.fill("#device-token", TOKEN)
    page.click("#device-add")
    page.wait_for_selector(f"#device-model:has-text('{DEMO.version[:8]}')", timeout=30_000)
    device_id = page.get_attribute(".device-item.selected", "data-device")
    screenshot(page, "studio-round-1-devices")

    # Capture: 30 clean frames into the project, with progress.
    page.click("#tab-capture")
    page.select_option("#capture-device", device_id)
    page.fill("#capture-count", str(FRAMES))
    page.click("#capture-start")
    page.wait_for_selector("#capture-progress:is([data-state=done], [data-state=failed])", timeout=3 * MINUTE)
    assert page.get_attribute("#capture-progress", "data-state") == "done", page.text_content("#capture-message")
    assert page.text_content("#capture-progress-text").startswith(f"{FRAMES} / {FRAMES}")
    frames = sorted((studio.project / "frames").glob("frame_*.jpg"))
    assert len(frames) == FRAMES
    screenshot(page, "studio-round-2-capture")

    # Label: the classes, then three frames drawn with the mouse where the synthetic camera says the notes are.
    page.click("#tab-label")
    for name in CLASSES:
        page.fill("#class-new", name)
        page.click("#class-add")
        page.wait_for_selector(f".class-item:has-text('{name}')")
    page.click("#filter-all")
    editor = Editor(page)
    drawn = {}
    for image in frames[:DRAWN]:
        editor.open(image.name)
        truth = json.loads(image.with_suffix(".json").read_text())["truth"]
        for note in truth:
            page.keyboard.press(str(CLASSES.index(note["label"]) + 1))   # the class, from the keyboard
            x0, y0, x1, y1 = note["box"]
            editor.drag((x0, y0), (x1, y1))
            editor.saved()
        drawn[image.name] = truth
    screenshot(page, "studio-round-3-label-drawn")

    # ... and the rest from the device model's suggestions, accepted frame by frame (→ for the next).
    page.select_option("#suggest-model", f"device:{device_id}")
    editor.open(frames[DRAWN].name)
    for image in frames[DRAWN:]:
        editor.shown(image.name)
        page.click("#suggest")
        page.wait_for_function("() => /proposal|^no suggestions/.test(document.querySelector('#suggest-message')"
                               ".textContent)", timeout=30_000)   # the model's answer, not 'asking the model…'
        assert not page.text_content("#suggest-message").startswith("no suggestions")
        if int(page.get_attribute("#editor-canvas", "data-proposals") or 0):
            page.click("#accept-all")
        else:
            page.click("#no-objects")
        editor.saved()
        if image is frames[DRAWN]:
            screenshot(page, "studio-round-4-label-suggestions")
        page.keyboard.press("ArrowRight")

    labels = studio.manifest()
    assert len(labels) == FRAMES, "every captured frame is labelled"
    for name, truth in drawn.items():
        boxes = sorted(labels[name])
        expected = sorted((CLASSES.index(n["label"]), n["box"][0], n["box"][1], n["box"][2] - n["box"][0],
                           n["box"][3] - n["box"][1]) for n in truth)
        assert len(boxes) == len(expected)
        for got, want in zip(boxes, expected):
            assert got[0] == want[0] and all(abs(g - w) <= 2 for g, w in zip(got[1:], want[1:])), (name, got, want)
    suggested = sum(len(labels[image.name]) for image in frames[DRAWN:])
    true_notes = sum(len(json.loads(image.with_suffix(".json").read_text())["truth"]) for image in frames[DRAWN:])
    assert suggested >= true_notes / 2, f"the suggestions brought {suggested} boxes for {true_notes} notes"

    # Train: a tiny model for half a minute, with live curves; then its evaluation.
    page.click("#tab-train")
    page.fill("#train-name", "round")
    page.fill("#train-minutes", "0.5")
    page.select_option("#train-arch", "tiny")
    page.fill("#train-size", str(DEMO.width))   # the device takes models of its active model's input size
    page.click("#train-start")
    page.wait_for_selector("#run-state[data-state=running]", timeout=30_000)
    screenshot(page, "studio-round-5-training")
    page.wait_for_selector("#run-state:is([data-state=done], [data-state=failed])", timeout=4 * MINUTE)
    assert page.get_attribute("#run-state", "data-state") == "done", page.text_content("#run-reason")
    page.wait_for_selector("#eval-per-class tr")
    version = studio.api("GET", "/api/runs/round").json()["package"]["version"]
    screenshot(page, "studio-round-6-trained")

    # Deploy: upload, health gate, first detections of the new version.
    page.select_option("#deploy-device", device_id)
    page.click("#deploy")
    page.wait_for_selector("#deploy-progress:is([data-state=done], [data-state=failed])", timeout=2 * MINUTE)
    assert page.get_attribute("#deploy-progress", "data-state") == "done", page.text_content("#deploy-result")
    assert version in page.text_content("#deploy-version")
    assert page.get_attribute("#deploy-health", "data-result") == "ok"
    assert client.models()["active"] == version
    screenshot(page, "studio-round-7-deployed")

    # The devices view shows the new version; a threshold slider changes the device's threshold.
    page.click("#tab-devices")
    page.wait_for_selector(f"#device-model:has-text('{version[:8]}')", timeout=30_000)
    slider = page.locator('.threshold-slider[data-class="note_1000"]')
    slider.wait_for()
    set_range(slider, 0.65)
    wait_until(lambda: device.get("/threshold").json()["per_class"].get("note_1000") == 0.65, 10,
               "the slider's threshold on the device")
    screenshot(page, "studio-round-8-threshold")

    # Roll back: the device runs the demo model again.
    page.click("#device-rollback")
    wait_until(lambda: client.models()["active"] == DEMO.version, 60, "the rollback")
    page.wait_for_selector(f"#device-model:has-text('{DEMO.version[:8]}')", timeout=30_000)
    screenshot(page, "studio-round-9-rolled-back")
