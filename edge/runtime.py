"""Starts and stops the service's parts in order, and holds them for the REST API.

Start: state folder -> threshold -> camera -> broker -> MQTT publisher -> model manager (crash
recovery, first model) -> inference loop -> status heartbeat. Stop runs the other way round. A
part that cannot start (no model, no broker, no camera yet) leaves the service running with
the reason in /status. Model changes belong to the model manager (edge/manager.py).
"""
import logging
import secrets
import signal
import threading
import time

from core.errors import DeepLensError, ModelError
from core.fileio import atomic_write_text
from core.topics import topics
from shims.camera import FrameGrabber

from . import events
from .broker import start_broker
from .inference import STAGES, InferenceLoop
from .manager import ModelManager, artifacts_package
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


class Runtime:
    def __init__(self, config):
        self.config = config
        self.started_at = time.time()
        self.broker_address = None
        self._broker = None
        self._stop_event = threading.Event()
        self._status_thread = None
        self.threshold = self.grabber = self.publisher = self.loop = self.manager = None
        self.store = ModelStore(config.store_path, keep=config.keep_versions)

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
        self.manager = ModelManager(self.store, config, self._latest_image, self.publish_status).start()
        self.loop = InferenceLoop(self.grabber, self.threshold, self.publisher, self.manager,
                                  max_event_rate=config.max_event_rate)
        self.loop.start()
        self._status_thread = threading.Thread(target=self._status_heartbeat, name="status", daemon=True)
        self._status_thread.start()
        return self

    def stop(self):
        self._stop_event.set()
        for part in (self.loop, self.manager, self.publisher, self.grabber, self._broker):
            if part is not None:
                part.stop()

    def _latest_image(self):
        frame = self.grabber.latest()
        return frame.image if frame is not None else None

    # -- status -------------------------------------------------------------------------------
    def _threshold_command(self, body):
        try:
            self.threshold.update(body)
        except DeepLensError as exc:
            log.warning("threshold/set refused", extra={"fields": {"error": exc.message}})
            return
        self.publish_status()

    def publish_status(self):
        if self.loop is not None:  # the first model loads before the loop exists
            self.publisher.publish_status(self.status())

    def _status_heartbeat(self):
        while not self._stop_event.is_set():
            self.publish_status()
            self._stop_event.wait(STATUS_INTERVAL)

    def status(self):
        loop, detector = self.loop, self.manager.detector
        infer = loop.stage_ms["infer"].percentiles(50, 99)
        return {
            "device_id": self.config.device,
            "model": {"name": detector.name, "version": detector.version, "classes": detector.classes}
            if detector else None,
            "model_error": None if detector else self.manager.error,
            "models": self.manager.status(),
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
        lines.append(f"  detections  mosquitto_sub -h {host} -p {broker_port} -t '{topics(config.device).detections}'")
    if config.token:
        lines.append(f"  new models  export DEEPLENS_TOKEN={config.token}; deeplens-ctl swap-model {url} runs/NAME")
    return "\n".join(lines + ["Stop with Ctrl-C."])


def prepare_demo(config):
    """The demo's config, ready to run: a random-weight model unless one is there, and a model-store
    token (kept in the state folder, so it stays the same across restarts) unless one is set."""
    try:
        artifacts_package(config.artifacts, config.model)
    except ModelError:
        from core.ssd import dummy_package
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
