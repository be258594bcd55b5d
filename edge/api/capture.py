"""GET /capture: clean raw frames for training, one or a burst.

A synthetic camera knows where every note is: its frames carry the true boxes (X-Frame-Truth),
so frames pulled from it are labelled already (`deeplens-ctl labels import -f images`).
"""
import io
import json
import time
import uuid
import zipfile

from flask import Blueprint, Response

from ..capture import FORMATS, encode, grab_clean, map_truth, shape
from . import query, runtime

blueprint = Blueprint("capture", __name__)

OPTIONS = {
    "format": (tuple(FORMATS), "jpeg", None),
    "crop": (("none", "square"), "none", None),
    "size": (int, 0, (0, 4096)),
    "count": (int, 1, (1, 100)),
    "interval_ms": (int, 0, (0, 60000)),
    "pack": (("multipart", "zip"), "multipart", None),
}


def _frame_headers(frame, image, mapping):
    """Timestamp, sequence number and size; and for a synthetic camera the true boxes in this image's pixels."""
    height, width = image.shape[:2]
    headers = {"X-Frame-Timestamp": f"{frame.ts:.6f}", "X-Frame-Seq": str(frame.seq),
               "X-Frame-Width": str(width), "X-Frame-Height": str(height)}
    if frame.truth is not None:
        headers["X-Frame-Truth"] = json.dumps(map_truth(frame.truth, mapping, width, height), separators=(",", ":"))
    return headers


def _grab(rt, opts):
    frame, _ = grab_clean(rt.grabber, rt.config.capture_deadline, live=rt.camera_is_live)
    image, mapping = shape(frame.image, None if opts["crop"] == "none" else opts["crop"], opts["size"] or None)
    return encode(image, opts["format"]), _frame_headers(frame, image, mapping)


@blueprint.get("/capture")
def capture():
    """A clean frame (JPEG, or PNG with format=png); count>1 gives a burst as multipart or zip."""
    rt, opts = runtime(), query(OPTIONS)
    extension, mimetype = FORMATS[opts["format"]]
    if opts["count"] == 1:
        data, headers = _grab(rt, opts)
        return Response(data, mimetype=mimetype, headers=headers)
    shots = []
    for i in range(opts["count"]):
        if i and opts["interval_ms"]:
            time.sleep(opts["interval_ms"] / 1000)
        shots.append(_grab(rt, opts))
    if opts["pack"] == "zip":
        return _zip(shots, extension)
    return _multipart(shots, mimetype)


def _zip(shots, extension):
    buffer = io.BytesIO()
    index = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for data, headers in shots:
            name = f"frame-{int(headers['X-Frame-Seq']):08d}{extension}"
            archive.writestr(name, data)
            entry = {"file": name, **{k[8:].lower(): v for k, v in headers.items()}}
            if "truth" in entry:
                entry["truth"] = json.loads(entry["truth"])
            index.append(entry)
        archive.writestr("index.json", json.dumps(index, indent=1))
    return Response(buffer.getvalue(), mimetype="application/zip",
                    headers={"Content-Disposition": "attachment; filename=capture.zip"})


def _multipart(shots, mimetype):
    boundary = uuid.uuid4().hex
    parts = []
    for data, headers in shots:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        parts.append(f"--{boundary}\r\nContent-Type: {mimetype}\r\nContent-Length: {len(data)}\r\n{head}\r\n".encode()
                     + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return Response(body, mimetype=f"multipart/mixed; boundary={boundary}")
