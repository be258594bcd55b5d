"""`deeplens-ctl swap-model`: pack a model, send it to a device, switch to it, and follow the
device's health check and first detections (over MQTT, else by polling /status).

The device side of each step is the REST API (core.client) and the MQTT topics (core.watch).
"""
import contextlib
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

from core.errors import DeviceError, ModelError
from core.package import MODEL_JSON, load_package
from core.watch import Watcher


def find_package(path):
    """The package to send: a .tar.gz, a package folder, or a `deeplens-ctl train` run folder (its model/)."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path, path / "model"):
        if (folder / MODEL_JSON).is_file():
            return folder
    raise DeviceError(f"{path}: neither a package (.tar.gz or a folder with {MODEL_JSON}) nor a training run "
                      f"with an exported model/ (has the run finished?)")


@contextlib.contextmanager
def packed(path):
    """Yields (archive path, model.json dict) for a package folder, run folder or archive."""
    source = find_package(path)
    if source.is_file():
        yield source, _archive_meta(source)
        return
    try:
        pkg = load_package(source)
    except ModelError as exc:
        raise DeviceError(f"not sending a broken package: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="deeplens-swap-") as tmp:
        archive = Path(tmp) / f"{pkg.name}-{pkg.version}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for name in (MODEL_JSON, *pkg.files):
                tar.add(source / name, arcname=name, recursive=False)
        yield archive, pkg.to_json()


def _archive_meta(archive):
    try:
        with tarfile.open(archive, "r:*") as tar:
            member = next(m for m in tar.getmembers() if m.name.lstrip("./") == MODEL_JSON)
            return json.load(tar.extractfile(member))
    except (tarfile.TarError, StopIteration, ValueError, OSError) as exc:
        raise DeviceError(f"{archive}: not a package archive with {MODEL_JSON} ({exc or 'missing'})") from None


def swap(client, path, activate=True, wait=60.0, progress=None, progress_start=None, phase=None):
    """Upload a package (folder, run folder or archive), activate it, and wait for the device to
    call it healthy and for its first detections. Returns a summary dict; DeviceError otherwise.

    `progress_start(total_bytes)` and `progress(bytes)` drive a progress bar; `phase(name)` is
    told each step as it begins: upload, activate, health, detections.
    """
    phase = phase or (lambda name: None)
    with packed(path) as (archive, meta), contextlib.ExitStack() as stack:
        watcher = stack.enter_context(Watcher(client)) if activate and wait else None
        if progress_start:
            progress_start(os.path.getsize(archive))
        started = time.monotonic()
        phase("upload")
        stored = client.upload(archive, progress)
        result = {"version": stored["version"], "stored": stored}
        if not activate:
            return result
        phase("activate")
        models = client.activate(stored["version"])
        result["swap"] = models["last_swap"]
        if watcher is None:
            return result
        deadline = started + wait
        phase("health")
        result["status"] = watcher.wait_outcome(models["last_swap"], deadline)["models"]
        result["over_mqtt"] = watcher.over_mqtt
        if watcher.problem:
            result["mqtt_problem"] = watcher.problem
        if watcher.over_mqtt:
            phase("detections")
            arrived, event = watcher.first_detections(stored["version"], max(deadline, time.monotonic() + 5))
            if event is not None:
                result["first_detections"] = event
                result["first_detection_s"] = round(arrived - started, 3)
        return result
