"""The DeepLens `awscam` module: `getLastFrame()` and `Model`, spelt as on the device.

Frames come from the camera SPEC in `DEEPLENS_CAMERA` (default: the synthetic camera), read
continuously by a background thread started on the first `getLastFrame()`, at the size in
`DEEPLENS_FRAME_SIZE` when set. Models run on the CPU with MXNet (core.runtime), whatever
`loading_config` asks, from the `.xml` that `mo.optimize` writes, a `<name>-symbol.json`
beside its model.json, or a model package folder.
"""
import atexit
import threading
from pathlib import Path

import numpy as np

from mo import read_descriptor
from shims import settings
from shims.camera import FrameGrabber, parse_size, source_from_spec
from core.detector import Detector, to_pixels
from core.errors import ModelError
from core.package import MODEL_JSON, load_package
from core.runtime import MXNetModel

FIRST_FRAME_TIMEOUT = 10.0  # seconds the first getLastFrame() waits for the camera to start

_grabber = None
_grabber_lock = threading.Lock()


class Runtime:
    DLDT = 0
    NEO = 1


def getLastFrame():
    """`(True, frame)` with a copy of the newest BGR frame, or `(False, None)` when the camera
    gives none (not started within FIRST_FRAME_TIMEOUT, or disconnected)."""
    grabber = _camera()
    frame = grabber.latest() or grabber.wait_next(-1, timeout=FIRST_FRAME_TIMEOUT)
    if frame is None or not grabber.connected:
        return False, None
    return True, frame.image.copy()


def _camera():
    global _grabber
    with _grabber_lock:
        if _grabber is None:
            size = settings.frame_size()
            source = source_from_spec(settings.camera_spec(),
                                      default_size=parse_size(size, "DEEPLENS_FRAME_SIZE") if size else None)
            _grabber = FrameGrabber(source).start()
            atexit.register(_grabber.stop)
        return _grabber


class Model:
    """A model loaded for inference, as `awscam.Model(path, {'GPU': 1})` on the device.

    Runtime.NEO only changes the result shapes as on the device: doInference keys outputs by
    ordinal and parseResult returns them unchanged.
    """

    def __init__(self, model_topology_file, loading_config, runtime=Runtime.DLDT):
        if runtime not in (Runtime.DLDT, Runtime.NEO):
            raise ValueError(f"runtime must be awscam.Runtime.DLDT (0) or NEO (1), got {runtime!r}")
        self._runtime = runtime
        self._detector = Detector(_load(Path(model_topology_file)), crop="stretch")

    def doInference(self, frame):
        """{output name: numpy array} for a BGR frame, resized to the input if it is not."""
        detector = self._detector
        outputs = detector.infer(detector.preprocess(frame)[0])
        if self._runtime == Runtime.NEO:
            return dict(enumerate(outputs.values()))
        return outputs

    def parseResult(self, model_type, raw):
        """'ssd': boxes in pixels of the model input, best first, suppressed rows dropped;
        'classification': every class with its probability, best first."""
        if self._runtime == Runtime.NEO:
            return raw
        if model_type == "ssd":
            size = self._detector.model.width, self._detector.model.height
            rows = to_pixels(self._detector.rows(raw, (0, 0, *size), size), *size)
            return {"ssd": [{"label": int(row[0]), "prob": float(row[1]), "xmin": float(row[2]),
                             "ymin": float(row[3]), "xmax": float(row[4]), "ymax": float(row[5])}
                            for row in rows]}
        if model_type == "classification":
            probs = np.asarray(next(iter(raw.values()))).reshape(-1)
            return {"classification": [{"label": int(label), "prob": float(probs[label])}
                                       for label in np.argsort(-probs, kind="stable")]}
        raise ValueError(f"model_type {model_type!r} is not parsed by this shim: use 'ssd' or 'classification'")


def _load(path):
    if path.is_dir():
        return MXNetModel.from_package(load_package(path))
    if not path.exists():
        raise ModelError("not found", path)
    if path.suffix == ".xml":
        return MXNetModel(*read_descriptor(path))
    if path.name.endswith("-symbol.json"):
        name = path.name[:-len("-symbol.json")]
        if not (path.parent / MODEL_JSON).is_file():
            raise ModelError(f"input size unknown: run mo.optimize({name!r}, width, height) "
                             f"and load the .xml, or keep the package's {MODEL_JSON} beside it", path)
        pkg = load_package(path.parent)
        if pkg.name != name:
            raise ModelError(f"{MODEL_JSON} there describes model {pkg.name!r}, not {name!r}", path)
        return MXNetModel.from_package(pkg)
    raise ModelError("expected the .xml from mo.optimize, a <name>-symbol.json or a model package folder", path)
