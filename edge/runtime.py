"""Starts and stops the service's parts in order, and holds them for the REST API.

Start: state folder -> threshold -> camera -> broker -> MQTT publisher -> model manager (crash
recovery, first model) -> inference loop -> status heartbeat. Stop runs the other way round. No
model, a camera not there yet or an external broker that is down leave the service running
with the reason in /status; an embedded broker that cannot start stops the start, with why.
Model changes belong to the model manager (edge/manager.py).
"""
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import threading
import time

from core.errors import DeepLensError
from core.tls import certificate_fingerprint
from shims.camera import FrameGrabber

from . import events, memory
from .broker import start_broker
from .counting import Counter, ZoneStore
from .discovery import Discovery
from .inference import STAGES, InferenceLoop
from .keep import OFF as KEEP_OFF, Keeper
from .manager import ModelManager
from .metrics import Metrics
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
        self.discovery = None  # Home Assistant MQTT discovery (edge/discovery.py), once the publisher runs
        self.counter = None  # stabilised counts per class and zone, and their total (edge/counting.py)
        self.metrics = Metrics(self)  # GET /metrics: this service's own Prometheus registry (edge/metrics.py)
        self.keeper = None  # frames worth labelling (edge/keep.py); None with keep_mb 0
        self.store = ModelStore(config.store_path, keep=config.keep_versions)
        self.url = None  # what the REST API is served at, once it is
        self.fingerprint = certificate_fingerprint(config.tls_cert) if config.tls_cert else None

    @property
    def camera_is_live(self):
        """A folder of stills repeats frames by design; only live sources can freeze."""
        return not self.config.camera.startswith("folder:")

    # -- start / stop -------------------------------------------------------------------------
    def start(self):
        """Start every part; if one fails, stop those already started and raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self):
        config = self.config
        config.state_path.mkdir(parents=True, exist_ok=True)
        self.threshold = Threshold(config.state_path, config.threshold, classes=self._model_classes)
        self.grabber = FrameGrabber(camera_spec(config))
        self.grabber.start()
        self.broker_address, self._broker = start_broker(config)
        self.publisher = events.from_config(config, self.broker_address)
        self.publisher.start()
        self.publisher.on_command("threshold/set", self._threshold_command)
        self.discovery = Discovery(self.publisher, config)  # the counter syncs it (edge/discovery.py)
        self.manager = ModelManager(self.store, config, self._latest_image, self.publish_status).start()
        self.counter = Counter(config.count_window, config.class_values,
                               ZoneStore(config.state_path, config.zones, config.zones_only), self.publisher.publish_counts)
        self.counter.on_layout.append(self.discovery.sync)  # classes, zone names or the total changed
        self.loop = InferenceLoop(self.grabber, self.threshold, self.publisher, self.manager,
                                  max_event_rate=config.max_event_rate, observers=[self.counter],
                                  event_total=self.counter.frame_total)
        self.loop.timings = self.metrics.observe_stages
        self.loop.observers.append(self.metrics)
        self.keeper = Keeper.from_config(config, self.threshold)
        if self.keeper is not None:  # before the counter: a count change then finds the frame's detections
            self.loop.observers.insert(0, self.keeper)
            self.counter.on_change.append(self.keeper.count_changed)
        self.loop.start()
        self._status_thread = threading.Thread(target=self._status_heartbeat, name="status", daemon=True)
        self._status_thread.start()
        return self

    def stop(self):
        self._stop_event.set()
        for part in (self.loop, self.keeper, self.manager, self.publisher, self.grabber, self._broker):
            if part is not None:
                part.stop()

    def _model_classes(self):
        detector = self.manager.detector if self.manager else None
        return detector.classes if detector else None

    def _latest_image(self):
        frame = self.grabber.latest()
        return frame.image if frame is not None else None

    # -- status -------------------------------------------------------------------------------
    def _threshold_command(self, body):
        self.threshold.update(body)  # a refusal (DeepLensError) is logged and counted by the publisher
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
            "work_ms": loop.work_ms.percentiles(50, 99),
            "frames_processed": loop.frames_processed,
            "frames_dropped": loop.frames_dropped,
            "inference_errors": loop.errors,
            "events_published": loop.events_published,
            "mqtt": self._mqtt_status(),
            "listen": {"url": self.url, "tls": bool(self.config.tls_cert), "fingerprint": self.fingerprint,
                       "reads_need_token": self.config.reads_need_token},
            "crop": {"policy": self.config.crop, "region": loop.latest and loop.latest.region},
            "disk": {"artifacts_free_mb": _free_mb(self.config.artifacts)},
            "counts": self.counter.status(),
            "keep": self.keeper.stats() if self.keeper else KEEP_OFF,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def _mqtt_status(self):
        mqtt = {"broker": self.broker_address, "tls": self._broker_tls,
                "auth": bool(self.config.mqtt_username and self.config.mqtt_password), **self.publisher.stats(),
                "embedded_broker": self._broker.stats() if self._broker else None}
        if mqtt["alive"] and self._broker and not mqtt["embedded_broker"]["running"]:
            mqtt["alive"], mqtt["reason"] = False, mqtt["embedded_broker"]["reason"]  # the supervisor restarts it
        return mqtt

    @property
    def _broker_tls(self):
        return bool(self.config.tls_cert) if self.config.broker == "embedded" else self.config.mqtt_tls

    def broker_login(self):
        """Where and how a client reaches the broker the device publishes to; None without MQTT."""
        if self.broker_address is None:
            return None
        host, _, port = self.broker_address.rpartition(":")
        return {"host": host, "port": int(port), "tls": self._broker_tls,
                "username": self.config.mqtt_username or None, "password": self.config.mqtt_password or None}


def _free_mb(folder):
    try:
        return round(shutil.disk_usage(folder).free / MB, 1)
    except OSError:  # not there (yet)
        return None


def serve_forever(config, announce=False):
    """Run until SIGTERM/SIGINT; returns the process exit status. The REST port is taken before
    anything starts, so a port in use is one line and leaves nothing running."""
    from . import systemd
    from .app import create_app
    from .live import stop as stop_live

    memory.tune()
    try:
        server = http_server(config)
    except ssl.SSLError as exc:
        print(f"deeplens-edge: cannot use tls_cert {config.tls_cert} with tls_key {config.tls_key}: {exc.reason or exc}",
              file=sys.stderr, flush=True)
        return 1
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else exc
        print(f"deeplens-edge: cannot listen on {config.host}:{config.port}: {reason} "
              "(is another deeplens-edge running? choose another with --port)", file=sys.stderr, flush=True)
        return 1
    try:
        runtime = Runtime(config).start()
    except DeepLensError as exc:
        server.stop()
        print(f"deeplens-edge: {exc}", file=sys.stderr, flush=True)
        return 1
    server.wsgi_app = app = create_app(runtime)
    url = runtime.url = f"{'https' if config.tls_cert else 'http'}://{config.host}:{server.bind_addr[1]}"
    if announce:
        from .demo import announcement
        print(announcement(config, url, runtime.broker_address), flush=True)
    log.warning("serving", extra={"fields": {"url": url, "broker": runtime.broker_address,
                                             "reads_need_token": config.reads_need_token}})
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    systemd.notify("READY=1")
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        systemd.notify("STOPPING=1")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_live(app)  # streams and bursts end, so their threads do
        server.stop()
        runtime.stop()
    return 0


API_THREADS = 16  # request threads for everything but the long-lived responses (streams, bursts)


def http_server(config):
    """cheroot's WSGI server, bound (OSError when the port is taken), with TLS when a certificate
    is set: waitress, used before, has no TLS of its own.

    Threads: API_THREADS for the API plus one per live slot (edge/live.py caps streams and bursts
    at `live_slots`), so /health, /status and the model store always find a thread. A client that
    leaves a response unread (or a request unsent) for `write_timeout` s is dropped. Each request's
    environ carries its socket (edge.live.SOCKET_KEY), so a long response can tell that its client
    hung up while it has nothing to write."""
    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    from .live import SOCKET_KEY

    class Gateway(wsgi.Gateway_10):
        def get_environ(self):
            environ = super().get_environ()
            environ[SOCKET_KEY] = self.req.conn.socket
            return environ

    if config.tls_cert:  # a bad pair raises ssl.SSLError here, before the port is taken
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(config.tls_cert, config.tls_key)
    socket.create_server((config.host, config.port)).close()  # a clear OSError (errno, strerror) if taken
    threads = API_THREADS + config.live_slots
    server = wsgi.Server((config.host, config.port), None, numthreads=threads, max=threads,
                         timeout=config.write_timeout, server_name="deeplens-edge")
    server.gateway = Gateway
    # Above the API's own limit (max_upload_mb + 1 MB of multipart framing), which answers in JSON.
    server.max_request_body_size = int(config.max_upload_mb * MB) + 2 * MB
    if config.tls_cert:
        server.ssl_adapter = BuiltinSSLAdapter(config.tls_cert, config.tls_key)
    server.prepare()
    return server


def _interrupt(signum, frame):
    raise KeyboardInterrupt

