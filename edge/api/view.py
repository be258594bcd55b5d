"""GET /stream and /frame.jpg: the live view, with boxes and labels drawn and the region the model
sees outlined (never used for training); GET /detections: the same frame's detections as JSON.
Streams are long-lived responses (edge/live.py): a bounded pool, per-client limits, and one JPEG
encode per frame and size for every viewer."""
import logging
import time

import cv2
from flask import Blueprint, Response, jsonify

from core.errors import Unavailable

from ..capture import encode, shape
from ..live import POLL_S, STALE_S, hold, live
from . import query, runtime

log = logging.getLogger(__name__)

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


def jpeg(hub, result, size):
    """The annotated JPEG of `result` at `size`, encoded once for every viewer of that frame."""
    return hub.shared((result.frame.seq, size), lambda: encode(annotate(result, size), quality=80))


@blueprint.get("/frame.jpg")
def frame_jpg():
    rt, opts = runtime(), query(OPTIONS)
    result = _latest(rt)
    return Response(jpeg(live(), result, opts["size"]), mimetype="image/jpeg",
                    headers={"X-Frame-Seq": str(result.frame.seq), "Cache-Control": "no-store"})


@blueprint.get("/detections")
def detections():
    """What the live view draws, as data: a page or tool lists it without decoding images."""
    rt = runtime()
    result = _latest(rt)
    height, width = result.frame.image.shape[:2]
    region = [round(v, 5) for v in result.region] if result.region else None
    return jsonify({"seq": result.frame.seq, "ts": result.frame.ts, "model": _model(rt, result.model_version),
                    "region": region, "frame": {"width": width, "height": height},
                    "detections": result.detections})


def _model(rt, version):
    """{name, version} of the model that produced a result: the serving one, or (just after a swap)
    the stored version it names."""
    if version is None:
        return None
    detector = rt.manager.detector
    if detector is not None and detector.version == version:
        return {"name": detector.name, "version": version}
    entry = rt.store.get(version)
    return {"name": entry.meta.get("name") if entry else None, "version": version}


@blueprint.get("/stream")
def stream():
    """An endless MJPEG stream of the latest annotated frame; one of the live slots (edge/live.py)."""
    rt, opts = runtime(), query(OPTIONS)
    age = time.time() - _latest(rt).frame.ts
    if age > STALE_S:
        raise Unavailable(f"the camera has sent no frame for {age:.0f} s (see camera in /status)", "camera_gone")
    slot = live().take("a stream")
    try:
        slot.small_send_buffer()
        response = Response(_frames(rt, opts["size"], slot), mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                            headers={"Cache-Control": "no-store"})
    except BaseException:
        slot.release()
        raise
    return hold(response, slot)


def _frames(rt, size, slot):
    """Each new frame once, as a part; ends when the camera is gone (no new frame for STALE_S),
    the client has left or reads too slowly, or the service stops."""
    seq = -1
    while not slot.live.stopping.is_set():
        result = rt.loop.latest
        if result is not None and result.frame.seq != seq:
            seq = result.frame.seq
            data = jpeg(slot.live, result, size)
            started = time.monotonic()
            yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n"
                   f"X-Frame-Seq: {seq}\r\n\r\n").encode() + data + b"\r\n"
            if time.monotonic() - started > slot.live.write_timeout:  # the write of that part took this long
                log.warning("live view client too slow, dropped", extra={"fields": {"client": slot.client}})
                return
            continue
        if result is None or time.time() - result.frame.ts > STALE_S or slot.gone():
            return
        slot.live.stopping.wait(POLL_S)
