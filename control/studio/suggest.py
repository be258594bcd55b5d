"""Suggested boxes: a model's detections on a frame, offered to a person and never saved by themselves.

A model is the package of a finished run (`run:<name>`) or a device's active model
(`device:<id>`), fetched once per version into .studio/models/. Detections run through the one
detection path (core.detector) with the whole frame in view (crop stretch), and their classes
are matched by name onto the project's. MXNet is loaded with the first model, not before: a
studio that only labels stays small.
"""
import collections
import tarfile
import threading

from core.errors import InvalidInput, ModelError, NotFound
from core.package import MODEL_JSON, load_package

from ..dataset import ClassMap
from ..dataset.images import read_image

CACHED_DETECTORS = 2
SUGGEST_CROP = "stretch"  # proposals over the whole frame, not only the device's centre region


class Suggestions:
    def __init__(self, project, devices, runs):
        self.project, self.devices, self.runs = project, devices, runs
        self._detectors, self._lock = collections.OrderedDict(), threading.Lock()

    def models(self):
        """What can suggest: finished runs' packages, and the devices' active models (not fetched yet)."""
        found = []
        for run in self.runs.finished():
            package = run["package"]
            found.append({"id": f"run:{run['name']}", "name": package["name"], "version": package["version"],
                          "classes": package["classes"], "source": f"training run {run['name']}"})
        for device in self.devices.listing():
            found.append({"id": f"device:{device['id']}", "name": None, "version": None, "classes": None,
                          "source": f"the active model of {device['name']}"})
        return found

    def folder(self, model_id):
        kind, _, name = str(model_id).partition(":")
        if kind == "run":
            return self.runs.package_folder(name)
        if kind == "device":
            return self._device_model(name)
        raise InvalidInput(f"model must be run:<name> or device:<id>, got {model_id!r}", field="model")

    def _device_model(self, device_id):
        """The device's active package, downloaded once per version (GET /models/<v>/archive)."""
        client = self.devices.client(device_id)
        active = client.models().get("active")
        if not active:
            raise NotFound(f"{client.url} has no active model to suggest with", "no_active_model")
        folder = self.project.cache_dir / "models" / f"{device_id}-{active}"
        if not (folder / MODEL_JSON).is_file():
            partial = folder.with_name(folder.name + ".partial")
            partial.mkdir(parents=True, exist_ok=True)
            archive = partial / "package.tar.gz"
            with open(archive, "wb") as f:
                for block in client.archive(active):
                    f.write(block)
            with tarfile.open(archive) as tar:
                tar.extractall(partial, filter="data")
            archive.unlink()
            load_package(partial)  # refuse a damaged download before keeping it
            partial.replace(folder)
        return folder

    def detector(self, model_id):
        from core.detector import Detector
        folder = self.folder(model_id)
        key = (model_id, str(folder))
        with self._lock:
            if key not in self._detectors:
                try:
                    self._detectors[key] = Detector.open(folder, crop=SUGGEST_CROP)
                except ModelError as exc:
                    raise ModelError(f"cannot suggest with {model_id}: {exc}") from None
                while len(self._detectors) > CACHED_DETECTORS:
                    self._detectors.popitem(last=False)
            self._detectors.move_to_end(key)
            return self._detectors[key]

    def suggest(self, name, model_id, threshold=0.3):
        from core.detector import to_pixels
        if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise InvalidInput(f"threshold must be between 0 and 1, got {threshold!r}", field="threshold")
        detector = self.detector(model_id)
        image = read_image(str(self.project.image_path(name)))
        height, width = image.shape[:2]
        detections, _ = detector.detect(image, threshold)
        project = ClassMap(self.project.classes, fixed=True)
        boxes, unknown = [], set()
        rows = to_pixels([[d["class_id"], d["score"], *d["box"]] for d in detections], width, height)
        for detection, row in zip(detections, rows):
            class_id = project.id(detection["label"])
            if class_id is None:
                unknown.add(detection["label"])
                continue
            boxes.append({"class_id": class_id, "label": self.project.classes[class_id],
                          "score": round(float(detection["score"]), 3), "box": [round(float(v), 1) for v in row[2:]]})
        return {"model": model_id, "version": detector.version, "boxes": boxes, "unknown_classes": sorted(unknown)}


