"""Camera sources behind `awscam.getLastFrame()`, chosen by a camera SPEC (docs/cli.md, deeplens-edge serve --camera).

    synthetic[:SEED]   banknote-like objects moving on a wooden table, with their true boxes
    folder:PATH        the images of a folder, sorted, in a loop
    video:PATH         a video file, in a loop
    webcam:INDEX       a V4L2 camera
    url:URL            an MJPEG or RTSP stream (anything cv2.VideoCapture opens)

Options follow a `?`: `size=WxH` (output size; synthetic default 1920x1080, the others keep
their native size), `fps=N` (pace of synthetic, folder and video sources; default 24, or the
video's own rate), `faults=band:0.3,black:0.1,freeze:0.1,drop:0.1` (seeded fault injection,
the artefacts a real DeepLens stream shows). For `url:` a trailing `?...` is taken as options
only when every key is one of these; otherwise it belongs to the URL.

A source is opened, read (a Frame, or None when a read fails) and closed; FrameGrabber reads
one in a background thread like the device's continuous stream and reconnects when it fails.
"""
import collections
import dataclasses
import logging
import math
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from . import settings
from core.errors import CameraError

log = logging.getLogger(__name__)

KINDS = ("synthetic", "folder", "video", "webcam", "url")
OPTIONS = ("size", "fps", "faults")
FAULTS = ("band", "black", "freeze", "drop")
DEFAULT_FPS = 24.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
OPENCV_LOG_FATAL = 1  # cv2.setLogLevel: 0 silent, 1 fatal, 2 error, 3 warning
# The colour a broken MJPEG decode leaves on a DeepLens: YUV (0, 0, 0) shown as BGR.
DECODE_GREEN = (0, 135, 0)
# A stream that stalls fails a read after 5 s instead of blocking the grabber (and stop()).
CAPTURE_TIMEOUTS = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]


@dataclasses.dataclass(frozen=True)
class Frame:
    """One camera frame: BGR uint8 HxWx3 `image`, `truth` boxes for synthetic frames (else None),
    `fault` the injected fault's name when fault injection made this frame (else None)."""
    seq: int
    ts: float
    image: np.ndarray
    truth: list = None
    fault: str = None


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    text: str
    kind: str
    target: str
    size: tuple = None
    fps: float = None
    faults: dict = dataclasses.field(default_factory=dict)


def parse_size(text, where="size"):
    """`WxH` -> (width, height); CameraError naming `where` when malformed."""
    width, sep, height = str(text).strip().lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise CameraError(f"{where} {text!r} is not WIDTHxHEIGHT, e.g. 1920x1080")
    return int(width), int(height)


def parse_spec(text):
    """Parse a camera SPEC string into a CameraSpec; CameraError names the bad part."""
    text = str(text).strip()
    kind = text.split(":", 1)[0].split("?", 1)[0]
    if kind not in KINDS:
        raise CameraError(f"camera spec {text!r}: unknown source {kind!r} (known: {', '.join(KINDS)})")
    rest = text[len(kind):]
    if rest and rest[0] not in ":?":
        raise CameraError(f"camera spec {text!r}: expected ':' after {kind!r}")
    body, query = _split_options(kind, rest)
    target = body[1:] if body.startswith(":") else body

    def bad(message):
        return CameraError(f"camera spec {text!r}: {message}")

    if kind == "synthetic" and target and not target.isdigit():
        raise bad(f"seed {target!r} is not a non-negative integer")
    if kind == "webcam" and target and not target.isdigit():
        raise bad(f"webcam index {target!r} is not a non-negative integer")
    if kind in ("folder", "video", "url") and not target:
        raise bad(f"{kind} needs a {'URL' if kind == 'url' else 'path'} after '{kind}:'")
    options = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if key not in OPTIONS:
            raise bad(f"unknown option {key!r} (known: {', '.join(OPTIONS)})")
        if not sep or not value:
            raise bad(f"option {key!r} needs a value")
        options[key] = value
    try:
        size = parse_size(options["size"], "size") if "size" in options else None
        fps = _parse_fps(options["fps"]) if "fps" in options else None
        faults = _parse_faults(options.get("faults", ""))
    except CameraError as exc:
        raise bad(str(exc)) from None
    return CameraSpec(text=text, kind=kind, target=target, size=size, fps=fps, faults=faults)


def _split_options(kind, rest):
    if kind != "url":
        body, _, query = rest.partition("?")
        return body, query
    body, sep, query = rest.rpartition("?")
    keys = [item.partition("=")[0] for item in query.split("&")]
    if sep and all(key in OPTIONS for key in keys):
        return body, query
    return rest, ""


def _parse_fps(text):
    try:
        fps = float(text)
    except ValueError:
        fps = math.nan
    if not 0 < fps <= 240:
        raise CameraError(f"fps {text!r} is not a number in (0, 240]")
    return fps


def _parse_faults(text):
    faults = {}
    for item in filter(None, text.split(",")):
        name, _, prob = item.partition(":")
        if name not in FAULTS:
            raise CameraError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")
        try:
            faults[name] = float(prob)
        except ValueError:
            faults[name] = math.nan
        if not 0 <= faults[name] <= 1:
            raise CameraError(f"fault {name!r} needs a probability in [0, 1], got {prob!r}")
    if sum(faults.values()) > 1:
        raise CameraError(f"fault probabilities add up to more than 1 in {text!r}")
    return faults


def source_from_spec(spec, default_size=None):
    """The (unopened) Source a SPEC names; `default_size` applies when the spec has no `size=`."""
    spec = parse_spec(spec)
    size = spec.size or default_size
    if spec.kind == "synthetic":
        source = SyntheticCamera(int(spec.target or 0), size or settings.DEFAULT_FRAME_SIZE,
                                 fps=spec.fps or DEFAULT_FPS)
    elif spec.kind == "folder":
        source = FolderSource(spec.target, size, fps=spec.fps or DEFAULT_FPS)
    elif spec.kind == "video":
        source = CaptureSource(spec.target, size, fps=spec.fps, loop=True)
    elif spec.kind == "webcam":
        source = CaptureSource(int(spec.target or 0), size, fps=spec.fps)
    else:
        source = CaptureSource(spec.target, size, fps=spec.fps)
    if spec.faults:
        source = FaultySource(source, spec.faults, seed=int(spec.target or 0) if spec.kind == "synthetic" else 0)
    source.spec = spec.text
    return source


class Source:
    """What FrameGrabber reads. `fps` is the pace to read at; None when `read()` itself blocks
    until the next frame (webcam, stream)."""
    spec = ""
    fps = None

    def open(self):
        """Acquire the source; raises CameraError when it is not there."""

    def read(self):
        """The next Frame, or None when this read failed."""
        raise NotImplementedError

    def close(self):
        """Release the source; open() may be called again."""

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


def _fit(image, size):
    if size and (image.shape[1], image.shape[0]) != tuple(size):
        return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
    return image


class FolderSource(Source):
    """The images of a folder and its sub-folders in path order, in a loop; the folder is listed
    again at each lap, so files added or removed meanwhile are seen."""

    def __init__(self, folder, size=None, fps=DEFAULT_FPS):
        self.folder, self.size, self.fps = Path(folder), size, fps
        self.spec = f"folder:{folder}"
        self._files, self._next, self._seq = [], 0, 0

    def open(self):
        self._files, self._next = self._list(), 0

    def _list(self):
        try:
            if not self.folder.is_dir():
                raise FileNotFoundError(2, "no such folder")
            files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        except OSError as exc:
            raise CameraError(f"cannot list {self.folder}: {exc.strerror}") from None
        if not files:
            raise CameraError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.folder} or its sub-folders")
        return files

    def read(self):
        if self._next >= len(self._files):
            self._files, self._next = self._list(), 0
        path = self._files[self._next]
        self._next += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            return None
        self._seq += 1
        return Frame(self._seq, time.time(), _fit(image, self.size))


def quiet_opencv():
    """OpenCV's video backends print several warnings and errors per failed open to stderr (8 a
    retry for a missing webcam, into the journal); CameraError says what matters, once."""
    cv2.setLogLevel(OPENCV_LOG_FATAL)


class CaptureSource(Source):
    """Whatever cv2.VideoCapture opens: a video file (looped), a webcam index, an MJPEG/RTSP URL."""

    def __init__(self, target, size=None, fps=None, loop=False):
        self.target, self.size, self.loop = target, size, loop
        self.spec = str(target)
        self._wanted_fps, self.fps = fps, fps
        self._capture, self._seq = None, 0

    def open(self):
        if self.loop and not os.path.isfile(self.target):
            raise CameraError(f"video file not found: {self.target}")
        quiet_opencv()
        capture = cv2.VideoCapture(self.target, cv2.CAP_ANY, CAPTURE_TIMEOUTS)
        if not capture.isOpened():
            capture.release()
            raise CameraError(f"cannot open {self.target!r}")
        if isinstance(self.target, int) and self.size:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self.loop and not self._wanted_fps:
            native = capture.get(cv2.CAP_PROP_FPS)
            self.fps = native if 0 < native <= 240 else DEFAULT_FPS
        self._capture = capture

    def read(self):
        ok, image = self._capture.read()
        if not ok and self.loop:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
        if not ok or image is None:
            return None
        self._seq += 1
        return Frame(self._seq, time.time(), _fit(image, self.size))

    def close(self):
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class FaultySource(Source):
    """Wraps a source and, with the given probabilities, breaks its frames the way a real
    DeepLens stream does: `band` (the bottom 10-60% one flat colour, a partial MJPEG decode),
    `black`, `freeze` (the image last returned, again) and `drop` (a failed read)."""

    def __init__(self, source, faults, seed=0):
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise CameraError(f"unknown fault {sorted(unknown)[0]!r} (known: {', '.join(FAULTS)})")
        self.source, self.faults = source, dict(faults)
        self.spec, self.fps = source.spec, source.fps
        self._rng = np.random.default_rng(seed)
        self._previous = None

    def open(self):
        self.source.open()
        self.fps = self.source.fps

    def close(self):
        self.source.close()

    def read(self):
        frame = self.source.read()
        if frame is None:
            return None
        draw, fault = self._rng.random(), None
        for name, prob in self.faults.items():
            if draw < prob:
                fault = name
                break
            draw -= prob
        if fault == "drop":
            return None
        if fault == "black":
            frame = dataclasses.replace(frame, image=np.zeros_like(frame.image), truth=None, fault=fault)
        elif fault == "band":
            image = frame.image.copy()
            top = int(image.shape[0] * (1 - self._rng.uniform(0.1, 0.6)))
            image[top:] = DECODE_GREEN if self._rng.random() < 0.5 else self._rng.integers(0, 256, 3)
            frame = dataclasses.replace(frame, image=image, truth=None, fault=fault)
        elif fault == "freeze" and self._previous is not None:
            frame = dataclasses.replace(frame, image=self._previous.image, truth=self._previous.truth, fault=fault)
        self._previous = frame
        return frame


# --- synthetic scene ------------------------------------------------------------------------

CLASSES = ("note_2000", "note_1000")
NOTE_ASPECT = 2.2  # width / height of a banknote
ROLL_ROWS = 61  # rows of extra noise, rolled per frame so consecutive frames always differ


class SyntheticCamera(Source):
    """Banknote-like notes sliding onto a wooden table, resting, drifting and leaving.

    Deterministic from `seed` and the frame index (`render(index)`); every frame carries the
    true box of each visible object (clipped to the frame; objects mostly outside are left
    out). Textures and sprites are rendered once, so a frame costs one table copy plus pastes
    (about 1 ms at 1080p: the camera's work must not pass for the edge service's own).
    """

    def __init__(self, seed=0, size=settings.DEFAULT_FRAME_SIZE, fps=DEFAULT_FPS, objects=3):
        self.seed, self.size, self.fps = int(seed), (int(size[0]), int(size[1])), fps
        self.spec = f"synthetic:{self.seed}"
        rng = np.random.default_rng(self.seed)
        width, height = self.size
        self.table = _wood_table(rng, width, height)
        self._noise = rng.integers(0, 7, (height + ROLL_ROWS, width, 3), dtype=np.uint8)
        notes = [(_note_texture(0, side), _note_texture(1, side)) for side in (0, 1)]
        first_class = int(rng.integers(len(CLASSES)))  # alternate classes so each scene has both
        self._tracks = [_Track(rng, (first_class + k) % len(CLASSES), k, objects, width, height, notes)
                        for k in range(objects)]
        self._index = 0
        self._last_truth = []

    def render(self, index):
        """(image, truth) of frame `index`."""
        width, height = self.size
        offset = (index * 17) % ROLL_ROWS
        image = cv2.add(self.table, self._noise[offset:offset + height])
        truth = []
        for track in self._tracks:
            box = track.paste(image, index)
            if box is not None:
                truth.append({"class_id": track.class_id, "label": CLASSES[track.class_id], "box": box})
        return image, truth

    def read(self):
        image, truth = self.render(self._index)
        self._index += 1
        self._last_truth = truth
        return Frame(self._index - 1, time.time(), image, truth)

    def last_truth(self):
        """The true boxes of the last frame `read()` returned."""
        return self._last_truth


class _Track:
    """One note's cycle: slides in from outside, rests and drifts, slides out; repeats."""

    def __init__(self, rng, class_id, slot, slots, width, height, notes):
        self.class_id = class_id
        texture = notes[int(rng.integers(2))][self.class_id]
        note_w = int(width * rng.uniform(0.16, 0.26))
        note = cv2.resize(texture, (note_w, max(1, round(note_w / NOTE_ASPECT))), interpolation=cv2.INTER_AREA)
        self.sprite, mask = _rotated(note, rng.uniform(-40, 40))
        self.mask = mask.view(np.uint8)  # 0/1: cv2.copyTo's mask, 50x faster than a masked np.copyto
        self.area = int(self.mask.sum())
        sprite_h, sprite_w = self.mask.shape
        rest = np.array([(slot + rng.uniform(0.3, 0.7)) / slots * width, rng.uniform(0.3, 0.7) * height])
        drift = rng.uniform(-0.05, 0.05, 2) * (width, height)
        enter, leave = rng.choice(4, 2, replace=False)
        self.points = [_outside(rng, enter, width, height, sprite_w, sprite_h), rest, rest + drift,
                       _outside(rng, leave, width, height, sprite_w, sprite_h)]
        self.period = int(rng.integers(150, 400))
        self.phase = int(rng.integers(self.period))

    def centre(self, index):
        t = ((index + self.phase) % self.period) / self.period
        for start, end, (t0, t1) in zip(self.points, self.points[1:], ((0, .2), (.2, .8), (.8, 1))):
            if t < t1:
                return start + (end - start) * (t - t0) / (t1 - t0)
        return self.points[-1]

    def paste(self, image, index):
        """Paste this note into `image`; return the box of its visible part, or None when it is
        mostly (over half) outside the frame."""
        height, width = image.shape[:2]
        sprite_h, sprite_w = self.mask.shape
        cx, cy = self.centre(index)
        x0, y0 = int(round(cx - sprite_w / 2)), int(round(cy - sprite_h / 2))
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + sprite_w, width), min(y0 + sprite_h, height)
        if cx1 <= cx0 or cy1 <= cy0:
            return None
        crop = np.s_[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        visible = self.mask[crop]
        cv2.copyTo(self.sprite[crop], visible, image[cy0:cy1, cx0:cx1])
        if visible.shape == self.mask.shape:
            return [cx0, cy0, cx1, cy1]
        if visible.sum() < 0.5 * self.area:
            return None
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        return [cx0 + int(cols[0]), cy0 + int(rows[0]), cx0 + int(cols[-1]) + 1, cy0 + int(rows[-1]) + 1]


def _outside(rng, edge, width, height, sprite_w, sprite_h):
    """A centre on the given edge (0 left, 1 right, 2 top, 3 bottom) that hides the sprite."""
    along = rng.uniform(0.1, 0.9)
    return np.array([(-sprite_w / 2 - 2, along * height), (width + sprite_w / 2 + 2, along * height),
                     (along * width, -sprite_h / 2 - 2), (along * width, height + sprite_h / 2 + 2)][edge])


def _rotated(image, degrees):
    """`image` rotated on a canvas cropped to it, and the boolean mask of its pixels."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    out_w, out_h = int(math.ceil(w * cos + h * sin)), int(math.ceil(w * sin + h * cos))
    matrix[:, 2] += (out_w - w) / 2, (out_h - h) / 2
    # Replicated borders keep the edge pixels note-coloured rather than blended with black.
    sprite = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpAffine(np.full((h, w), 255, np.uint8), matrix, (out_w, out_h), flags=cv2.INTER_LINEAR) > 127
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return np.ascontiguousarray(sprite[crop]), np.ascontiguousarray(mask[crop])


def _wood_table(rng, width, height):
    """Brown planks with wavy grain, fibre streaks and a soft highlight, BGR uint8."""
    y = np.arange(height, dtype=np.float32)[:, None] / height
    x = np.arange(width, dtype=np.float32)[None, :] / width
    planks = rng.integers(3, 6)
    board = np.minimum((y * planks).astype(np.int32), planks - 1)
    tone = rng.uniform(-0.12, 0.12, planks).astype(np.float32)[board]
    wave = 0.02 * np.sin(2 * np.pi * (x * rng.uniform(1, 3) + rng.uniform(0, 1))) \
        + 0.006 * np.sin(2 * np.pi * x * rng.uniform(5, 9))
    grain = np.sin(2 * np.pi * (y + wave) * rng.uniform(40, 70))
    fibres = cv2.resize(rng.normal(0, 1, (height, max(8, width // 24))).astype(np.float32), (width, height))
    light = 1 - 0.35 * ((x - rng.uniform(0.3, 0.7)) ** 2 + (y - rng.uniform(0.3, 0.7)) ** 2)
    shade = (1 + tone + 0.10 * grain + 0.07 * fibres) * light
    seams = np.abs((y * planks) - np.round(y * planks)) * height / planks < 1.5
    shade = np.where(seams & (y > 0.01) & (y < 0.99), shade * 0.45, shade)
    base = np.array(rng.uniform((60, 80, 100), (75, 95, 125)), np.float32)  # BGR brown
    return np.clip(shade[..., None] * base, 0, 255).astype(np.uint8)


def _note_texture(class_id, side):
    """A 440x200 banknote face: tinted paper, guilloche pattern, a motif and printed digits.

    Class 0 (2000) is blue, class 1 (1000) green-grey; `side` 0/1 is front/back."""
    w, h = 440, 200
    paper, ink = [((235, 190, 120), (140, 70, 20)), ((190, 210, 175), (70, 100, 60))][class_id]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    freq = (0.09, 0.13)[class_id] * (1 + 0.3 * side)
    pattern = 0.5 + 0.5 * np.sin(freq * x + 6 * np.sin(0.05 * y)) * np.sin(freq * y + 4 * np.sin(0.04 * x))
    mix = (0.25 * pattern)[..., None]
    note = ((1 - mix) * np.array(paper, np.float32) + mix * np.array(ink, np.float32)).astype(np.uint8)
    cv2.rectangle(note, (6, 6), (w - 7, h - 7), ink, 4)
    motif_x = (150, 290)[side]
    if class_id == 0:
        cv2.ellipse(note, (motif_x, 100), (55, 70), 0, 0, 360, ink, -1)
        cv2.ellipse(note, (motif_x, 100), (35, 50), 0, 0, 360, paper, 3)
    else:
        for k in range(5):
            cv2.rectangle(note, (motif_x - 60 + k * 25, 60 + 8 * abs(2 - k)), (motif_x - 45 + k * 25, 150), ink, -1)
        cv2.rectangle(note, (motif_x - 70, 150), (motif_x + 70, 162), ink, -1)
    digits = ("2000", "1000")[class_id]
    font = cv2.FONT_HERSHEY_DUPLEX
    big_x = (260, 25)[side]
    cv2.putText(note, digits, (big_x, 185), font, 1.9, ink, 4, cv2.LINE_AA)
    cv2.putText(note, digits, ((25, 330)[side], 45), font, 0.9, ink, 2, cv2.LINE_AA)
    return note


# --- the continuous stream -----------------------------------------------------------------

class FrameGrabber:
    """Reads a source in a background thread at its pace and keeps only the latest Frame (and
    the one before it: `before`), as the device's camera stream runs whether or not anyone reads it.

    When reads keep failing or the source disappears it reports disconnected and reopens it
    with a capped exponential backoff; the thread never dies of a source error. Frames get a
    `seq` that keeps increasing across reconnects; `failures` in state() counts the reads that
    gave no frame and the opens that failed.
    """

    def __init__(self, spec_or_source, failures_to_reconnect=10, backoff=(0.5, 5.0)):
        self.source = source_from_spec(spec_or_source) if isinstance(spec_or_source, str) else spec_or_source
        self.failures_to_reconnect = failures_to_reconnect
        self.backoff = backoff
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = None
        self._latest = self._previous = None
        self._connected, self._error = False, None
        self._frames, self._failures = 0, 0
        self._times = collections.deque(maxlen=48)

    def start(self):
        if self._thread is None or not self._thread.is_alive():
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=f"camera {self.source.spec}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout=5.0):
        """Stop the thread; it exits within a frame (a blocking webcam read excepted)."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def connected(self):
        return self._connected

    def latest(self):
        return self._latest

    def before(self, frame):
        """The frame published just before `frame` while it is still held, else None: what tells
        a frozen frame (core.quality.check_frame)."""
        with self._changed:
            for held in (self._previous, self._latest):
                if held is not None and held.seq == frame.seq - 1:
                    return held
        return None

    def wait_next(self, after_seq=-1, timeout=None):
        """The latest frame once its seq is above `after_seq`; None on timeout or stop."""
        with self._changed:
            self._changed.wait_for(lambda: self._stopping.is_set()
                                   or (self._latest is not None and self._latest.seq > after_seq), timeout)
            frame = self._latest
        return frame if frame is not None and frame.seq > after_seq else None

    def state(self):
        times, now = list(self._times), time.monotonic()
        fps = 0.0
        if len(times) > 1 and now - times[-1] < 2.0:
            fps = (len(times) - 1) / max(times[-1] - times[0], 1e-6)
        return {"source": self.source.spec, "connected": self._connected, "error": self._error,
                "fps": round(fps, 1), "frames": self._frames, "failures": self._failures}

    def _run(self):
        delay = self.backoff[0]
        while not self._stopping.is_set():
            try:
                self._open_source()
                for _ in self._read_frames():
                    delay = self.backoff[0]
            except Exception as exc:  # any source error: report it and reopen, never die
                self._connected, self._error = False, str(exc) or type(exc).__name__
                log.warning("camera %s: %s; reopening in %.1f s", self.source.spec, self._error, delay)
            finally:
                self._close_source()
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, self.backoff[1])
        self._connected = False

    def _open_source(self):
        try:
            self.source.open()
        except Exception:
            self._failures += 1
            raise
        self._connected, self._error = True, None

    def _read_frames(self):
        """Read until stopped, yielding after each good frame; raise CameraError when reads keep
        failing."""
        period = 1.0 / self.source.fps if self.source.fps else None
        due, misses = time.monotonic(), 0
        while not self._stopping.is_set():
            if period:
                if self._stopping.wait(max(0.0, due - time.monotonic())):
                    return
                due = max(due + period, time.monotonic() - period)
            try:
                frame = self.source.read()
            except Exception:
                self._failures += 1
                raise
            if frame is None:
                self._failures += 1
                misses += 1
                if misses >= self.failures_to_reconnect:
                    raise CameraError(f"{misses} reads in a row failed")
                if period is None and self._stopping.wait(0.05):
                    return
                continue
            misses = 0
            self._publish(frame)
            yield frame

    def _publish(self, frame):
        with self._changed:
            self._previous, self._latest = self._latest, dataclasses.replace(frame, seq=self._frames)
            self._frames += 1
            self._times.append(time.monotonic())
            self._changed.notify_all()

    def _close_source(self):
        try:
            self.source.close()
        except Exception as exc:  # closing a broken source must not stop the reconnect loop
            log.debug("camera %s: close failed: %s", self.source.spec, exc)
