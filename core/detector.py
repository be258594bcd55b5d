"""The one detection path: frame in, boxes normalised to the whole frame out.

Every consumer runs frames through a Detector: the edge loop, `deeplens-ctl predict` and
`evaluate`, the trainer's validation and the `awscam` shim, so that what is measured on the
laptop is what the device does (docs/model-package.md, "Detection").

A Detector is a model (anything with `width`, `height` and `forward(batch) -> {name: array}`:
the device runtime core.runtime.MXNetModel, or the trainer's in-memory network) plus a crop
policy (core.crop: `center`, the device's default, or `stretch`) for frames whose aspect ratio
differs from the model's input. Stages are separate (preprocess, infer, postprocess) so that the edge loop can time each.
"""
import time

import numpy as np

from .crop import DEFAULT_CROP, check_crop, crop_rect
from .errors import ModelError
from .package import load_package
from .runtime import MXNetModel, graph_nodes, resize

DETECTION_OP = "_contrib_MultiBoxDetection"


def detection_inputs(symbol, where):
    """Names of the (class probabilities, box offsets, anchors) outputs feeding the graph's
    MultiBoxDetection; ModelError if the graph does not end in one (not an SSD)."""
    nodes = graph_nodes(symbol)
    ops = [n for n in nodes if n["op"] == DETECTION_OP]
    if not ops:
        raise ModelError(f"graph has no {DETECTION_OP} output: not a DeepLens SSD graph", where)
    return [f"{nodes[i]['name']}_output" for i, _, _ in ops[-1]["inputs"]]


def graph_classes(symbol, width, height, where):
    """The number of foreground classes the graph predicts (its softmax channels less background)."""
    probs = detection_inputs(symbol, where)[0]
    _, shapes, _ = symbol.get_internals()[probs].infer_shape(data=(1, 3, height, width))
    return shapes[0][1] - 1


def check_package(package, model):
    """Refuse a package the device could not serve: not an SSD, a precision or class list that
    does not match the graph, or NaN/infinite weights (the graph's clipping and NMS would hide them
    as 'no boxes'). `model` is the package bound to the runtime (its graph and weights)."""
    if package.task != "ssd":
        raise ModelError(f"task {package.task!r} is not 'ssd'", package.folder / "model.json")
    if model.precision != package.precision:
        raise ModelError(f"field 'precision' says {package.precision} but the graph is {model.precision}",
                         package.folder / "model.json", field="precision")
    count = graph_classes(model.symbol, package.width, package.height, package.symbol_path)
    if count != len(package.classes):
        raise ModelError(f"graph predicts {count} classes but model.json 'classes' lists {len(package.classes)}",
                         package.folder / "model.json")
    bad = model.non_finite_weights()
    if bad:
        raise ModelError(f"{bad} weights are NaN or infinite (did the training diverge?)", package.params_path)


def ssd_rows(outputs):
    """The (N, 6) detection rows `[class, score, xmin, ymin, xmax, ymax]` of an SSD output dict
    (of one image), keeping only rows that were not suppressed (class >= 0), best first."""
    rows = next(iter(outputs.values()))
    rows = rows.reshape(-1, rows.shape[-1])
    rows = rows[rows[:, 0] >= 0]
    return rows[np.argsort(-rows[:, 1], kind="stable")]


def to_pixels(rows, width, height):
    """Detection rows with normalised corners -> pixel corners of a width x height image."""
    rows = np.array(rows, np.float64).reshape(-1, 6)
    rows[:, (2, 4)] *= width
    rows[:, (3, 5)] *= height
    return rows


class Detector:
    def __init__(self, model, classes=None, crop=DEFAULT_CROP, package=None):
        self.model, self.crop, self.package = model, check_crop(crop), package
        self.classes = list(classes or [])
        self.warm_ms = None

    @classmethod
    def open(cls, folder, crop=DEFAULT_CROP):
        """A model package folder, checked (checksums, graph, weights) and bound to the device runtime."""
        package = load_package(folder)
        model = MXNetModel.from_package(package)
        check_package(package, model)
        return cls(model, package.classes, crop, package)

    @property
    def name(self):
        return self.package.name if self.package else ""

    @property
    def version(self):
        return self.package.version if self.package else ""

    def label(self, class_id):
        return self.classes[class_id] if 0 <= class_id < len(self.classes) else str(class_id)

    # -- the three stages ---------------------------------------------------------------------
    def preprocess(self, image):
        """Returns (batch, region): the 1x3xHxW network input and the frame region (x, y, w, h) it shows."""
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR frame, got shape {getattr(image, 'shape', None)}")
        frame_h, frame_w = image.shape[:2]
        region = x, y, w, h = crop_rect(frame_w, frame_h, self.model.width, self.model.height, self.crop)
        pixels = image[y:y + h, x:x + w]
        if pixels.shape[:2] != (self.model.height, self.model.width):
            pixels = resize(pixels, self.model.width, self.model.height)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis], dtype=np.float32), region

    def infer(self, batch):
        """{output name: array} for a Nx3xHxW batch."""
        return self.model.forward(batch)

    def rows(self, outputs, region, frame_size, min_score=0.0):
        """(N, 6) rows `[class_id, score, xmin, ymin, xmax, ymax]` scoring at least `min_score`,
        best first, boxes normalised to the frame of `frame_size` (width, height)."""
        rows = ssd_rows(outputs).astype(np.float64)
        rows = rows[rows[:, 1] >= min_score]
        x, y, w, h = region
        frame_w, frame_h = frame_size
        rows[:, 2:6] = (np.clip(rows[:, 2:6], 0.0, 1.0) * (w, h, w, h) + (x, y, x, y)) / (frame_w, frame_h, frame_w, frame_h)
        return rows

    def postprocess(self, outputs, region, frame_size, min_score=0.0):
        """The rows as published: `[{class_id, label, score, box}]`, box [xmin, ymin, xmax, ymax]."""
        rows = self.rows(outputs, region, frame_size, min_score)
        boxes = np.round(rows[:, 2:6], 5).tolist()
        return [{"class_id": int(cls), "label": self.label(int(cls)), "score": round(float(score), 4), "box": box}
                for (cls, score), box in zip(rows[:, :2].tolist(), boxes)]

    # -- whole frames -------------------------------------------------------------------------
    def detect(self, image, min_score=0.0):
        """One frame through all three stages; returns (detections, inference ms)."""
        batch, region = self.preprocess(image)
        start = time.perf_counter()
        outputs = self.infer(batch)
        infer_ms = (time.perf_counter() - start) * 1000
        return self.postprocess(outputs, region, (image.shape[1], image.shape[0]), min_score), infer_ms

    def detect_rows(self, images, min_score=0.0):
        """Rows (see `rows`) for each of `images`, run as one batch."""
        prepared = [self.preprocess(image) for image in images]
        outputs = self.infer(np.concatenate([batch for batch, _ in prepared]))
        return [self.rows({k: v[i:i + 1] for k, v in outputs.items()}, region, (image.shape[1], image.shape[0]),
                          min_score)
                for i, ((_, region), image) in enumerate(zip(prepared, images))]

    def warm(self, image, runs=3):
        """Run a real frame through a few times (the first run allocates); keep the fastest inference time."""
        try:
            self.warm_ms = min(self.detect(image)[1] for _ in range(runs))
        except Exception as exc:  # any failure on a frame means the model cannot serve
            where = self.package.folder if self.package else None
            raise ModelError(f"fails on a camera frame ({type(exc).__name__}: {exc})", where) from None
        return self.warm_ms
