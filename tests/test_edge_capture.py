"""GET /capture: a clean, raw camera frame for training — never one with boxes, never a broken one."""
import io
import json
import zipfile
from email.parser import BytesParser

import cv2
import numpy as np
import pytest

from edge.capture import map_truth, shape

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
