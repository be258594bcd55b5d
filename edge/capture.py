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
MB = 1024 * 1024
# What a frame's encoding may come to, as a share of its raw size (width x height x 3): PNG as
# raw at worst; JPEG at quality 95 about a tenth of it for camera images, counted as a quarter.
ENCODED_SHARE = {"jpeg": 0.25, "png": 1.0}
# Encoding time per pixel, about twice what this 2-core machine measured on 1080p frames (PNG 37 ns,
# JPEG 3.5 ns), to plan how long a burst takes before it starts.
ENCODE_NS_PER_PIXEL = {"jpeg": 8, "png": 80}
CAMERA_FPS = 30.0  # the pace assumed for a camera that has not measured its own yet


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
    """Crop (`square`: the centre square, as DeepLens capture code does), then shrink so the longer
    side is at most `size` (a frame is never enlarged: that adds memory, not detail). Returns (image, (x, y, scale_x, scale_y)): where the output starts in the input
    and how much it was scaled, for mapping boxes."""
    x = y = 0
    if crop == "square":
        height, width = image.shape[:2]
        side = min(height, width)
        y, x = (height - side) // 2, (width - side) // 2
        image = image[y:y + side, x:x + side]
    scale_x = scale_y = 1.0
    if size and size < max(image.shape[:2]):
        height, width = image.shape[:2]
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        image = resize(image, new_w, new_h)
        scale_x, scale_y = new_w / width, new_h / height
    return image, (x, y, scale_x, scale_y)


def shaped_size(width, height, crop=None, size=None):
    """(width, height) of a `width` x `height` image after shape(image, crop, size), without the work."""
    if crop == "square":
        width = height = min(width, height)
    if size and size < max(width, height):
        scale = size / max(height, width)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def estimated_seconds(count, interval_ms, width, height, fmt, fps):
    """How long a burst of `count` frames takes: the pauses, and for each frame the wait for the
    camera's next one and its encoding."""
    per_frame = 1 / (fps or CAMERA_FPS) + width * height * ENCODE_NS_PER_PIXEL[fmt] / 1e9
    return (count - 1) * interval_ms / 1000 + count * per_frame


def estimated_bytes(width, height, fmt):
    """Bytes a `width` x `height` frame may take encoded as `fmt` (for the capture budget)."""
    return int(width * height * 3 * ENCODED_SHARE[fmt])


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
