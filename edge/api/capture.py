"""GET /capture: clean raw frames for training, one or a burst."""
import io
import json
import time
import uuid
import zipfile

from flask import Blueprint, Response

from ..capture import FORMATS, NoCleanFrame, encode, grab_clean, shape
from ..errors import ApiError
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


def _frame_headers(frame, image):
    height, width = image.shape[:2]
    return {"X-Frame-Timestamp": f"{frame.ts:.6f}", "X-Frame-Seq": str(frame.seq),
            "X-Frame-Width": str(width), "X-Frame-Height": str(height)}


def _grab(rt, opts):
    try:
        frame, _ = grab_clean(rt.grabber, rt.config.capture_deadline, live=rt.camera_is_live)
    except NoCleanFrame as exc:
        raise ApiError(503, "no_clean_frame", str(exc)) from None
    image = shape(frame.image, None if opts["crop"] == "none" else opts["crop"], opts["size"] or None)
    return frame, image, encode(image, opts["format"])


@blueprint.get("/capture")
def capture():
    """A clean frame (JPEG, or PNG with format=png); count>1 gives a burst as multipart or zip."""
    rt, opts = runtime(), query(OPTIONS)
    extension, mimetype = FORMATS[opts["format"]]
    if opts["count"] == 1:
        frame, image, data = _grab(rt, opts)
        return Response(data, mimetype=mimetype, headers=_frame_headers(frame, image))
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
        for frame, image, data in shots:
            name = f"frame-{frame.seq:08d}{extension}"
            archive.writestr(name, data)
            index.append({"file": name, **{k[8:].lower(): v for k, v in _frame_headers(frame, image).items()}})
        archive.writestr("index.json", json.dumps(index, indent=1))
    return Response(buffer.getvalue(), mimetype="application/zip",
                    headers={"Content-Disposition": "attachment; filename=capture.zip"})


def _multipart(shots, mimetype):
    boundary = uuid.uuid4().hex
    parts = []
    for frame, image, data in shots:
        head = "".join(f"{k}: {v}\r\n" for k, v in _frame_headers(frame, image).items())
        parts.append(f"--{boundary}\r\nContent-Type: {mimetype}\r\nContent-Length: {len(data)}\r\n{head}\r\n".encode()
                     + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return Response(body, mimetype=f"multipart/mixed; boundary={boundary}")
