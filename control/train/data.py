"""Training samples from a SageMaker augmented manifest, and batches of them for the network."""
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np

from . import TrainError


@dataclasses.dataclass
class Sample:
    """One image: its file and boxes as rows [class_id, xmin, ymin, xmax, ymax] in pixels."""
    path: Path
    boxes: np.ndarray


def resolve_source(ref, manifest_dir):
    """The local file of a `source-ref`: relative to the manifest, absolute, or
    `s3://bucket/input/<folder>/<file>` mirrored as `<manifest dir>/<folder>/<file>`."""
    if ref.startswith("s3://"):
        return Path(manifest_dir, *ref[len("s3://"):].split("/")[-2:])
    return Path(manifest_dir, ref)


def read_manifest(path):
    """(samples, class names) of an augmented manifest; the label attribute is the key holding
    `annotations`. Class names come from `<attr>-metadata.class-map`, else `class<id>`."""
    path = Path(path)
    samples, names = [], {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TrainError(f"{path}: cannot read manifest ({exc.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
            attr = next(k for k, v in row.items() if isinstance(v, dict) and "annotations" in v)
            boxes = [(a["class_id"], a["left"], a["top"], a["left"] + a["width"], a["top"] + a["height"])
                     for a in row[attr]["annotations"]]
            names.update({int(k): v for k, v in row.get(f"{attr}-metadata", {}).get("class-map", {}).items()})
            image = resolve_source(row["source-ref"], path.parent)
        except (ValueError, KeyError, TypeError, StopIteration):
            raise TrainError(f"{where}: not an object-detection manifest line") from None
        if not image.is_file():
            raise TrainError(f"{where}: image not found: {image}")
        samples.append(Sample(image, np.array(boxes, np.float32).reshape(-1, 5)))
    if not samples:
        raise TrainError(f"{path}: no labelled images")
    count = 1 + max([int(s.boxes[:, 0].max()) for s in samples if len(s.boxes)] + list(names) + [0])
    return samples, [names.get(i, f"class{i}") for i in range(count)]


def load_image(path):
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise TrainError(f"{path}: not a readable image")
    return pixels


class DetectionData:
    """Decoded images kept in memory (camera frames are small) and a transform per draw."""

    def __init__(self, samples, transform):
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
