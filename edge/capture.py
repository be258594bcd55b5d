"""Clean training frames: fresh from the camera, taken before any drawing, broken ones refused.

A frame is refused when core.quality finds it broken (a flat band from a half-decoded
MJPEG frame, a black frame, or, for live sources, the previous frame again). The caller
gets the first clean frame newer than its request, or NoCleanFrame with the reasons.
"""
import collections
import time

import cv2

from core.errors import Unavailable
from core.quality import check_frame
from core.runtime import resize

FORMATS = {"jpeg": (".jpg", "image/jpeg"), "png": (".png", "image/png")}


class NoCleanFrame(Unavailable):
    code = "no_clean_frame"

    def __init__(self, deadline, rejected):
        self.rejected = dict(rejected)
        why = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.rejected.items())) or "the camera sent none"
        super().__init__(f"no clean frame within {deadline:g} s ({why})")


def grab_clean(grabber, deadline, live=True):
    """The first clean frame that starts after this call; refuses broken ones until `deadline` s."""
    end = time.monotonic() + deadline
    rejected = collections.Counter()
    previous = grabber.latest()
    after = previous.seq if previous else -1
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise NoCleanFrame(deadline, rejected)
        frame = grabber.wait_next(after, timeout=remaining)
        if frame is None:
            continue
        reason = check_frame(frame.image, previous.image if live and previous else None)
        if reason is None:
            return frame, rejected
        rejected[reason] += 1
        previous, after = frame, frame.seq


def shape(image, crop=None, size=None):
    """Crop (`square`: the centre square, as DeepLens capture code does), then resize so the longer
    side is `size`. Returns (image, (x, y, scale_x, scale_y)): where the output starts in the input
    and how much it was scaled, for mapping boxes."""
    x = y = 0
    if crop == "square":
        height, width = image.shape[:2]
        side = min(height, width)
        y, x = (height - side) // 2, (width - side) // 2
        image = image[y:y + side, x:x + side]
    scale_x = scale_y = 1.0
    if size:
        height, width = image.shape[:2]
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        image = resize(image, new_w, new_h)
        scale_x, scale_y = new_w / width, new_h / height
    return image, (x, y, scale_x, scale_y)


def map_truth(truth, mapping, width, height, min_visible=0.5):
    """The synthetic camera's true boxes in the pixels of a shaped `width` x `height` image;
    objects the crop cuts to less than `min_visible` of their area are left out."""
    x, y, scale_x, scale_y = mapping
    mapped = []
    for obj in truth:
        x0, y0, x1, y1 = obj["box"]
        box = [(x0 - x) * scale_x, (y0 - y) * scale_y, (x1 - x) * scale_x, (y1 - y) * scale_y]
        kept = [min(max(box[0], 0), width), min(max(box[1], 0), height),
                min(max(box[2], 0), width), min(max(box[3], 0), height)]
        area = (box[2] - box[0]) * (box[3] - box[1])
        if area > 0 and (kept[2] - kept[0]) * (kept[3] - kept[1]) >= min_visible * area:
            mapped.append({"class_id": obj["class_id"], "label": obj["label"], "box": [round(v, 1) for v in kept]})
    return mapped


def encode(image, fmt="jpeg", quality=95):
    extension, _ = FORMATS[fmt]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, data = cv2.imencode(extension, image, params)
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} frame as {fmt}")
    return data.tobytes()
