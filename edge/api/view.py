"""GET /stream and /frame.jpg: the live view, with boxes and labels drawn and the region the model
sees outlined (never used for training)."""
import time

import cv2
from flask import Blueprint, Response

from core.errors import Unavailable

from ..capture import encode, shape
from . import query, runtime

blueprint = Blueprint("view", __name__)
OPTIONS = {"size": (int, 960, (0, 4096))}
BOUNDARY = "deeplensframe"
REGION_COLOUR = (255, 255, 255)
COLOURS = [(0, 200, 255), (255, 120, 0), (60, 220, 60), (200, 60, 220), (0, 80, 255), (255, 255, 0)]


def annotate(result, size):
    """The frame of `result`, resized, with its detections drawn."""
    image = shape(result.frame.image, size=size or None)[0].copy()
    height, width = image.shape[:2]
    if result.region and tuple(result.region) != (0, 0, 1, 1):  # the model sees only this part (crop: center)
        x, y, w, h = result.region
        corner, far = (int(x * width), int(y * height)), (int((x + w) * width) - 1, int((y + h) * height) - 1)
        cv2.rectangle(image, corner, far, REGION_COLOUR, 1)
        cv2.putText(image, "model's view", (corner[0] + 4, corner[1] + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    REGION_COLOUR, 1, cv2.LINE_AA)
    for det in result.detections:
        x0, y0, x1, y1 = (int(round(v * s)) for v, s in zip(det["box"], (width, height, width, height)))
        colour = COLOURS[det["class_id"] % len(COLOURS)]
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, 2)
        text = f"{det['label']} {det['score']:.2f}"
        cv2.putText(image, text, (x0 + 3, max(y0 - 6, 14)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return image


def _latest(rt):
    result = rt.loop.latest
    if result is None:
        raise Unavailable("the camera has not delivered a frame yet", "no_frame_yet")
    return result


@blueprint.get("/frame.jpg")
def frame_jpg():
    rt, opts = runtime(), query(OPTIONS)
    result = _latest(rt)
    return Response(encode(annotate(result, opts["size"]), quality=80), mimetype="image/jpeg",
                    headers={"X-Frame-Seq": str(result.frame.seq), "Cache-Control": "no-store"})


@blueprint.get("/stream")
def stream():
    rt, opts = runtime(), query(OPTIONS)
    _latest(rt)

    def frames():
        seq = -1
        while True:
            result = rt.loop.latest
            if result is None or result.frame.seq == seq:
                time.sleep(0.02)
                continue
            seq = result.frame.seq
            data = encode(annotate(result, opts["size"]), quality=80)
            yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                   + data + b"\r\n")

    return Response(frames(), mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                    headers={"Cache-Control": "no-store"})
