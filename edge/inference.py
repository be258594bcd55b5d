"""The inference loop: camera -> detector -> threshold -> MQTT event, in its own thread.

The REST API never waits on it: it reads the loop's latest result and counters. The detector
comes from the model manager once per frame, so a swap changes the model between two frames;
the loop reports each frame's outcome to the manager, which watches a new model's first frames.
"""
import logging
import threading
import time

from core.topics import detection_event

from . import systemd
from .stats import Rate, Rolling

log = logging.getLogger(__name__)
STAGES = ("grab", "preprocess", "infer", "postprocess", "publish")


class Result:
    """What the loop saw last: the raw frame, its kept detections, which model produced them,
    and the region of the frame that model saw (x, y, w, h normalised; None without a model)."""
    __slots__ = ("frame", "detections", "model_version", "region")

    def __init__(self, frame, detections, model_version, region=None):
        self.frame, self.detections, self.model_version, self.region = frame, detections, model_version, region


class InferenceLoop(threading.Thread):
    def __init__(self, grabber, threshold, publisher, manager, max_event_rate=0.0, observers=(), timings=None,
                 event_total=None):
        """`observers`: objects whose observe(frame, detector, detections, kept) sees every frame a
        model ran on (`detections` down to the threshold's floor, or to an observer's own `floor`
        when it has a lower one, as edge/keep.py does to see uncertain frames; `kept` those that
        pass the threshold), in the loop's thread, so each must be quick and hand any slow work to
        a thread of its own.
        `timings`: called with each such frame's {stage: ms}, once all stages are done (the
        observers run within `publish`), for the Prometheus histograms (edge/metrics.py).
        `work_ms` is the loop's own time per such frame: from the camera's frame in hand to the
        frame done (every stage but `grab`, which waits for the camera), set against the camera's
        frame period it is the loop's headroom."""
        super().__init__(name="inference", daemon=True)
        self.grabber, self.threshold, self.publisher, self.manager = grabber, threshold, publisher, manager
        self.observers = list(observers)
        self.event_total = event_total  # kept -> what this frame's detections are worth (None: no values)
        self.timings = timings
        self.min_event_gap = 1.0 / max_event_rate if max_event_rate > 0 else 0.0
        self.latest = None
        self.frames_processed = 0
        self.frames_dropped = 0
        self.events_published = 0
        self.errors = 0
        self.fps = Rate()
        self.stage_ms = {stage: Rolling() for stage in STAGES}
        self.work_ms = Rolling()
        self._stop_event = threading.Event()
        self._last_event_at = 0.0

    def stop(self, timeout=5.0):
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def run(self):
        last_seq = -1
        while not self._stop_event.is_set():
            if self.publisher.alive():  # a dead or stuck MQTT client stops the pings: systemd restarts us
                systemd.notify("WATCHDOG=1")
            start = time.perf_counter()
            frame = self.grabber.wait_next(last_seq, timeout=0.5)
            if frame is None:
                continue
            if last_seq >= 0 and frame.seq > last_seq + 1:
                self.frames_dropped += frame.seq - last_seq - 1
            last_seq = frame.seq
            grabbed = time.perf_counter()
            detector = self.manager.detector
            try:
                self._process(frame, detector, start, grabbed)
            except Exception as exc:  # a bad frame or model must not stop the loop
                self.errors += 1
                self.manager.report(detector, error=exc)
                log.error("inference failed", exc_info=True, extra={"fields": {"seq": frame.seq, "error": exc}})

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
        if not self.manager.report(detector, outputs, (t2 - t1) * 1000):
            self.errors += 1  # this frame made the new model fail its health check: nothing of it goes out
            return
        height, width = frame.image.shape[:2]
        floor = min([self.threshold.floor(), *(getattr(o, "floor", 1.0) for o in self.observers)])
        detections = detector.postprocess(outputs, region, (width, height), floor)
        kept = [d for d in detections if self.threshold.passes(d["label"], d["score"])]
        t3 = time.perf_counter()
        timings.update(preprocess=(t1 - grabbed) * 1000, infer=(t2 - t1) * 1000, postprocess=(t3 - t2) * 1000)
        self.latest = Result(frame, kept, detector.version,
                             (region[0] / width, region[1] / height, region[2] / width, region[3] / height))
        for observer in self.observers:
            observer.observe(frame, detector, detections, kept)
        if kept and t3 - self._last_event_at >= self.min_event_gap:
            self._last_event_at = t3
            total = self.event_total(kept) if self.event_total else None
            self.publisher.publish_detections(
                detection_event(frame.seq, detector.version, timings["infer"], kept, ts=frame.ts, total=total))
            self.publisher.publish_legacy({d["label"]: d["score"] for d in reversed(kept)})
            self.events_published += 1
        timings["publish"] = (time.perf_counter() - t3) * 1000
        for stage, ms in timings.items():
            self.stage_ms[stage].add(ms)
        if self.timings is not None:
            self.timings(timings)
        self.frames_processed += 1
        self.fps.tick()
        self.work_ms.add((time.perf_counter() - grabbed) * 1000)
