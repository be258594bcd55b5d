"""`deeplens-edge run-lambda FILE`: an unmodified DeepLens inference Lambda under the shims.

The Lambda gets what Greengrass would give it: the shims' settings in the environment before
its import (camera, artifacts, broker, AWS_IOT_THING_NAME), its module-level loop run as is,
then its handler called with `({}, None)` if the import ever returns.

The Lambda runs in a daemon thread, so every thread it starts is a daemon too (threads inherit
it): the samples' display thread is not one and would otherwise keep the process alive after
Ctrl-C or SIGTERM. The main thread only waits, so those signals reach it and stop the run.
"""
import atexit
import inspect
import logging
import os
import runpy
import signal
import stat
import sys
import threading
import time
from pathlib import Path

from .broker import local_host, start_broker

log = logging.getLogger(__name__)

RESULTS_FIFO = "/tmp/results.mjpeg"  # where DeepLens samples write their annotated JPEGs
HANDLER_NAMES = ("function_handler", "lambda_handler")
HANDLER_PERIOD_S = 1 / 30  # at most 30 handler calls a second: the usual handler is a dummy
SOI, EOI = b"\xff\xd8", b"\xff\xd9"  # JPEG start and end markers
MAX_JPEG = 32 << 20
DRAIN_PACE_S = 0.01  # between FIFO reads: a sample's writer loops as fast as it is read


class ResultsDrain(threading.Thread):
    """Reads the Lambda's display FIFO so that its writer never blocks; keeps the latest JPEG.

    On a DeepLens, mplayer reads the FIFO; here nobody would, and the sample's display thread
    would wait forever in open(). stop() takes effect when the writer closes the FIFO.
    """

    def __init__(self, path=RESULTS_FIFO):
        super().__init__(name="results-fifo", daemon=True)
        self.path = path
        self._latest = None
        self._stopped = threading.Event()

    def latest(self):
        """The last complete JPEG the Lambda wrote (bytes), or None."""
        return self._latest

    def stop(self):
        self._stopped.set()

    def run(self):
        while not self._stopped.is_set():
            try:
                mode = os.stat(self.path).st_mode
            except FileNotFoundError:
                self._stopped.wait(0.2)
                continue
            if not stat.S_ISFIFO(mode):
                log.warning("not a FIFO: the Lambda's display output is not read", extra={"fields": {"path": self.path}})
                return
            with open(self.path, "rb", buffering=0) as fifo:  # waits until the Lambda opens it to write
                pending = b""
                while chunk := fifo.read(1 << 16):
                    pending = self._keep_frames(pending + chunk)
                    time.sleep(DRAIN_PACE_S)

    def _keep_frames(self, data):
        """Keep the last complete JPEG in `data`; return the bytes after it."""
        while True:
            start = data.find(SOI)
            if start < 0:
                return data[-1:]  # perhaps the first byte of a marker
            end = data.find(EOI, start + 2)
            if end < 0:
                return data[start:] if len(data) - start < MAX_JPEG else b""
            self._latest = data[start:end + 2]
            data = data[end + 2:]


class _LambdaThread(threading.Thread):
    """Imports the Lambda file, then calls its handler until the process stops."""

    def __init__(self, path, handler):
        super().__init__(name="lambda", daemon=True)
        self.path, self.handler = path, handler
        self.returncode = None
        self.done = threading.Event()

    def run(self):
        try:
            self.returncode = self._run()
        except SystemExit as exc:
            self.returncode = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                log.error("the Lambda exited", extra={"fields": {"message": exc.code}})
        except Exception:
            log.exception("the Lambda failed", extra={"fields": {"path": self.path}})
            self.returncode = 1
        finally:
            self.done.set()

    def _run(self):
        if str(self.path.parent) not in sys.path:
            sys.path.insert(0, str(self.path.parent))  # as Greengrass, for modules beside the Lambda
        namespace = runpy.run_path(str(self.path), run_name=self.path.stem)
        names = [self.handler] if self.handler else HANDLER_NAMES
        name = next((n for n in names if callable(namespace.get(n))), None)
        if name is None:
            if self.handler:
                log.error("the Lambda has no such handler", extra={"fields": {"handler": self.handler, "path": self.path}})
                return 1
            log.info("the Lambda's import returned and it has no handler: done")
            return 0
        log.info("calling the Lambda's handler", extra={"fields": {"handler": name}})
        handler = namespace[name]
        arguments = handler_arguments(handler)
        while True:
            started = time.monotonic()
            handler(*arguments)
            time.sleep(max(0.0, HANDLER_PERIOD_S - (time.monotonic() - started)))


def handler_arguments(handler):
    """(event, context), cut to what the handler takes: DeepLens handlers take both, one or none."""
    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):  # a builtin or C function: give it what Lambda gives
        return {}, None
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return {}, None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return ({}, None)[:len(positional)]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_lambda(path, config, handler=None):
    """Run the Lambda at `path` until it ends or the process is told to stop; returns an exit code.

    0 after Ctrl-C or SIGTERM, 1 when the Lambda raised (its traceback is logged).
    """
    path = Path(path).resolve()
    address, broker = start_broker(config)
    if broker:  # at exit, after greengrasssdk's own flush (atexit runs in reverse order)
        atexit.register(broker.stop)
    host, _, port = (address or "").rpartition(":")
    embedded = config.broker == "embedded"
    env = {"DEEPLENS_CAMERA": config.camera, "DEEPLENS_FRAME_SIZE": config.frame_size,
           "DEEPLENS_ARTIFACTS": config.artifacts,
           "DEEPLENS_BROKER": f"{local_host(host) if embedded else host}:{port}" if address else "",
           "DEEPLENS_MQTT_USERNAME": config.mqtt_username, "DEEPLENS_MQTT_PASSWORD": config.mqtt_password,
           "DEEPLENS_MQTT_TLS": "yes" if embedded and config.tls_cert else "", "AWS_IOT_THING_NAME": config.thing}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    drain = ResultsDrain()
    drain.start()
    lambda_thread = _LambdaThread(path, handler)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    log.info("running a DeepLens Lambda", extra={"fields": {"path": path, "broker": address or "none",
                                                           "thing": config.thing, "camera": config.camera}})
    try:
        lambda_thread.start()
        while not lambda_thread.done.wait(0.5):
            pass
        return lambda_thread.returncode
    except KeyboardInterrupt:
        log.info("stopping the Lambda")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        drain.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
