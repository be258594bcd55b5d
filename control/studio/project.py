"""A studio project: frames in a folder, their labels in one SageMaker manifest (docs/studio.md).

The manifest is the only home of the labels, so the CLI round (`train`, `manifest validate`)
reads what the studio writes. Every change rewrites it atomically before the answer goes out,
under one lock; a change made by someone else (another tab, the CLI) is noticed by the file's
stamp, and a save that started from labels since changed is refused (each frame's `etag`).
"""
import hashlib
import json
import os
import re
import shutil
import threading
from pathlib import Path

import cv2

from core.dhash import dhash
from core.errors import Conflict, InvalidInput, NotFound
from core.fileio import atomic_write_bytes, atomic_write_text, remove_leftovers
from core.quality import check_frame

from ..dataset import Box, ClassMap, Collector, Dataset, Image, read as read_dataset
from ..dataset import sagemaker
from ..dataset.images import read_image
from ..dataset.split import group_near_duplicates

PROJECT_JSON = "project.json"
LABELS = "labels.manifest"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
FILTERS = ("all", "unlabelled", "labelled", "empty", "problems", "duplicates")
THUMB_WIDTH = 160
DUPLICATE_BITS = 10  # the pull's default near-duplicate distance


class Frame:
    """What the gallery needs of one image, read once from its sidecar (or the pixels)."""
    __slots__ = ("name", "width", "height", "dhash", "broken")

    def __init__(self, name, width, height, digest, broken):
        self.name, self.width, self.height, self.dhash, self.broken = name, width, height, digest, broken


class Project:
    def __init__(self, folder):
        self.folder = Path(folder).resolve()
        self.frames_dir, self.excluded_dir = self.folder / "frames", self.folder / "excluded"
        self.runs_dir, self.cache_dir = self.folder / "runs", self.folder / ".studio"
        for path in (self.frames_dir, self.excluded_dir, self.runs_dir, self.cache_dir / "thumbs"):
            path.mkdir(parents=True, exist_ok=True)
        self.manifest = self.folder / LABELS
        remove_leftovers(self.manifest)
        self.lock = threading.RLock()
        self._frames, self._frames_stamp = {}, None
        self._labels, self._foreign, self._stamp = {}, [], None
        self._problems, self._problems_stamp = None, None
        self._group_of, self._groups_stamp = {}, None
        self._lines, self._lines_classes, self._meta = {}, None, None  # name -> (labels entry, manifest line)
        self._settings = self._read_settings()
        self._load_labels()

    # -- settings: classes and typed devices ---------------------------------------------------
    def _read_settings(self):
        path = self.folder / PROJECT_JSON
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            doc = {}
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{path}: not a readable JSON document ({exc})") from None
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k, []), list) for k in ("classes", "devices")):
            raise InvalidInput(f"{path}: must be {{\"classes\": [names], \"devices\": [urls]}}")
        return {"classes": [str(c) for c in doc.get("classes", [])], "devices": list(doc.get("devices", []))}

    def _write_settings(self):
        atomic_write_text(self.folder / PROJECT_JSON, json.dumps(self._settings, indent=1) + "\n")

    @property
    def classes(self):
        return list(self._settings["classes"])

    @property
    def devices(self):
        return list(self._settings["devices"])

    def add_device(self, url):
        with self.lock:
            if url not in self._settings["devices"]:
                self._settings["devices"].append(url)
                self._write_settings()

    def set_classes(self, names):
        """The class list may only grow at its end: ids in the manifest never change meaning."""
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInput("classes must be a list of names", field="classes")
        names = [n.strip() for n in names]
        with self.lock:
            current = self._settings["classes"]
            if names[:len(current)] != current:
                raise Conflict(f"classes can only be added at the end; the list is {current}", "classes_fixed",
                               "classes")
            keys = [ClassMap.key(n) for n in names]
            if any(not n for n in names) or len(set(keys)) != len(keys):
                raise InvalidInput("class names must be non-empty and distinct (case, spaces, _ and - aside)",
                                   field="classes")
            if names != current:
                self._settings["classes"] = names
                self._write_settings()
                self._write_labels()
            return self.classes

    def _class_ids(self, names):
        """Project ids of a source's class names, new names appended to the project's classes."""
        mapping = ClassMap(self._settings["classes"])
        ids = [mapping.id(name) for name in names]
        if len(mapping) != len(self._settings["classes"]):
            self._settings["classes"] = list(mapping.names)
            self._write_settings()
        return ids

    # -- frames --------------------------------------------------------------------------------
    def frames(self):
        """{name: Frame} of every image in frames/, refreshed when the folder changes."""
        with self.lock:
            stamp = os.stat(self.frames_dir).st_mtime_ns
            if stamp != self._frames_stamp:
                found = {}
                for entry in os.scandir(self.frames_dir):
                    if entry.name.lower().endswith(IMAGE_EXTENSIONS) and not entry.name.startswith("."):
                        found[entry.name] = self._frames.get(entry.name) or self._read_frame(entry.name)
                self._frames, self._frames_stamp = dict(sorted(found.items())), stamp
            return self._frames

    def _read_frame(self, name):
        """Size and hash from the sidecar when it has them (no pixels read: the pull refuses broken
        frames, an import records its check), else from the image."""
        path = self.frames_dir / name
        meta = {}
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
        if all(k in meta for k in ("width", "height", "dhash")):
            return Frame(name, meta["width"], meta["height"], int(meta["dhash"], 16), meta.get("broken"))
        try:
            pixels = read_image(str(path))
        except (OSError, ValueError):
            return Frame(name, meta.get("width", 0), meta.get("height", 0), None, "unreadable image")
        return Frame(name, pixels.shape[1], pixels.shape[0], dhash(pixels), check_frame(pixels) or None)

    def frame(self, name):
        frame = self.frames().get(name)
        if frame is None:
            raise NotFound(f"no frame {name!r} in {self.frames_dir}", "no_frame")
        return frame

    def write_missing_sidecars(self):
        """A sidecar (size, hash) for every frame that lacks one, e.g. images copied in by hand:
        the pull treats a frame image without its sidecar as a killed write and removes it."""
        with self.lock:
            for frame in self.frames().values():
                sidecar = (self.frames_dir / frame.name).with_suffix(".json")
                if not sidecar.exists() and frame.dhash is not None:
                    atomic_write_text(sidecar, json.dumps({"file": frame.name, "width": frame.width, "height": frame.height,
                                                           "dhash": f"{frame.dhash:016x}", "broken": frame.broken}) + "\n")

    def image_path(self, name):
        return self.frames_dir / self.frame(name).name

    def thumbnail(self, name, pixels=None):
        """A JPEG at most THUMB_WIDTH wide, made once and kept under .studio/thumbs/ (`pixels`:
        the image when the caller has it decoded already)."""
        source = self.image_path(name)
        thumb = self.cache_dir / "thumbs" / (name + ".jpg")
        if not thumb.is_file() or thumb.stat().st_mtime_ns < source.stat().st_mtime_ns:
            pixels = read_image(str(source)) if pixels is None else pixels
            scale = min(1.0, THUMB_WIDTH / pixels.shape[1])
            small = cv2.resize(pixels, (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale))),
                               interpolation=cv2.INTER_AREA)
            atomic_write_bytes(thumb, cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes(),
                               durable=False)  # a cache: made again if a power cut loses it
        return thumb

    def make_thumbnails(self):
        """Thumbnails of every frame that has none yet (frames pulled on the command line, a
        capture just done), so that the gallery does not wait for them."""
        for name in list(self.frames()):
            try:
                self.thumbnail(name)
            except (OSError, ValueError, NotFound):  # unreadable, or excluded meanwhile: the gallery says so
                continue

    # -- labels: the manifest --------------------------------------------------------------------
    def _manifest_stamp(self):
        try:
            stat = os.stat(self.manifest)
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _load_labels(self):
        """Labels of frames/ images from the manifest; lines about other images are kept as they are."""
        labels, foreign = {}, []
        if self.manifest.is_file():
            problems = []
            records = sagemaker.parse(self.manifest, problems=problems)
            if problems:
                raise InvalidInput(f"{self.manifest}: damaged, the studio will not overwrite it:\n"
                                   + "\n".join(f"  {p}" for p in problems))
            for record in records:
                names = record.names or {}
                source_names = [names.get(cid, str(cid)) for cid, *_ in record.annotations]
                ids = self._class_ids(source_names)
                boxes = [(cid, left, top, left + width, top + height)
                         for cid, (_, left, top, width, height, _) in zip(ids, record.annotations)]
                name = record.ref[len("frames/"):] if record.ref.startswith("frames/") else None
                if name and "/" not in name:
                    labels[name] = (record.size, boxes)
                else:
                    foreign.append((record.ref, record.size, boxes))
        self._labels, self._foreign, self._stamp = labels, foreign, self._manifest_stamp()

    def _fresh(self):
        """Reload when someone else wrote the manifest since this process last read or wrote it."""
        if self._manifest_stamp() != self._stamp:
            self._load_labels()

    def _write_labels(self):
        """Rewrite the manifest atomically. Each frame's line is made once per change of its labels
        (or of the classes), so a save costs one line's JSON and one write of the file."""
        classes = self._settings["classes"]
        if self._lines_classes != classes:
            self._meta, self._lines, self._lines_classes = sagemaker.metadata(classes), {}, list(classes)
        text = []
        for name, entry in sorted(self._labels.items()):
            cached = self._lines.get(name)
            if cached is None or cached[0] is not entry:
                size, boxes = entry
                image = Image(str(self.frames_dir / name), size[0], size[1], _boxes(boxes, classes))
                cached = self._lines[name] = (entry, sagemaker.line(f"frames/{name}", image, [b[0] for b in boxes],
                                                                    self._meta))
            text.append(cached[1])
        for ref, size, boxes in self._foreign:
            image = Image(None, size[0], size[1], _boxes(boxes, classes), ref=ref)
            text.append(sagemaker.line(ref, image, [b[0] for b in boxes], self._meta))
        atomic_write_text(self.manifest, "".join(text))
        self._stamp = self._manifest_stamp()
        self._problems = None

    def labels(self, name):
        with self.lock:
            self._fresh()
            return self._document(self.frame(name))

    def _document(self, frame):
        entry = self._labels.get(frame.name)
        boxes = entry[1] if entry else []
        state = "unlabelled" if entry is None else ("labelled" if boxes else "empty")
        classes = self._settings["classes"]
        return {"name": frame.name, "width": frame.width, "height": frame.height, "state": state,
                "boxes": [{"class_id": cid, "label": classes[cid] if cid < len(classes) else str(cid),
                           "box": [_round(v) for v in box]} for cid, *box in boxes],
                "etag": _etag(entry)}

    def save(self, name, boxes, etag):
        """Set a frame's boxes (`None`: unlabelled again), if its labels are still those of `etag`."""
        with self.lock:
            self._fresh()
            frame = self.frame(name)
            entry = self._labels.get(name)
            if etag != _etag(entry):
                error = Conflict(f"{name} was changed elsewhere (another tab or the command line) since you opened "
                                 "it; the first save wins: showing the saved labels", "edited_elsewhere")
                error.extra = {"current": self._document(frame)}
                raise error
            if boxes is None:
                self._labels.pop(name, None)
            else:
                self._labels[name] = ((frame.width, frame.height), self._checked(frame, boxes))
            self._write_labels()
            return self._document(frame)

    def _checked(self, frame, boxes):
        if not isinstance(boxes, list):
            raise InvalidInput("boxes must be a list of {class_id, box: [xmin, ymin, xmax, ymax]}", field="boxes")
        checked, classes = [], self._settings["classes"]
        for index, item in enumerate(boxes):
            field = f"boxes[{index}]"
            try:
                cid = item["class_id"]
                x0, y0, x1, y1 = (float(v) for v in item["box"])
            except (TypeError, KeyError, ValueError):
                raise InvalidInput(f"{field}: must be {{class_id, box: [xmin, ymin, xmax, ymax]}}", field=field) from None
            if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid < len(classes):
                raise InvalidInput(f"{field}.class_id: {cid!r} is not a class of this project ({classes})",
                                   field=field + ".class_id")
            if not (0 <= x0 < x1 <= frame.width and 0 <= y0 < y1 <= frame.height):
                raise InvalidInput(f"{field}.box: {[x0, y0, x1, y1]} is empty or outside the "
                                   f"{frame.width}x{frame.height} image", field=field + ".box")
            checked.append((cid, x0, y0, x1, y1))
        return checked

    # -- the gallery ------------------------------------------------------------------------------
    def counts(self):
        with self.lock:
            self._fresh()
            frames = self.frames()
            states = [self._state(name) for name in frames]
            return {"frames": len(frames), "unlabelled": states.count("unlabelled"),
                    "labelled": states.count("labelled"), "empty": states.count("empty"),
                    "excluded": sum(1 for p in self.excluded_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                    "problems": len(self.problems())}

    def _state(self, name):
        entry = self._labels.get(name)
        return "unlabelled" if entry is None else ("labelled" if entry[1] else "empty")

    def listing(self, filter="all", offset=0, limit=200):
        if filter not in FILTERS:
            raise InvalidInput(f"filter must be one of {', '.join(FILTERS)}, got {filter!r}", field="filter")
        with self.lock:
            self._fresh()
            frames = list(self.frames().values())
            problems = self.problems()
            groups = self._groups(frames)
            if filter == "duplicates":
                sizes = {}
                for g in groups.values():
                    sizes[g] = sizes.get(g, 0) + 1
                frames = sorted((f for f in frames if sizes[groups[f.name]] > 1), key=lambda f: (groups[f.name], f.name))
            elif filter == "problems":
                frames = [f for f in frames if f.name in problems]
            elif filter != "all":
                frames = [f for f in frames if self._state(f.name) == filter]
            page = frames[offset:offset + limit]
            return {"total": len(frames), "frames": [
                {"name": f.name, "width": f.width, "height": f.height, "state": self._state(f.name),
                 "boxes": len(self._labels.get(f.name, (None, []))[1]), "etag": _etag(self._labels.get(f.name)),
                 "problems": problems.get(f.name, []), "group": groups[f.name]} for f in page]}

    def _groups(self, frames):
        """Near-duplicate group numbers (the pull's dhash distance), numbered in frame order; kept
        until the frames change."""
        if self._groups_stamp != self._frames_stamp:
            ids = group_near_duplicates([f.dhash for f in frames], DUPLICATE_BITS)
            numbers = {}
            self._group_of = {f.name: numbers.setdefault(g, len(numbers)) for f, g in zip(frames, ids)}
            self._groups_stamp = self._frames_stamp
        return self._group_of

    def problems(self):
        """{frame name: [messages]} of errors: broken frames and what `manifest validate` finds."""
        with self.lock:
            key = (self._stamp, self._frames_stamp)
            if self._problems is not None and self._problems_stamp == key:
                return self._problems
            found = {}
            for frame in self.frames().values():
                if frame.broken:
                    found.setdefault(frame.name, []).append(f"broken frame: {frame.broken}")
            if self.manifest.is_file():
                collector = Collector(self._settings["classes"] or None, str(self.folder))
                lines = {r.line: r.ref for r in sagemaker.parse(self.manifest, problems=[])}
                for problem in sagemaker.validate(collector, self.manifest, check_pixels=False):
                    ref = lines.get(problem.line, "")
                    if problem.severity == "error" and ref.startswith("frames/"):
                        found.setdefault(ref[len("frames/"):], []).append(f"{problem.field}: {problem.message}")
            self._problems, self._problems_stamp = found, key
            return found

    # -- taking frames out, bringing labelled sets in ------------------------------------------------
    def exclude(self, names):
        """Move frames (and sidecars) to excluded/ and drop their labels; nothing is deleted."""
        with self.lock:
            self._fresh()
            moved = []
            for name in names:
                frame = self.frame(name)
                target = _free_name(self.excluded_dir, frame.name)
                sidecar = (self.frames_dir / frame.name).with_suffix(".json")
                if sidecar.is_file():
                    os.replace(sidecar, (self.excluded_dir / target).with_suffix(".json"))
                os.replace(self.frames_dir / frame.name, self.excluded_dir / target)
                self._labels.pop(frame.name, None)
                moved.append(frame.name)
            if moved:
                self._write_labels()
            return moved

    def exclude_invalid(self):
        return self.exclude(sorted(self.problems()))

    def import_labels(self, path, format, progress=None):
        """Copy the images of an export (any `labels import` format) into frames/ and their labels
        into the manifest. Plain images without labels arrive unlabelled; what the reader found
        wrong (and left out) is listed in the answer."""
        dataset, problems = read_dataset(format, [path])
        added = labelled = 0
        with self.lock:
            self._fresh()
            ids = self._class_ids(dataset.classes)
            number = self._next_number()
            for image in dataset.images:
                if not image.path:
                    continue
                name = f"frame_{number:06d}{Path(image.path).suffix.lower() or '.jpg'}"
                number += 1
                pixels = read_image(image.path)
                shutil.copyfile(image.path, self.frames_dir / name)
                broken = check_frame(pixels)
                sidecar = {"file": name, "imported_from": os.path.abspath(image.path), "width": pixels.shape[1],
                           "height": pixels.shape[0], "dhash": f"{dhash(pixels):016x}", "broken": broken or None}
                atomic_write_text((self.frames_dir / name).with_suffix(".json"), json.dumps(sidecar, indent=1) + "\n")
                self.thumbnail(name, pixels)
                added += 1
                if image.boxes or format != "images":
                    boxes = [(ids[dataset.class_id(b.label)], b.xmin, b.ymin, b.xmax, b.ymax) for b in image.boxes]
                    self._labels[name] = ((image.width, image.height), boxes)
                    labelled += 1
                if progress:
                    progress(added, len(dataset.images))
            self._write_labels()
        return {"added": added, "labelled": labelled, "classes": self.classes,
                "problems": [str(p) for p in problems]}

    def _next_number(self):
        """The next free frame number (the pull numbers its frames the same way)."""
        numbers = [int(m.group(1)) for p in self.frames_dir.iterdir()
                   for m in [re.match(r"frame_(\d{6,})\.", p.name)] if m]
        return max(numbers, default=-1) + 1

    def labelled_dataset(self):
        """The labelled frames (empty ones included) as a Dataset, for training."""
        with self.lock:
            self._fresh()
            classes = self._settings["classes"]
            images = [Image(str(self.frames_dir / name), size[0], size[1], _boxes(boxes, classes))
                      for name, (size, boxes) in sorted(self._labels.items()) if name in self.frames()]
            return Dataset(images, classes)


def _boxes(boxes, classes):
    return [Box(classes[cid] if cid < len(classes) else str(cid), x0, y0, x1, y1) for cid, x0, y0, x1, y1 in boxes]


def _round(value):
    return round(float(value), 3)


def _etag(entry):
    """A digest of one frame's labels: what a save must start from."""
    if entry is None:
        return "unlabelled"
    text = json.dumps([[cid, *(_round(v) for v in box)] for cid, *box in entry[1]])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _free_name(folder, name):
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 1
    while (folder / candidate).exists():
        candidate, n = f"{stem}-{n}{suffix}", n + 1
    return candidate

