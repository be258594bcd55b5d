"""A model package opened for inference with exactly the runtime the device uses
(shims.runtime.MXNetModel), so that `predict`, `evaluate` and the device agree to the last
detection; and evaluation of a package on a manifest."""
import json

import mxnet as mx
import numpy as np

from shims.errors import ModelError
from shims.package import load_package
from shims.runtime import MXNetModel, ssd_rows

from .data import load_image
from .metrics import DetectionMetric

DETECTION_OP = "_contrib_MultiBoxDetection"


def detection_inputs(symbol, where):
    """Names of the (class probabilities, box offsets, anchors) outputs feeding the graph's
    MultiBoxDetection; ModelError if the graph does not end in one (not an SSD)."""
    nodes = json.loads(symbol.tojson())["nodes"]
    ops = [n for n in nodes if n["op"] == DETECTION_OP]
    if not ops:
        raise ModelError(f"graph has no {DETECTION_OP} output: not a DeepLens SSD graph", where)
    return [f"{nodes[i]['name']}_output" for i, _, _ in ops[-1]["inputs"]]


def graph_classes(symbol, width, height, where):
    """The number of foreground classes the graph predicts (its softmax channels less background)."""
    probs = detection_inputs(symbol, where)[0]
    _, shapes, _ = symbol.get_internals()[probs].infer_shape(data=(1, 3, height, width))
    return shapes[0][1] - 1


class Detector:
    """A model package opened for inference: `predict(image)` gives pixel rows
    [class, score, xmin, ymin, xmax, ymax] for the image as given, best first."""

    def __init__(self, folder):
        self.package = load_package(folder)
        pkg = self.package
        if pkg.task != "ssd":
            raise ModelError(f"task {pkg.task!r} is not 'ssd'", pkg.folder / "model.json")
        self.runtime = MXNetModel.from_package(pkg)
        count = graph_classes(mx.sym.load(str(pkg.symbol_path)), pkg.width, pkg.height, pkg.symbol_path)
        if count != len(pkg.classes):
            raise ModelError(f"graph predicts {count} classes but model.json 'classes' lists {len(pkg.classes)}",
                             pkg.folder / "model.json")

    @property
    def classes(self):
        return self.package.classes

    def predict(self, image, threshold=0.0):
        rows = ssd_rows(self.runtime.infer(image)).astype(np.float64)
        rows = rows[rows[:, 1] >= threshold]
        height, width = image.shape[:2]
        rows[:, (2, 4)] *= width
        rows[:, (3, 5)] *= height
        return rows



def evaluate_model(detector, samples, threshold=0.5, progress=None):
    """An EvalResult of `detector` on `samples` (pixel boxes), frame by frame as on the device."""
    metric = DetectionMetric(detector.classes, threshold=threshold)
    for sample in (progress or (lambda items: items))(samples):
        metric.update(detector.predict(load_image(sample.path)), sample.boxes)
    return metric.get()
