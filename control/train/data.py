"""Training samples from a SageMaker augmented manifest, and batches of them for the network."""
import dataclasses
from pathlib import Path

import cv2
import numpy as np

from control.dataset import Collector, DatasetError, read
from control.dataset.sagemaker import validate

from . import TrainError


@dataclasses.dataclass
class Sample:
    """One image: its file and boxes as rows [class_id, xmin, ymin, xmax, ymax] in pixels."""
    path: Path
    boxes: np.ndarray


def read_manifest(path):
    """(samples, class names) of an augmented manifest, read by control.dataset after its
    validator found no error: a manifest it refuses is refused here, with its messages."""
    path = str(path)
    try:
        errors = [p for p in validate(Collector(), path) if p.severity == "error"]
        if errors:
            raise DatasetError(f"{path}: not valid for training (fix or drop these lines)", errors)
        dataset, _ = read("sagemaker", path, strict=True)
    except DatasetError as exc:
        raise TrainError(str(exc)) from None
    if not dataset.images:
        raise TrainError(f"{path}: no labelled images")
    samples = [Sample(Path(image.path), np.array([[dataset.class_id(b.label), b.xmin, b.ymin, b.xmax, b.ymax]
                                                  for b in image.boxes], np.float32).reshape(-1, 5))
               for image in dataset.images]
    return samples, list(dataset.classes)


def load_image(path):
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise TrainError(f"{path}: not a readable image")
    return pixels


class DetectionData:
    """Decoded images kept in memory (camera frames are small) and, for training, a transform per draw."""

    def __init__(self, samples, transform=None):
        self.samples, self.transform = samples, transform
        self.images = [load_image(s.path) for s in samples]

    def __len__(self):
        return len(self.samples)

    def batches(self, batch_size, rng=None):
        """Yield (images (B,3,H,W) float32, labels (B,M,5) normalised, -1 padded); shuffled with `rng`."""
        order = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        for start in range(0, len(order), batch_size):
            pairs = [self.transform(self.images[i], self.samples[i].boxes, rng) for i in order[start:start + batch_size]]
            yield np.stack([p[0] for p in pairs]), pad_labels([p[1] for p in pairs])


def pad_labels(labels):
    """Stack (M_i, 5) label arrays into (B, max M, 5), padding with -1 rows as MultiBoxTarget expects."""
    out = np.full((len(labels), max(1, max(len(l) for l in labels)), 5), -1, np.float32)
    for i, l in enumerate(labels):
        out[i, :len(l)] = l
    return out
