"""Starts and stops the service's parts in order, and holds them for the REST API.

Start: state folder -> threshold -> camera -> broker -> MQTT publisher -> model -> inference
loop -> status heartbeat. Stop runs the other way round. A part that cannot start (no model,
no broker, no camera yet) leaves the service running with the reason in /status.
"""
import logging
import signal
import threading
import time

from shims.camera import FrameGrabber
from shims.errors import ModelError

from .broker import start_broker
from .detector import Detector, find_package
from . import events
from .inference import STAGES, InferenceLoop
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
        self.model_error = None
        self.broker_address = None
        self._broker = None
        self._stop_event = threading.Event()
        self._status_thread = None
        self.threshold = self.grabber = self.publisher = self.loop = None

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
        self.loop = InferenceLoop(self.grabber, self.threshold, self.publisher,
                                  detector=self._load_detector(), max_event_rate=config.max_event_rate)
        self.loop.start()
        self._status_thread = threading.Thread(target=self._status_heartbeat, name="status", daemon=True)
        self._status_thread.start()
        return self

    def stop(self):
        self._stop_event.set()
        for part in (self.loop, self.publisher, self.grabber, self._broker):
            if part is not None:
                part.stop()

    def _load_detector(self):
        try:
            detector = Detector(find_package(self.config.artifacts, self.config.model), crop=self.config.crop)
        except ModelError as exc:
            self.model_error = str(exc)
            log.warning("running capture-only: no usable model", extra={"fields": {"reason": exc}})
            return None
        log.info("model loaded", extra={"fields": {"name": detector.name, "version": detector.version}})
        return detector

    # -- status -------------------------------------------------------------------------------
    def _threshold_command(self, body):
        from .errors import ApiError
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
                           channel_timeout=30, clear_untrusted_proxy_headers=True)
    port = server.effective_port
    if announce:
        print(f"deeplens-edge is running:\n"
              f"  live view   http://{config.host}:{port}/stream\n"
              f"  a frame     curl http://{config.host}:{port}/capture -o frame.jpg\n"
              f"  status      curl http://{config.host}:{port}/status\n"
              f"  detections  mosquitto_sub -h {(runtime.broker_address or 'none:0').rpartition(':')[0]} "
              f"-p {(runtime.broker_address or 'none:0').rpartition(':')[2]} -t 'deeplens/{config.device}/detections'\n"
              f"Stop with Ctrl-C.", flush=True)
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


def prepare_demo(config):
    """Give the demo a model to run: a random-weight package, unless one is there already."""
    try:
        find_package(config.artifacts, config.model)
    except ModelError:
        from control.ssd import dummy_package
        folder = dummy_package(f"{config.artifacts}/demo", name="demo", num_classes=2).folder
        print(f"deeplens-edge: made a random-weight demo model in {folder}; "
              f"replace it with one you trained (deeplens-ctl train, swap-model).", flush=True)
