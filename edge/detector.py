"""The detector the inference loop runs: a model package bound to the runtime, frame in, boxes out.

Frames are centre-cropped to the model's aspect ratio before the resize (as the DeepLens
capture path crops training frames), or stretched whole; boxes come back normalised to
the full frame either way.
"""
import logging
import time
from pathlib import Path

import mxnet as mx
import numpy as np

from shims.errors import ModelError
from shims.package import MODEL_JSON, load_package
from shims.runtime import MXNetModel, resize, ssd_rows

log = logging.getLogger(__name__)
CROPS = ("center", "stretch")


def find_package(artifacts, wanted=""):
    """The package folder to run: `wanted` (a folder, or a name under `artifacts`), else the newest there."""
    artifacts = Path(artifacts)
    if wanted:
        folder = Path(wanted) if Path(wanted).is_dir() else artifacts / wanted
        if not (folder / MODEL_JSON).is_file():
            raise ModelError(f"no model package (with {MODEL_JSON}) here", folder)
        return folder
    found = sorted(artifacts.glob(f"*/{MODEL_JSON}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ModelError(f"no model package (a folder with {MODEL_JSON}) in the artifacts folder", artifacts)
    return found[-1].parent


def crop_rect(frame_w, frame_h, model_w, model_h, crop):
    """(x, y, w, h) of the frame region fed to the model."""
    if crop == "stretch":
        return 0, 0, frame_w, frame_h
    scale = min(frame_w / model_w, frame_h / model_h)
    w, h = round(model_w * scale), round(model_h * scale)
    return (frame_w - w) // 2, (frame_h - h) // 2, w, h


def check_weights(package):
    """Refuse NaN or infinite weights: the graph's clipping and NMS would hide them as 'no boxes'."""
    saved = mx.nd.load(str(package.params_path))
    bad = sum(int(value.size - np.isfinite(value.asnumpy()).sum()) for value in saved.values())
    if bad:
        raise ModelError(f"{bad} weights are NaN or infinite (did the training diverge?)", package.params_path)


class Detector:
    def __init__(self, package_folder, crop="center"):
        self.package = load_package(package_folder)
        check_weights(self.package)
        self.model = MXNetModel.from_package(self.package)
        self.crop = crop
        self.warm_ms = None

    @property
    def name(self):
        return self.package.name

    @property
    def version(self):
        return self.package.version

    @property
    def classes(self):
        return self.package.classes

    def preprocess(self, image):
        """Returns (batch, region): the network input and the frame region it shows."""
        frame_h, frame_w = image.shape[:2]
        region = crop_rect(frame_w, frame_h, self.model.width, self.model.height, self.crop)
        x, y, w, h = region
        return self.model.preprocess(resize(image[y:y + h, x:x + w], self.model.width, self.model.height)), region

    def infer(self, batch):
        return self.model.forward(batch)

    def postprocess(self, outputs, region, frame_size, min_score=0.0):
        """Detections scoring at least `min_score`, as `[{class_id, label, score, box}]`, box
        [xmin, ymin, xmax, ymax] normalised to the frame."""
        rows = ssd_rows(outputs)
        rows = rows[rows[:, 1] >= min_score]
        x, y, w, h = region
        frame_w, frame_h = frame_size
        boxes = np.clip(rows[:, 2:6], 0.0, 1.0) * (w, h, w, h) + (x, y, x, y)
        boxes = np.round(boxes / (frame_w, frame_h, frame_w, frame_h), 5).tolist()
        return [{"class_id": int(cls), "label": self.label(int(cls)), "score": round(float(score), 4), "box": box}
                for (cls, score), box in zip(rows[:, :2].tolist(), boxes)]

    def label(self, class_id):
        return self.classes[class_id] if 0 <= class_id < len(self.classes) else str(class_id)

    def warm(self, image, runs=3):
        """Run a real frame through a few times (the first run allocates); keep the fastest inference time."""
        try:
            self.warm_ms = min(self.detect(image)[1] for _ in range(runs))
        except Exception as exc:  # any failure on a frame means the model cannot serve
            raise ModelError(f"fails on a camera frame ({type(exc).__name__}: {exc})", self.package.folder) from None
        return self.warm_ms

    def detect(self, image):
        """One frame through all three stages; returns (detections, inference ms)."""
        batch, region = self.preprocess(image)
        start = time.perf_counter()
        outputs = self.infer(batch)
        infer_ms = (time.perf_counter() - start) * 1000
        return self.postprocess(outputs, region, (image.shape[1], image.shape[0])), infer_ms
