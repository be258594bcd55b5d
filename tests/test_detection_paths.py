"""One detection path: the edge loop, `predict`, `evaluate`, the trainer's validation and the
awscam shim give the same boxes for the same frame (docs/model-package.md, "Detection").

Frames come from the synthetic camera, at the DeepLens 1920x1080 and at 300x300; the model is
the session's small trained package (96x96 input), so every frame is resized and, at 16:9,
cropped by the `center` policy or squeezed whole by `stretch`.
"""
import dataclasses
import json
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import awscam
from control.cli import main as ctl
from control.train.data import Sample
from control.train.inference import frame_rows
from control.train.trainer import Trainer
from core.detector import Detector
from edge.config import load
from edge.runtime import Runtime
from shims.camera import SyntheticCamera

TOLERANCE = 2e-3  # scores are published to 4 decimals and boxes to 5; the paths differ by float noise only
FRAMES = {"1920x1080": (1920, 1080), "300x300": (300, 300)}


def rows_of(detections):
    """(N, 6) rows [class_id, score, xmin, ymin, xmax, ymax] from published detections."""
    return np.array([[d["class_id"], d["score"], *d["box"]] for d in detections], np.float64).reshape(-1, 6)


def assert_same(rows, expected, path):
    """The same detections, in any order (near-equal scores may swap places)."""
    assert len(rows) == len(expected), f"{path}: {len(rows)} detections, the edge loop has {len(expected)}"
    for row in rows:
        nearest = np.abs(expected - row).max(axis=1).min()
        assert nearest <= TOLERANCE, f"{path}: {row.round(4).tolist()} is not among the edge loop's detections"


@pytest.fixture(scope="module", params=sorted(FRAMES))
def frame(request, tmp_path_factory):
    """A synthetic camera frame as a PNG (lossless: every path reads the same pixels)."""
    folder = tmp_path_factory.mktemp(f"frame-{request.param}")
    image, _ = SyntheticCamera(seed=5, size=FRAMES[request.param], objects=3).render(40)
    cv2.imwrite(str(folder / "frame.png"), image)
    return folder / "frame.png", image


def edge_loop(package, frame_path, crop, tmp_path):
    """Detections of the edge service's own loop (in-process, camera: the frame's folder)."""
    config = load(env={}, overrides={
        "camera": f"folder:{frame_path.parent}", "model": str(package.folder), "crop": crop, "broker": "none",
        "threshold": 0.0, "artifacts": str(tmp_path / "artifacts"), "state_dir": str(tmp_path / "state")})
    runtime = Runtime(config).start()
    try:
        deadline = time.monotonic() + 30
        while runtime.loop.frames_processed < 2:
            assert time.monotonic() < deadline, "the loop processed no frame"
            time.sleep(0.05)
        return rows_of(runtime.loop.latest.detections)
    finally:
        runtime.stop()


def predict(package, frame_path, crop):
    result = CliRunner().invoke(ctl, ["predict", str(package.folder), str(frame_path), "--threshold", "0",
                                      "--crop", crop])
    assert result.exit_code == 0, result.output
    return rows_of(json.loads(result.output)["detections"])


def evaluate(package, image, crop):
    """The rows `evaluate` scores a frame with, normalised back."""
    rows = frame_rows(Detector.open(package.folder, crop=crop), image)
    height, width = image.shape[:2]
    return rows / (1, 1, width, height, width, height)


def validation(trained, frame_path, crop, tmp_path):
    """The trainer's validation predictions, from a trainer holding the trained weights."""
    trainer, package, _ = trained
    config = dataclasses.replace(trainer.config, crop=crop)
    samples = [Sample(frame_path, np.zeros((0, 5), np.float32))]
    fresh = Trainer(config, samples, samples, package.classes, tmp_path / "run")
    fresh.net.load_parameters(str(trainer.weights / "best.params"))
    height, width = fresh.val_data.images[0].shape[:2]
    return fresh.predict_val()[0] / (1, 1, width, height, width, height)


def deeplens_lambda(package, image):
    """What a DeepLens Lambda gets: awscam's parseResult, in pixels of the model input."""
    model = awscam.Model(str(package.folder), {"GPU": 1})
    parsed = model.parseResult("ssd", model.doInference(image))["ssd"]
    return np.array([[d["label"], d["prob"], d["xmin"] / package.width, d["ymin"] / package.height,
                      d["xmax"] / package.width, d["ymax"] / package.height] for d in parsed]).reshape(-1, 6)


@pytest.mark.parametrize("crop", ["center", "stretch"])
def test_every_path_finds_the_same_boxes(trained, frame, crop, tmp_path):
    _, package, _ = trained
    frame_path, image = frame
    expected = edge_loop(package, frame_path, crop, tmp_path)
    assert len(expected), "the model found nothing: the comparison would prove nothing"
    assert_same(predict(package, frame_path, crop), expected, "predict")
    assert_same(evaluate(package, image, crop), expected, "evaluate")
    assert_same(validation(trained, frame_path, crop, tmp_path), expected, "trainer validation")
    if crop == "stretch" or image.shape[0] == image.shape[1]:  # awscam resizes the whole frame, as Lambdas do
        assert_same(deeplens_lambda(package, image), expected, "awscam")


def test_the_crop_policy_changes_what_a_wide_frame_shows(trained, tmp_path):
    """On a 16:9 frame `center` and `stretch` differ, so the test above compares two behaviours."""
    _, package, _ = trained
    image, _ = SyntheticCamera(seed=5, size=(1920, 1080), objects=3).render(40)
    center, stretch = evaluate(package, image, "center"), evaluate(package, image, "stretch")
    assert len(center) != len(stretch) or np.abs(center - stretch).max() > 0.01
    assert center[:, (2, 4)].min() >= (1920 - 1080) / 2 / 1920 - 1e-6  # centre crop: nothing left of the square
