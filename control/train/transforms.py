"""Image + box transforms. Callables `(image HxWx3 uint8 BGR, boxes (M,5) pixels, rng) ->
(image 3xSxS uint8 BGR, boxes (M,5) normalised)`: the network normalises itself. uint8, a quarter
of float32: batches made in worker processes cross a pipe (control.train.data.BatchMaker)."""
import cv2
import numpy as np

from core.boxes import box_iou
from core.ssd import BGR_MEAN

from .config import FLIPS

CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9)  # the SSD paper's crop constraints; None: any crop


def _to_network(image, boxes, size):
    height, width = image.shape[:2]
    boxes = boxes.copy()
    boxes[:, (1, 3)] /= width
    boxes[:, (2, 4)] /= height
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(image.transpose(2, 0, 1)), boxes


class TrainTransform:
    """The SSD recipe: photometric jitter, zoom out (expand), constrained random crop, flip."""

    def __init__(self, size, flip="mirror", max_expand=3.0):
        if flip not in FLIPS:
            raise ValueError(f"flip must be one of {', '.join(FLIPS)}")
        self.size, self.flip, self.max_expand = size, flip, max_expand

    def __call__(self, image, boxes, rng):
        image = self.photometric(image, rng)
        if rng.random() < 0.5:
            image, boxes = self.expand(image, boxes, rng)
        image, boxes = self.crop(image, boxes, rng)
        image, boxes = self.flipped(image, boxes, rng)
        return _to_network(image, boxes, self.size)

    @staticmethod
    def photometric(image, rng):
        """Brightness, contrast, saturation and a small hue shift (hue may carry the class)."""
        out = image.astype(np.float32)
        out = out * rng.uniform(0.6, 1.4) + rng.uniform(-32, 32)
        hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-5, 5)) % 180
        hsv[..., 1] *= rng.uniform(0.6, 1.4)
        return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)

    def expand(self, image, boxes, rng):
        """Place the image on a larger mean-coloured canvas: teaches small objects."""
        height, width = image.shape[:2]
        ratio = rng.uniform(1, self.max_expand)
        out_h, out_w = int(height * ratio), int(width * ratio)
        top, left = rng.integers(0, out_h - height + 1), rng.integers(0, out_w - width + 1)
        canvas = np.empty((out_h, out_w, 3), np.uint8)
        canvas[:] = np.array(BGR_MEAN, np.uint8)
        canvas[top:top + height, left:left + width] = image
        boxes = boxes.copy()
        boxes[:, (1, 3)] += left
        boxes[:, (2, 4)] += top
        return canvas, boxes

    @staticmethod
    def crop(image, boxes, rng, trials=30):
        """A random crop that overlaps some box by a sampled minimum IoU; boxes whose centre
        falls outside are dropped, the rest clipped. Keeps the image if no crop fits."""
        height, width = image.shape[:2]
        if not len(boxes):
            return image, boxes
        for min_iou in rng.permutation(np.array(CROP_MIN_IOUS, dtype=object)):
            if min_iou is None:
                return image, boxes
            for _ in range(trials):
                scale, aspect = rng.uniform(0.3, 1.0), rng.uniform(0.5, 2.0)
                w = int(width * scale * np.sqrt(aspect))
                h = int(height * scale / np.sqrt(aspect))
                if not (0 < w <= width and 0 < h <= height):
                    continue
                x, y = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
                crop = np.array([x, y, x + w, y + h], np.float32)
                if box_iou(crop[None], boxes[:, 1:]).max() < min_iou:
                    continue
                centres = (boxes[:, 1:3] + boxes[:, 3:5]) / 2
                keep = np.all((centres > crop[:2]) & (centres < crop[2:]), axis=1)
                if not keep.any():
                    continue
                kept = boxes[keep].copy()
                kept[:, 1:3] = np.maximum(kept[:, 1:3], crop[:2]) - crop[:2]
                kept[:, 3:5] = np.minimum(kept[:, 3:5], crop[2:]) - crop[:2]
                return image[y:y + h, x:x + w], kept
        return image, boxes

    def flipped(self, image, boxes, rng):
        """Mirror or turn as `flip` says: half the time, or one of four quarter turns (rot90)."""
        if self.flip == "rot90":
            return quarter_turns(image, boxes, int(rng.integers(4)))
        if self.flip == "none" or rng.random() < 0.5:
            return image, boxes
        if self.flip == "rot180":
            return quarter_turns(image, boxes, 2)
        boxes = boxes.copy()
        boxes[:, (1, 3)] = image.shape[1] - boxes[:, (3, 1)]
        return image[:, ::-1], boxes


def quarter_turns(image, boxes, turns):
    """Rotate by `turns` x 90 degrees counter-clockwise (np.rot90), boxes along."""
    for _ in range(turns):
        width = image.shape[1]
        image = np.rot90(image)
        cls, xmin, ymin, xmax, ymax = boxes.T          # x' = y, y' = width - x
        boxes = np.stack([cls, ymin, width - xmax, ymax, width - xmin], axis=1)
    return image, boxes

