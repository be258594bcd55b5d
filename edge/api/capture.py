"""GET /capture: clean raw frames for training, one or a burst.

A synthetic camera knows where every note is: its frames carry the true boxes (X-Frame-Truth),
so frames pulled from it are labelled already (`deeplens-ctl labels import -f images`).

A request is checked against the memory budget (`capture_budget_mb`) before any work; a burst
holds one of the live slots (edge/live.py) and is sent frame by frame, so it holds one frame in
memory, and it stops when its client leaves. The app's CleanFrames (edge/capture.py) shares the
checking and encoding of a frame between the requests that want it.
"""
import io
import json
import logging
import uuid
import zipfile

from flask import Blueprint, Response, current_app

from core.errors import DeepLensError, InvalidInput, TooLarge

from ..capture import FORMATS, MB, CleanFrames, estimated_bytes, estimated_seconds, map_truth, shaped_size
from ..live import hold, live
from . import query, runtime

log = logging.getLogger(__name__)
blueprint = Blueprint("capture", __name__)
FRAMES_KEY = "deeplens.capture"  # the app's CleanFrames in app.extensions

OPTIONS = {
    "format": (tuple(FORMATS), "jpeg", None),
    "crop": (("none", "square"), "none", None),
    "size": (int, 0, (0, 4096)),
    "count": (int, 1, (1, 100)),
    "interval_ms": (int, 0, (0, 60000)),
    "pack": (("multipart", "zip"), "multipart", None),
}


def _frame_headers(frame, shot):
    """Timestamp, sequence number and size; and for a synthetic camera the true boxes in this image's pixels."""
    headers = {"X-Frame-Timestamp": f"{frame.ts:.6f}", "X-Frame-Seq": str(frame.seq),
               "X-Frame-Width": str(shot.width), "X-Frame-Height": str(shot.height)}
    if frame.truth is not None:
        headers["X-Frame-Truth"] = json.dumps(map_truth(frame.truth, shot.mapping, shot.width, shot.height),
                                              separators=(",", ":"))
    return headers


def clean_frames(rt):
    """The app's CleanFrames, made on first use from the runtime's camera and settings (two first
    requests at once may each make one: one is kept, the other serves its request and is dropped).
    Taken in the request: a burst's generator runs outside the app context."""
    found = current_app.extensions.get(FRAMES_KEY)
    if found is None:
        found = current_app.extensions.setdefault(FRAMES_KEY, CleanFrames(
            rt.grabber, rt.config.capture_deadline, rt.config.capture_fresh_s, live=rt.camera_is_live))
    return found


def _grab(rt, frames, opts, check=False, after=-1):
    """(data, headers) of a clean frame of `frames` newer than seq `after` (see CleanFrames.grab);
    `check`: the budget is checked on it first."""
    frame = frames.grab(after)
    if check:
        _check_limits(rt, opts, frame.image)
    shot = frames.shot(frame, None if opts["crop"] == "none" else opts["crop"], opts["size"] or None, opts["format"])
    return shot.data, _frame_headers(frame, shot)


def _check_limits(rt, opts, image=None):
    """400 when a burst of `count` frames of this shape and format would take longer than
    capture_burst_s, 413 when it could come to more than capture_budget_mb; measured on the
    camera's latest frame (returns None when there is none yet: check the first one)."""
    if image is None:
        frame = rt.grabber.latest()
        if frame is None:
            return None
        image = frame.image
    budget = rt.config.capture_budget_mb
    width, height = shaped_size(image.shape[1], image.shape[0], None if opts["crop"] == "none" else opts["crop"],
                                opts["size"] or None)
    total = opts["count"] * estimated_bytes(width, height, opts["format"])
    if total > budget * MB:
        what = f"{opts['count']} {opts['format'].upper()} frame{'s' if opts['count'] > 1 else ''} of {width}x{height}"
        raise TooLarge(f"{what} could come to {total / MB:.0f} MB, over the capture budget capture_budget_mb "
                       f"({budget:g} MB): ask for fewer frames, a smaller size, or JPEG",
                       "over_capture_budget", "count")
    planned_s = estimated_seconds(opts["count"], opts["interval_ms"], width, height, opts["format"],
                                  rt.grabber.state()["fps"])
    if opts["count"] > 1 and planned_s > rt.config.capture_burst_s:
        raise InvalidInput(f"a burst of {opts['count']} {opts['format'].upper()} frames of {width}x{height}, "
                           f"{opts['interval_ms']} ms apart, would take about {planned_s:.1f} s, longer than "
                           f"capture_burst_s ({rt.config.capture_burst_s:g} s): ask for fewer or smaller frames, or "
                           "take slow sequences frame by frame (deeplens-ctl pull --interval-ms)", "burst_too_long",
                           "count")
    return total


@blueprint.get("/capture")
def capture():
    """A clean frame (JPEG, or PNG with format=png); count>1 gives a burst as multipart or zip,
    sent frame by frame as each is taken (one of the live slots, edge/live.py)."""
    rt, opts = runtime(), query(OPTIONS)
    measured = _check_limits(rt, opts)
    frames = clean_frames(rt)
    extension, mimetype = FORMATS[opts["format"]]
    if opts["count"] == 1:
        data, headers = _grab(rt, frames, opts, check=measured is None)
        return Response(data, mimetype=mimetype, headers=headers)
    slot = live().take("a burst")
    try:
        shots = _shots(rt, frames, opts, slot, _grab(rt, frames, opts, check=measured is None))
        if opts["pack"] == "zip":
            response = Response(_zip(shots, extension), mimetype="application/zip",
                                headers={"Content-Disposition": "attachment; filename=capture.zip"})
        else:
            boundary = uuid.uuid4().hex
            response = Response(_multipart(shots, mimetype, boundary), mimetype=f"multipart/mixed; boundary={boundary}")
    except BaseException:
        slot.release()
        raise
    return hold(response, slot)


def _shots(rt, frames, opts, slot, first):
    """The burst's (data, headers), one at a time: the first already taken; then, after each
    interval, the next, newer than the one before. Stops early when the client has gone or the
    service stops; a frame that cannot be had ends the burst with a _Failed."""
    shot = first
    yield shot
    for _ in range(opts["count"] - 1):
        if not slot.wait(opts["interval_ms"] / 1000):
            return
        try:
            shot = _grab(rt, frames, opts, after=int(shot[1]["X-Frame-Seq"]))
        except DeepLensError as exc:
            yield _Failed(exc)
            return
        yield shot


class _Failed:
    """A frame of a burst that could not be had: the burst ends with its error."""

    def __init__(self, exc):
        self.body = json.dumps({"error": {"code": exc.code, "message": exc.message}})
        log.warning("burst ended early", extra={"fields": {"error": exc.message}})


def _multipart(shots, mimetype, boundary):
    for shot in shots:
        if isinstance(shot, _Failed):
            yield (f"--{boundary}\r\nContent-Type: application/json\r\nContent-Length: {len(shot.body)}\r\n\r\n"
                   f"{shot.body}\r\n").encode()
            break
        data, headers = shot
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        yield (f"--{boundary}\r\nContent-Type: {mimetype}\r\nContent-Length: {len(data)}\r\n{head}\r\n".encode()
               + data + b"\r\n")
    yield f"--{boundary}--\r\n".encode()


class _Spool(io.RawIOBase):
    """What zipfile writes to: the bytes since the last `take()`, with seeks within them (zipfile
    goes back to finish each file's header), so a zip streams out file by file."""

    def __init__(self):
        self._base, self._buffer, self._pos = 0, bytearray(), 0

    def writable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._base + self._pos

    def seek(self, offset, whence=io.SEEK_SET):
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self.tell() + offset,
                  io.SEEK_END: self._base + len(self._buffer) + offset}[whence]
        if not self._base <= target <= self._base + len(self._buffer):
            raise io.UnsupportedOperation("cannot seek into bytes already sent")
        self._pos = target - self._base
        return target

    def write(self, data):
        data = bytes(data)
        self._buffer[self._pos:self._pos + len(data)] = data
        self._pos += len(data)
        return len(data)

    def take(self):
        data = bytes(self._buffer[:self._pos])
        self._base += self._pos
        del self._buffer[:]
        self._pos = 0
        return data


def _zip(shots, extension):
    spool, index = _Spool(), []
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as archive:
        for shot in shots:
            if isinstance(shot, _Failed):
                archive.writestr("error.json", shot.body)
                break
            data, headers = shot
            name = f"frame-{int(headers['X-Frame-Seq']):08d}{extension}"
            archive.writestr(name, data)
            entry = {"file": name, **{k[8:].lower(): v for k, v in headers.items()}}
            if "truth" in entry:
                entry["truth"] = json.loads(entry["truth"])
            index.append(entry)
            yield spool.take()
        archive.writestr("index.json", json.dumps(index, indent=1))
    yield spool.take()
