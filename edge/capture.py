"""Clean training frames: fresh from the camera, taken before any drawing, broken ones refused.

A frame is refused when core.quality finds it broken (a flat band from a half-decoded
MJPEG frame, a black frame, or, for live sources, the previous frame again). The caller
gets the camera's latest frame when it is fresh enough and clean, else the first clean frame
newer than its request, or NoCleanFrame with the reasons. Requests that come together share
the work: each frame is checked once, and encoded once per crop, size and format.
"""
import collections
import time

import cv2

from core.errors import Unavailable
from core.quality import check_frame
from core.runtime import resize

from .shared import Shared

FORMATS = {"jpeg": (".jpg", "image/jpeg"), "png": (".png", "image/png")}
MB = 1024 * 1024
# What a frame's encoding may come to, as a share of its raw size (width x height x 3): PNG as
# raw at worst; JPEG at quality 95 about a tenth of it for camera images, counted as a quarter.
ENCODED_SHARE = {"jpeg": 0.25, "png": 1.0}
# Encoding time per pixel, about twice what this 2-core machine measured on 1080p frames (PNG 37 ns,
# JPEG 3.5 ns), to plan how long a burst takes before it starts.
ENCODE_NS_PER_PIXEL = {"jpeg": 8, "png": 80}
CAMERA_FPS = 30.0  # the pace assumed for a camera that has not measured its own yet
VERDICTS = 8  # frames whose check is kept: the latest few
SHOTS = 4  # encoded frames kept: the latest frame in a few shapes and formats
Shot = collections.namedtuple("Shot", "data width height mapping")


class NoCleanFrame(Unavailable):
    code = "no_clean_frame"

    def __init__(self, deadline, rejected):
        self.rejected = dict(rejected)
        why = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.rejected.items())) or "the camera sent none"
        super().__init__(f"no clean frame within {deadline:g} s ({why})")


class CleanFrames:
    """Clean frames of one camera (a FrameGrabber) for /capture, the work shared by the requests
    that want the same frame at the same time, as the live view shares its JPEGs.

    `fresh_s`: the latest frame, when taken less than this long ago, is served at once, rather
    than the request waiting for the camera's next frame (0: always wait); `deadline`: how long
    to wait for a clean one; `live`: whether a frame equal to the one before it is refused."""

    def __init__(self, grabber, deadline, fresh_s=0.0, live=True):
        self.grabber, self.deadline, self.fresh_s, self.live = grabber, deadline, fresh_s, live
        self._verdicts, self._shots = Shared(VERDICTS), Shared(SHOTS)

    def grab(self, after=-1):
        """The latest frame when it is fresh (see `fresh_s`), clean and newer than seq `after`;
        else the first clean frame taken after this call (and after `after`), waiting up to
        `deadline` s before NoCleanFrame with the refused frames' reasons."""
        end = time.monotonic() + self.deadline
        rejected = collections.Counter()
        latest = self.grabber.latest()
        if latest is not None and latest.seq > after:
            if time.time() - latest.ts < self.fresh_s:
                reason = self.verdict(latest)
                if reason is None:
                    return latest
                rejected[reason] += 1
            after = latest.seq
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise NoCleanFrame(self.deadline, rejected)
            frame = self.grabber.wait_next(after, timeout=remaining)
            if frame is None:
                continue
            reason = self.verdict(frame)
            if reason is None:
                return frame
            rejected[reason] += 1
            after = frame.seq

    def verdict(self, frame):
        """Why `frame` is broken (core.quality.check_frame; for a live camera, against the frame
        before it while the grabber holds it), or None when clean; checked once per frame."""
        def check():
            previous = self.grabber.before(frame) if self.live else None
            return check_frame(frame.image, None if previous is None else previous.image)
        return self._verdicts.get(frame.seq, check)

    def shot(self, frame, crop=None, size=None, fmt="jpeg"):
        """`frame` shaped (see `shape`) and encoded as `fmt`: a Shot of the bytes, the image's
        width and height, and shape's mapping; made once per frame, crop, size and format."""
        def make():
            image, mapping = shape(frame.image, crop, size)
            return Shot(encode(image, fmt), image.shape[1], image.shape[0], mapping)
        return self._shots.get((frame.seq, crop, size, fmt), make)


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
