"""GET /capture: a clean, raw camera frame for training — never one with boxes, never a broken one."""
import concurrent.futures
import io
import json
import threading
import time
import zipfile
from email.parser import BytesParser

import cv2
import numpy as np
import pytest
import requests

import edge.capture
from edge import config as config_mod
from edge.capture import CleanFrames, NoCleanFrame, map_truth, shape
from edge.errors import ConfigError
from shims.camera import Frame

SMALL = ("--frame-size", "640x360", "--broker", "none")


def decode(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def bottom_is_flat(image, rows=8):
    """Independent check for the half-decoded-frame artefact: the last rows are one flat colour."""
    return float(image[-rows:].reshape(-1, 3).std(axis=0).max()) < 1.0


@pytest.fixture
def service(edge_service, dummy_model):
    return edge_service(*SMALL, "--model", str(dummy_model.folder), "--threshold", "0.0")


def test_capture_gives_a_jpeg_with_its_frame_metadata(service):
    response = service.get("/capture")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    image = decode(response.content)
    assert image.shape == (360, 640, 3)
    assert int(response.headers["X-Frame-Seq"]) >= 0
    assert float(response.headers["X-Frame-Timestamp"]) > 1.7e9
    assert (response.headers["X-Frame-Width"], response.headers["X-Frame-Height"]) == ("640", "360")


def test_capture_is_the_raw_frame_not_the_annotated_view(edge_service, dummy_model, tmp_path):
    """With threshold 0 the live view is covered in boxes; /capture returns the camera's pixels untouched."""
    folder = tmp_path / "stills"
    folder.mkdir()
    still = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "still.png"), still)
    service = edge_service("--camera", f"folder:{folder}", "--broker", "none",
                           "--model", str(dummy_model.folder), "--threshold", "0.0")
    service.wait_status(lambda s: s["frames_processed"] > 2)
    raw = decode(service.get("/capture", params={"format": "png"}).content)
    assert np.array_equal(raw, still)
    view = decode(service.get("/frame.jpg", params={"size": 0}).content)
    boxes_drawn = (np.abs(view.astype(int) - still).max(axis=2) >= 100).sum()
    assert boxes_drawn > 1000


def test_png_square_crop_and_resize(service):
    response = service.get("/capture", params={"format": "png", "crop": "square", "size": 300})
    assert response.headers["Content-Type"] == "image/png"
    assert decode(response.content).shape == (300, 300, 3)


def test_burst_as_multipart_has_distinct_frames_in_order(service):
    response = service.get("/capture", params={"count": 3, "interval_ms": 50, "crop": "square", "size": 100})
    assert response.headers["Content-Type"].startswith("multipart/mixed")
    message = BytesParser().parsebytes(b"Content-Type: " + response.headers["Content-Type"].encode() + b"\r\n\r\n"
                                       + response.content)
    parts = message.get_payload()
    seqs = [int(p["X-Frame-Seq"]) for p in parts]
    assert len(parts) == 3 and seqs == sorted(set(seqs))
    assert all(decode(p.get_payload(decode=True)).shape == (100, 100, 3) for p in parts)


def test_burst_as_zip_has_an_index(service):
    response = service.get("/capture", params={"count": 2, "pack": "zip", "format": "png"})
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    index = json.loads(archive.read("index.json"))
    assert [entry["file"] for entry in index] == sorted(n for n in archive.namelist() if n != "index.json")
    assert all(entry["file"].endswith(".png") and int(entry["seq"]) >= 0 for entry in index)


@pytest.mark.parametrize("params, field", [
    ({"fromat": "png"}, "fromat"),
    ({"format": "gif"}, "format"),
    ({"size": "-3"}, "size"),
    ({"size": "big"}, "size"),
    ({"count": "1000"}, "count"),
    ({"crop": "circle"}, "crop"),
])
def test_bad_options_are_refused_naming_the_field(service, params, field):
    response = service.get("/capture", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field and field in error["message"]


def test_broken_frames_are_never_returned(edge_service):
    """Half the frames are half-decoded (flat band), a fifth black, some frozen: /capture skips them all."""
    service = edge_service(*SMALL, "--camera", "synthetic:3?faults=band:0.5,black:0.2,freeze:0.1")
    for _ in range(25):
        response = service.get("/capture", params={"format": "png"})
        assert response.status_code == 200, response.text
        image = decode(response.content)
        assert not bottom_is_flat(image)
        assert image.mean() > 20


def test_no_clean_frame_answers_503_with_the_reasons(edge_service):
    service = edge_service(*SMALL, "--camera", "synthetic?faults=band:1.0", "--capture-deadline", "0.5")
    response = service.get("/capture")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "no_clean_frame" and "band" in error["message"]


def test_true_boxes_follow_the_crop_and_resize():
    image = np.zeros((100, 200, 3), np.uint8)
    shaped, mapping = shape(image, "square", 50)
    assert shaped.shape == (50, 50, 3) and mapping == (50, 0, 0.5, 0.5)
    truth = [{"class_id": 0, "label": "note_2000", "box": [60, 10, 100, 50]},
             {"class_id": 1, "label": "note_1000", "box": [0, 0, 60, 40]}]  # three quarters outside the square
    assert map_truth(truth, mapping, 50, 50) == [{"class_id": 0, "label": "note_2000", "box": [5.0, 5.0, 25.0, 25.0]}]


def test_a_synthetic_camera_sends_its_true_boxes(service):
    response = service.get("/capture", params={"crop": "square", "size": 300})
    truth = json.loads(response.headers["X-Frame-Truth"])
    assert all(0 <= v <= 300 for obj in truth for v in obj["box"])
    assert {obj["label"] for obj in truth} <= {"note_2000", "note_1000"}


def test_a_burst_over_the_memory_budget_is_refused_before_any_work(edge_service):
    service = edge_service("--frame-size", "1920x1080", "--broker", "none")
    service.wait_status(lambda s: s["camera"]["frames"] > 0)
    start = time.monotonic()  # 100 PNG frames of 1920x1080 could come to 593 MB, over the default 256
    response = service.get("/capture", params={"count": 100, "format": "png"}, timeout=5)
    assert response.status_code == 413 and time.monotonic() - start < 2
    error = response.json()["error"]
    assert error["code"] == "over_capture_budget" and error["field"] == "count"
    assert "capture_budget_mb" in error["message"] and "256" in error["message"]
    assert service.get("/capture", params={"count": 2, "format": "png"}, timeout=30).status_code == 200


def test_frames_are_never_enlarged(service):
    """A size above the frame's own is the frame as it is: enlarging adds memory, not detail."""
    response = service.get("/capture", params={"size": 4096})
    assert response.status_code == 200 and (response.headers["X-Frame-Width"], response.headers["X-Frame-Height"]) \
        == ("640", "360")


def test_the_budget_is_a_setting(edge_service):
    service = edge_service(*SMALL, "--capture-budget-mb", "1")
    response = service.get("/capture", params={"count": 2, "format": "png"})  # 2 x 640x360x3 > 1 MB
    assert response.status_code == 413 and "capture_budget_mb (1 MB)" in response.json()["error"]["message"]
    assert service.get("/capture", params={"count": 2, "size": 100}).status_code == 200


def test_a_burst_is_sent_frame_by_frame(service):
    """The first frame of a slow burst arrives before the last is taken, not with it."""
    start = time.monotonic()
    with service.get("/capture", params={"count": 3, "interval_ms": 1500, "size": 100}, stream=True) as response:
        assert response.status_code == 200
        pieces = response.iter_content(256)
        first = next(pieces)
        first_at = time.monotonic() - start
        rest = first + b"".join(pieces)
    assert first_at < 1.5 and time.monotonic() - start >= 3.0
    message = BytesParser().parsebytes(b"Content-Type: " + response.headers["Content-Type"].encode()
                                       + b"\r\n\r\n" + rest)
    assert len(message.get_payload()) == 3


@pytest.mark.parametrize("pack", ["multipart", "zip"])
def test_a_burst_that_loses_its_camera_ends_with_the_error(pack, monkeypatch):
    """The first frame decides the status; a later frame that cannot be had ends the burst with
    the error as its last part (multipart) or error.json (zip)."""
    from edge.capture import CleanFrames, NoCleanFrame
    from test_live_view import InProcess

    real, calls = CleanFrames.grab, []

    def failing_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise NoCleanFrame(2.0, {"black": 3})
        return real(*args, **kwargs)

    monkeypatch.setattr(CleanFrames, "grab", failing_second)
    service = InProcess()
    try:
        response = requests.get(service.url + "/capture", params={"count": 3, "pack": pack}, timeout=10)
    finally:
        service.stop()
    assert response.status_code == 200
    if pack == "zip":
        archive = zipfile.ZipFile(io.BytesIO(response.content))
        assert len(json.loads(archive.read("index.json"))) == 1
        assert json.loads(archive.read("error.json"))["error"]["code"] == "no_clean_frame"
    else:
        message = BytesParser().parsebytes(b"Content-Type: " + response.headers["Content-Type"].encode()
                                           + b"\r\n\r\n" + response.content)
        parts = message.get_payload()
        assert [p.get_content_type() for p in parts] == ["image/jpeg", "application/json"]
        assert json.loads(parts[1].get_payload())["error"]["code"] == "no_clean_frame"


# -- the work shared by requests at once, and frames fresh enough to serve at once -----------------

class ScriptedCamera:
    """FrameGrabber's reading side over frames a test lays out: `published` so far (the last is the
    latest), `coming` handed out one per wait_next; `waits` counts the waits for a next frame."""

    def __init__(self, published, coming=()):
        self.published, self.coming, self.waits = list(published), list(coming), 0

    def latest(self):
        return self.published[-1] if self.published else None

    def before(self, frame):
        return next((f for f in self.published if f.seq == frame.seq - 1), None)

    def wait_next(self, after_seq=-1, timeout=None):
        self.waits += 1
        while self.coming:
            self.published.append(self.coming.pop(0))
            if self.published[-1].seq > after_seq:
                return self.published[-1]
        time.sleep(min(timeout or 0.01, 0.01))
        return None


def frame(seq, age=0.0, image=None):
    """A Frame taken `age` seconds ago; its own noise unless `image` is given."""
    if image is None:
        image = np.random.default_rng(seq).integers(30, 255, (90, 160, 3), dtype=np.uint8)
    return Frame(seq, time.time() - age, image)


def test_a_fresh_latest_frame_is_served_at_once():
    camera = ScriptedCamera([frame(0), frame(1, age=0.01)], [frame(2)])
    assert CleanFrames(camera, 1.0, fresh_s=0.05).grab().seq == 1 and camera.waits == 0


@pytest.mark.parametrize("fresh_s, age", [(0.0, 0.0), (0.05, 0.2)])
def test_with_fresh_s_0_or_a_stale_latest_frame_the_next_is_waited_for(fresh_s, age):
    camera = ScriptedCamera([frame(0), frame(1, age=age)], [frame(2)])
    assert CleanFrames(camera, 1.0, fresh_s=fresh_s).grab().seq == 2 and camera.waits == 1


def test_a_fresh_latest_frame_that_is_broken_or_frozen_is_not_served():
    black = ScriptedCamera([frame(0), frame(1, image=np.zeros((90, 160, 3), np.uint8))], [frame(2)])
    assert CleanFrames(black, 1.0, fresh_s=0.05).grab().seq == 2
    frozen = ScriptedCamera([frame(0), frame(1, image=frame(0).image)], [frame(2)])
    assert CleanFrames(frozen, 1.0, fresh_s=0.05).grab().seq == 2
    with pytest.raises(NoCleanFrame, match="frozen: 1"):
        CleanFrames(ScriptedCamera([frame(0), frame(1, image=frame(0).image)]), 0.1, fresh_s=0.05).grab()


def test_a_burst_frame_is_newer_than_the_one_before_however_fresh_the_latest():
    camera = ScriptedCamera([frame(0), frame(1)], [frame(2)])
    assert CleanFrames(camera, 1.0, fresh_s=0.05).grab(after=1).seq == 2


def test_eight_requests_at_once_cost_one_check_and_one_encode(monkeypatch):
    checks, encodes = [], []
    real_check, real_encode = edge.capture.check_frame, cv2.imencode
    monkeypatch.setattr(edge.capture, "check_frame", lambda *args: checks.append(1) or real_check(*args))
    monkeypatch.setattr(cv2, "imencode", lambda *args: encodes.append(1) or real_encode(*args))
    frames = CleanFrames(ScriptedCamera([frame(0), frame(1, age=0.01)]), 1.0, fresh_s=0.05)
    start, shots = threading.Barrier(8), []

    def request():
        start.wait()
        shots.append(frames.shot(frames.grab(), "square", 50, "jpeg"))

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(shots) == 8 and len({shot.data for shot in shots}) == 1
    assert (len(checks), len(encodes)) == (1, 1)


def test_concurrent_captures_share_one_encode_per_frame(monkeypatch):
    from test_live_view import InProcess
    encodes, lock = [], threading.Lock()
    real = cv2.imencode

    def counting(*args):
        with lock:
            encodes.append(1)
        return real(*args)

    monkeypatch.setattr(cv2, "imencode", counting)
    service = InProcess()
    try:
        def request(_):
            response = requests.get(service.url + "/capture", params={"crop": "square", "size": 100}, timeout=10)
            assert response.status_code == 200
            return response.headers["X-Frame-Seq"]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            seqs = list(pool.map(request, range(8)))
    finally:
        service.stop()
    assert len(encodes) == len(set(seqs))


@pytest.mark.parametrize("value", ["-0.1", "1.5", "soon"])
def test_capture_fresh_s_is_checked(value):
    with pytest.raises(ConfigError, match="capture_fresh_s"):
        config_mod.load(env={"DEEPLENS_CAPTURE_FRESH_S": value})
    assert config_mod.load(env={}).capture_fresh_s == 0.05
    assert config_mod.load(env={"DEEPLENS_CAPTURE_FRESH_S": "0"}).capture_fresh_s == 0.0
