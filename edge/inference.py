"""The inference loop: camera -> detector -> threshold -> MQTT event, in its own thread.

The REST API never waits on it: it reads the loop's latest result and counters. The detector
is read once per frame from `self.detector`, so `swap()` changes the model between two frames.
A swap may bring a HealthGate: it judges the new model's first frames, and the loop itself
goes back to the previous detector on the frame that fails, so no bad frame follows it.
"""
import logging
import statistics
import threading
import time

import numpy as np

from . import systemd
from .events import detection_event
from .stats import Rate, Rolling

log = logging.getLogger(__name__)
STAGES = ("grab", "preprocess", "infer", "postprocess", "publish")


class Result:
    """What the loop saw last: the raw frame, its kept detections, and which model produced them."""
    __slots__ = ("frame", "detections", "model_version")

    def __init__(self, frame, detections, model_version):
        self.frame, self.detections, self.model_version = frame, detections, model_version


class Unhealthy(Exception):
    """A model under watch gave an output that cannot be trusted."""


class HealthGate:
    """Watches a newly activated model for `frames` frames: errors, non-finite outputs, and a median
    inference time above `slowdown` times its warm-up time (and SLACK_MS over it, as a loaded CPU
    adds a few ms to any model). `on_verdict(passed, reason)` runs in a thread of its own."""
    SLACK_MS = 20.0

    def __init__(self, detector, fallback, frames, slowdown, on_verdict):
        self.detector, self.fallback, self.frames, self.on_verdict = detector, fallback, frames, on_verdict
        self.limit_ms = max(detector.warm_ms * slowdown, detector.warm_ms + self.SLACK_MS)
        self._infer_ms = []

    def observe(self, outputs, infer_ms):
        """True once enough frames were healthy; raises Unhealthy on a bad one."""
        if not all(np.isfinite(value).all() for value in outputs.values()):
            raise Unhealthy(f"the model returned NaN or infinite values on frame {len(self._infer_ms) + 1} after activation")
        self._infer_ms.append(infer_ms)
        if len(self._infer_ms) < self.frames:
            return False
        median = statistics.median(self._infer_ms)
        if median > self.limit_ms:
            raise Unhealthy(f"median inference {median:.1f} ms over {self.frames} frames, far above its "
                            f"warm-up {self.detector.warm_ms:.1f} ms (limit {self.limit_ms:.1f} ms)")
        return True

    def summary(self):
        return f"{len(self._infer_ms)} healthy frames, median inference {statistics.median(self._infer_ms):.1f} ms"

    def reason(self, exc):
        return str(exc) if isinstance(exc, Unhealthy) else f"{type(exc).__name__} on frame " \
            f"{len(self._infer_ms) + 1} after activation: {exc}"


class InferenceLoop(threading.Thread):
    def __init__(self, grabber, threshold, publisher, detector=None, max_event_rate=0.0):
        super().__init__(name="inference", daemon=True)
        self.grabber, self.threshold, self.publisher = grabber, threshold, publisher
        self.detector = detector
        self.gate = None
        self.min_event_gap = 1.0 / max_event_rate if max_event_rate > 0 else 0.0
        self.latest = None
        self.frames_processed = 0
        self.frames_dropped = 0
        self.events_published = 0
        self.errors = 0
        self.fps = Rate()
        self.stage_ms = {stage: Rolling() for stage in STAGES}
        self._stop_event = threading.Event()
        self._last_event_at = 0.0

    def stop(self, timeout=5.0):
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def swap(self, detector, gate=None):
        """Serve `detector` from the next frame on; `gate` (for `detector`) judges its first frames."""
        self.gate = gate
        self.detector = detector

    def _settle(self, gate, passed, reason):
        if not passed:
            self.detector = gate.fallback
        self.gate = None
        threading.Thread(target=gate.on_verdict, args=(passed, reason), name="health verdict", daemon=True).start()

    def run(self):
        last_seq = -1
        while not self._stop_event.is_set():
            systemd.notify("WATCHDOG=1")
            start = time.perf_counter()
            frame = self.grabber.wait_next(last_seq, timeout=0.5)
            if frame is None:
                continue
            if last_seq >= 0 and frame.seq > last_seq + 1:
                self.frames_dropped += frame.seq - last_seq - 1
            last_seq = frame.seq
            grabbed = time.perf_counter()
            detector = self.detector
            try:
                self._process(frame, detector, start, grabbed)
            except Exception as exc:  # a bad frame or model must not stop the loop
                self.errors += 1
                gate = self.gate
                if gate is not None and gate.detector is detector:
                    self._settle(gate, False, gate.reason(exc))
                log.log(logging.WARNING if isinstance(exc, Unhealthy) else logging.ERROR, "inference failed",
                        exc_info=not isinstance(exc, Unhealthy), extra={"fields": {"seq": frame.seq, "error": exc}})

    def _process(self, frame, detector, start, grabbed):
        if detector is None:  # capture-only: no model to run
            self.latest = Result(frame, [], None)
            self.fps.tick()
            return
        timings = {"grab": (grabbed - start) * 1000}
        batch, region = detector.preprocess(frame.image)
        t1 = time.perf_counter()
        outputs = detector.infer(batch)
        t2 = time.perf_counter()
        gate = self.gate
        if gate is not None and gate.detector is detector and gate.observe(outputs, (t2 - t1) * 1000):
            self._settle(gate, True, gate.summary())
        height, width = frame.image.shape[:2]
        detections = detector.postprocess(outputs, region, (width, height), self.threshold.floor())
        kept = [d for d in detections if self.threshold.passes(d["label"], d["score"])]
        t3 = time.perf_counter()
        timings.update(preprocess=(t1 - grabbed) * 1000, infer=(t2 - t1) * 1000, postprocess=(t3 - t2) * 1000)
        self.latest = Result(frame, kept, detector.version)
        if kept and t3 - self._last_event_at >= self.min_event_gap:
            self._last_event_at = t3
            self.publisher.publish_detections(
                detection_event(frame.seq, detector.version, timings["infer"], kept, ts=frame.ts))
            self.publisher.publish_legacy({d["label"]: d["score"] for d in reversed(kept)})
            self.events_published += 1
        timings["publish"] = (time.perf_counter() - t3) * 1000
        for stage, ms in timings.items():
            self.stage_ms[stage].add(ms)
        self.frames_processed += 1
        self.fps.tick()
