"""Starts and stops the service's parts in order, and holds them for the REST API.

Start: state folder -> threshold -> camera -> broker -> MQTT publisher -> model -> inference
loop -> status heartbeat. Stop runs the other way round. A part that cannot start (no model,
no broker, no camera yet) leaves the service running with the reason in /status.

Model swaps (activate, rollback) load and warm the new detector in the caller's thread while
the loop keeps serving the old one, switch it in between two frames, and let a HealthGate
watch its first frames; one swap runs at a time, the others are told 409.
"""
import concurrent.futures
import datetime
import functools
import logging
import secrets
import signal
import threading
import time

import numpy as np

from shims.camera import FrameGrabber
from shims.errors import ModelError
from shims.fileio import atomic_write_text

from . import events
from .broker import start_broker
from .detector import Detector, find_package
from .errors import ApiError
from .inference import STAGES, HealthGate, InferenceLoop
from .store import MB, ModelStore
from .threshold import Threshold

log = logging.getLogger(__name__)
STATUS_INTERVAL = 10.0


def camera_spec(config):
    """The configured camera, with the configured frame size for synthetic scenes."""
    spec = config.camera
    if spec.split(":", 1)[0].split("?", 1)[0] == "synthetic" and "size=" not in spec:
        spec += ("&" if "?" in spec else "?") + f"size={config.frame_size}"
    return spec


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


IDLE = {"state": "idle"}


class Runtime:
    def __init__(self, config):
        self.config = config
        self.started_at = time.time()
        self.model_error = None
        self.broker_address = None
        self._broker = None
        self._stop_event = threading.Event()
        self._status_thread = None
        self.threshold = self.grabber = self.publisher = self.loop = None
        self.store = ModelStore(config.store_path, keep=config.keep_versions)
        self._swap_lock = threading.Lock()
        # One thread loads every model: MXNet keeps per-thread caches (~6 MB a thread here), so
        # loading in whichever HTTP thread asked would grow the service with each new thread.
        self._loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model loader")
        self.swap, self.last_swap, self.last_rollback = IDLE, None, None

    @property
    def camera_is_live(self):
        """A folder of stills repeats frames by design; only live sources can freeze."""
        return not self.config.camera.startswith("folder:")

    # -- start / stop -------------------------------------------------------------------------
    def start(self):
        config = self.config
        config.state_path.mkdir(parents=True, exist_ok=True)
        self.threshold = Threshold(config.state_path, config.threshold)
        self.grabber = FrameGrabber(camera_spec(config))
        self.grabber.start()
        self.broker_address, self._broker = start_broker(config)
        self.publisher = events.from_config(config, self.broker_address)
        self.publisher.start()
        self.publisher.on_command("threshold/set", self._threshold_command)
        recheck = self._recover_store()
        self.loop = InferenceLoop(self.grabber, self.threshold, self.publisher,
                                  detector=self._load_detector(), max_event_rate=config.max_event_rate)
        self.loop.start()
        if recheck:
            threading.Thread(target=self._recheck, args=(recheck,), name="recheck model", daemon=True).start()
        self._status_thread = threading.Thread(target=self._status_heartbeat, name="status", daemon=True)
        self._status_thread.start()
        return self

    def stop(self):
        self._stop_event.set()
        self._loader.shutdown(wait=False, cancel_futures=True)
        for part in (self.loop, self.publisher, self.grabber, self._broker):
            if part is not None:
                part.stop()

    def _load_detector(self):
        """The store's active version, else a package found in the artifacts folder, else none."""
        active = self.store.active
        try:
            folder = self.store.require(active).folder if active else find_package(self.config.artifacts, self.config.model)
            detector = Detector(folder, crop=self.config.crop)
        except ModelError as exc:
            self.model_error = str(exc)
            log.warning("running capture-only: no usable model", extra={"fields": {"reason": exc}})
            return None
        log.info("model loaded", extra={"fields": {"name": detector.name, "version": detector.version}})
        return detector

    # -- model store and hot swap -------------------------------------------------------------
    def _recover_store(self):
        """Clear a crash's leftovers. A version killed during its health check goes back to trial:
        the service starts on the version before it, then checks it again. Returns that version."""
        try:
            pointer = self.store.recover()
        except OSError as exc:  # e.g. an artifacts folder this user cannot write: serve without a store
            log.warning("model store unavailable", extra={"fields": {"path": self.store.root, "error": exc}})
            return None
        if not pointer["trial"]:
            return None
        target = self.store.rollback_target(pointer)
        if target:
            self.store.step_back(target)
        else:
            self.store.restore({**pointer, "version": None})
        return pointer["version"]

    def _recheck(self, version):
        try:
            self.activate(version)
        except ApiError as exc:
            log.warning("could not check again the version a restart interrupted",
                        extra={"fields": {"version": version, "error": exc.message}})

    def expected_input(self):
        """(width, height) an uploaded model must take: configured, else the active model's, else any."""
        if self.config.model_input:
            return tuple(int(v) for v in self.config.model_input.lower().split("x"))
        detector = self.loop.detector
        return (detector.model.width, detector.model.height) if detector else None

    def prepare(self, folder):
        """Load a package and warm it up on the latest camera frame, beside the serving model."""
        return self._loader.submit(self._prepare, folder).result()

    def _prepare(self, folder):
        detector = Detector(folder, crop=self.config.crop)
        frame = self.grabber.latest()
        width, height = self.config.frame_dims
        detector.warm(frame.image if frame is not None else np.zeros((height, width, 3), np.uint8))
        return detector

    def activate(self, version):
        """Switch to a stored version; returns once it serves (its health check still running)."""
        entry = self.store.require(version)
        if entry.bad:
            raise ApiError(409, "version_bad", f"{version} is marked bad ({entry.bad['reason']}); "
                           "delete it and upload it again to retry")
        self._swap_to(entry, self.store.switch, "activate")

    def rollback(self):
        """Go back to the newest earlier version that is stored and not marked bad."""
        target = self.store.rollback_target()
        if target is None:
            raise ApiError(409, "no_rollback_target", "no earlier good version is stored to roll back to")
        self._swap_to(self.store.require(target), self.store.step_back, "rollback")

    def delete_version(self, version):
        self._begin("delete", version)
        try:
            self.store.delete(version)
        finally:
            self._finish()

    def _begin(self, kind, version):
        if not self._swap_lock.acquire(blocking=False):
            busy = self.swap
            raise ApiError(409, "swap_in_progress", f"another change of the model is in progress ({busy['kind']} "
                           f"{busy['version']}, {busy['state']}); try again when /status shows models.swap idle")
        self.swap = {"state": "loading", "kind": kind, "version": version, "since": _now()}

    def _finish(self):
        self.swap = IDLE
        self._swap_lock.release()

    def _swap_to(self, entry, move, kind):
        self._begin(kind, entry.version)
        try:
            try:
                detector = self.prepare(entry.folder)
            except ModelError as exc:
                self.store.mark_bad(entry.version, str(exc))
                raise ApiError(422, "model_failed", f"{entry.version} was not switched in: {exc}") from None
            before = move(entry.version)
        except BaseException:
            self._finish()
            raise
        fallback = self.loop.detector
        self.last_swap = {"kind": kind, "from": fallback.version if fallback else None, "to": entry.version,
                          "at": _now(), "warm_ms": round(detector.warm_ms, 2), "result": "watching"}
        if kind == "rollback":
            self.last_rollback = {"from": self.last_swap["from"], "to": entry.version, "at": _now(),
                                  "reason": "requested", "automatic": False}
        verdict = functools.partial(self._verdict, before, detector)
        if self.config.health_frames:
            self.swap = {**self.swap, "state": "watching"}
            self.loop.swap(detector, HealthGate(detector, fallback, self.config.health_frames,
                                                self.config.health_slowdown, verdict))
        else:
            self.loop.swap(detector)
        log.warning("model switched", extra={"fields": {k: v for k, v in self.last_swap.items() if k != "result"}})
        self.publish_status()
        if not self.config.health_frames:
            verdict(True, "not watched (health_frames is 0)")

    def _verdict(self, before, detector, passed, reason):
        """The health gate's answer: keep the version, or note the rollback the loop already made."""
        version = detector.version
        try:
            if passed:
                self.store.confirm(version)
                log.info("model passed its health check", extra={"fields": {"version": version, "check": reason}})
            else:
                self.store.restore(before)
                self.store.mark_bad(version, reason)
                self.last_rollback = {"from": version, "to": before["version"], "at": _now(), "reason": reason,
                                      "automatic": True}
                log.warning("model failed its health check; rolled back",
                            extra={"fields": {"version": version, "to": before["version"], "reason": reason}})
        finally:
            self.last_swap = {**self.last_swap, "result": "ok" if passed else "rolled_back"}
            self._finish()
            self.publish_status()

    # -- status -------------------------------------------------------------------------------
    def _threshold_command(self, body):
        try:
            self.threshold.update(body)
        except ApiError as exc:
            log.warning("threshold/set refused", extra={"fields": {"error": exc.message}})
            return
        self.publish_status()

    def publish_status(self):
        self.publisher.publish_status(self.status())

    def _status_heartbeat(self):
        while not self._stop_event.is_set():
            self.publish_status()
            self._stop_event.wait(STATUS_INTERVAL)

    def status(self):
        loop, detector = self.loop, self.loop.detector
        infer = loop.stage_ms["infer"].percentiles(50, 99)
        return {
            "device_id": self.config.device,
            "model": {"name": detector.name, "version": detector.version, "classes": detector.classes}
            if detector else None,
            "model_error": None if detector else self.model_error,
            "models": {"active": detector.version if detector else None, "swap": self.swap,
                       "last_swap": self.last_swap, "last_rollback": self.last_rollback},
            "threshold": self.threshold.to_json(),
            "camera": self.grabber.state(),
            "fps": loop.fps.per_second(),
            "inference_ms": infer,
            "stage_ms": {stage: loop.stage_ms[stage].percentiles(50, 99) for stage in STAGES},
            "frames_processed": loop.frames_processed,
            "frames_dropped": loop.frames_dropped,
            "inference_errors": loop.errors,
            "events_published": loop.events_published,
            "mqtt": {"broker": self.broker_address, **self.publisher.stats()},
            "uptime_s": round(time.time() - self.started_at, 1),
        }


def serve_forever(config, announce=False):
    """Run until SIGTERM/SIGINT; returns the process exit status."""
    from waitress.server import create_server

    from . import systemd
    from .app import create_app

    runtime = Runtime(config).start()
    server = create_server(create_app(runtime), host=config.host, port=config.port, threads=16,
                           channel_timeout=30, clear_untrusted_proxy_headers=True,
                           max_request_body_size=int(config.max_upload_mb * MB) + MB)  # + multipart framing
    port = server.effective_port
    if announce:
        print(announcement(config, port, runtime.broker_address), flush=True)
    log.warning("serving", extra={"fields": {"url": f"http://{config.host}:{port}", "broker": runtime.broker_address}})

    def shutdown(signum, frame):
        server.close()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    systemd.notify("READY=1")
    try:
        server.run()
    except (OSError, ValueError):  # closed by the signal handler mid-select
        pass
    finally:
        systemd.notify("STOPPING=1")
        runtime.stop()
    return 0


def announcement(config, port, broker_address):
    """What a person starting the service by hand wants to know first."""
    url = f"http://{config.host}:{port}"
    lines = ["deeplens-edge is running:", f"  live view   {url}/stream", f"  a frame     curl {url}/capture -o frame.jpg",
             f"  status      curl {url}/status"]
    if broker_address:
        host, _, broker_port = broker_address.rpartition(":")
        lines.append(f"  detections  mosquitto_sub -h {host} -p {broker_port} -t 'deeplens/{config.device}/detections'")
    if config.token:
        lines.append(f"  new models  export DEEPLENS_TOKEN={config.token}; deeplens-ctl swap-model {url} runs/NAME")
    return "\n".join(lines + ["Stop with Ctrl-C."])


def prepare_demo(config):
    """The demo's config, ready to run: a random-weight model unless one is there, and a model-store
    token (kept in the state folder, so it stays the same across restarts) unless one is set."""
    try:
        find_package(config.artifacts, config.model)
    except ModelError:
        from control.ssd import dummy_package
        folder = dummy_package(f"{config.artifacts}/demo", name="demo", num_classes=2).folder
        print(f"deeplens-edge: made a random-weight demo model in {folder}; "
              f"replace it with one you trained (deeplens-ctl train, swap-model).", flush=True)
    if config.token:
        return config
    token_file = config.state_path / "demo-token"
    if not token_file.is_file():
        config.state_path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(token_file, secrets.token_urlsafe(16) + "\n")
    return config.replace(token=token_file.read_text().strip())
