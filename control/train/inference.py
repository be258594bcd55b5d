"""Evaluation of a detector on a manifest, frame by frame through core.detector.Detector:
the same path, crop policy included, that the device runs."""
from core.detector import to_pixels

from .data import load_image
from .metrics import DetectionMetric


def frame_rows(detector, image):
    """Pixel rows `[class_id, score, xmin, ymin, xmax, ymax]` of one frame, best first."""
    height, width = image.shape[:2]
    return to_pixels(detector.detect_rows([image])[0], width, height)


def evaluate_model(detector, samples, threshold=0.5, progress=None):
    """An EvalResult of `detector` on `samples` (pixel boxes), frame by frame as on the device."""
    metric = DetectionMetric(detector.classes, threshold=threshold)
    for sample in (progress or (lambda items: items))(samples):
        metric.update(frame_rows(detector, load_image(sample.path)), sample.boxes)
    return metric.get()
