"""Prometheus metrics of the edge service through prometheus_client (GET /metrics).

Each Runtime has a CollectorRegistry of its own, not prometheus_client's global one, so several
services (or apps in one test process) never clash over a metric name. Two kinds of figures:

- measured as frames go by, by the inference loop: stage times (histograms, seconds) and kept
  detections per class (counter);
- read when Prometheus scrapes, from the parts that already keep them (loop, publisher, camera,
  model manager, counter), by a custom collector: nothing is counted twice, and a figure cannot
  drift from what /status says.

ProcessCollector adds the process's CPU seconds, memory, open files and start time.
"""
import collections
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from .inference import STAGES

log = logging.getLogger(__name__)

# From a fraction of a millisecond (publish, postprocess) to seconds (a large model on a slow CPU).
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# What prometheus_client serves a scraper that asks for no other format: text format 0.0.4, which
# every Prometheus parses (CONTENT_TYPE_LATEST names 1.0.0 since prometheus_client 0.22; with the
# default name escaping its body is the same text).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The service's registry, and the inference loop's hooks that feed it."""

    def __init__(self, runtime):
        self.registry = CollectorRegistry()
        self.stage_seconds = Histogram(
            "deeplens_stage_seconds", "Time of each stage of the inference loop, per frame a model ran on.",
            ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        for stage in STAGES:  # every stage shows from the first scrape, at zero
            self.stage_seconds.labels(stage)
        self.detections = Counter(
            "deeplens_detections", "Detections kept by the threshold, per class, over all processed frames.",
            ["label"], registry=self.registry)
        self.registry.register(ServiceCollector(runtime))
        ProcessCollector(registry=self.registry)

    def observe_stages(self, timings_ms):
        """The inference loop's `timings` hook: one frame's stage times, in ms."""
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(stage).observe(ms / 1000.0)

    def observe(self, frame, detector, detections, kept):
        """An inference loop observer: counts the kept detections per class (one increment a
        class: a frame may hold hundreds of detections)."""
        for label, count in collections.Counter(d["label"] for d in kept).items():
            self.detections.labels(label).inc(count)

    def exposition(self):
        return generate_latest(self.registry)


class ServiceCollector:
    """Figures read at scrape time from the running parts. A part not there yet (during start)
    leaves its metrics out."""

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self):
        runtime = self.runtime
        yield _gauge("deeplens_up", "The service answers.", 1)
        yield _gauge("deeplens_uptime_seconds", "Seconds since the service started.",
                     time.time() - runtime.started_at)
        loop = runtime.loop
        if loop is not None:
            yield _gauge("deeplens_fps", "Frames processed per second, over the last 5 s.", loop.fps.per_second())
            yield _counter("deeplens_frames_processed", "Frames through the detector.", loop.frames_processed)
            yield _counter("deeplens_frames_dropped", "Camera frames the loop did not reach.", loop.frames_dropped)
            yield _counter("deeplens_inference_errors", "Frames a model failed on.", loop.errors)
            yield _counter("deeplens_events_published", "Detection events handed to the publisher.",
                           loop.events_published)
        if runtime.grabber is not None:
            yield _gauge("deeplens_camera_connected", "The camera delivers frames.",
                         int(bool(runtime.grabber.state().get("connected"))))
        if runtime.publisher is not None:
            yield from _mqtt(runtime.publisher.stats())
        detector = runtime.manager.detector if runtime.manager is not None else None
        if detector is not None:
            info = InfoMetricFamily("deeplens_model", "The active model.", labels=["name", "version", "classes"])
            info.add_metric([str(detector.name), str(detector.version), ",".join(map(str, detector.classes))], {})
            yield info
        yield from _counts(getattr(runtime, "counter", None))


def _mqtt(stats):
    yield _gauge("deeplens_mqtt_connected", "The broker connection is up.", int(bool(stats.get("connected"))))
    yield _gauge("deeplens_mqtt_queued", "Messages waiting for the broker or not yet acknowledged.",
                 stats.get("queued", 0))
    yield _counter("deeplens_mqtt_dropped", "Events dropped with a full queue.", stats.get("dropped", 0))
    yield _counter("deeplens_mqtt_published", "Messages the broker acknowledged.", stats.get("published", 0))
    yield _counter("deeplens_mqtt_connects", "Successful connections to the broker.", stats.get("connects", 0))


def _counts(counter):
    """The stabilised counts (edge/counting.py): per class, per zone and class, and the total value.
    Not `*_count`: promtool keeps that suffix for histograms and summaries."""
    if counter is None:
        return
    try:
        snapshot = counter.snapshot() or {}
    except Exception:  # a scrape must answer even if the counter is in trouble
        log.exception("cannot read the counts for /metrics")
        return
    per_class = GaugeMetricFamily("deeplens_objects", "Stabilised count of objects in view, per class.",
                                  labels=["label"])
    for label, n in sorted((snapshot.get("counts") or {}).items()):
        per_class.add_metric([str(label)], n)
    per_zone = GaugeMetricFamily("deeplens_zone_objects", "Stabilised count of objects per zone and class.",
                                 labels=["zone", "label"])
    for zone, counts in sorted((snapshot.get("zones") or {}).items()):
        for label, n in sorted((counts or {}).items()):
            per_zone.add_metric([str(zone), str(label)], n)
    yield from (family for family in (per_class, per_zone) if family.samples)
    if snapshot.get("total") is not None:
        yield _gauge("deeplens_counted_value", "Sum of the values of the counted objects (the money on the table).",
                     snapshot["total"])
    zone_values = GaugeMetricFamily("deeplens_zone_counted_value", "Sum of the values of the objects in each zone.",
                                    labels=["zone"])
    for zone, value in sorted((snapshot.get("zone_totals") or {}).items()):
        if value is not None:
            zone_values.add_metric([str(zone)], value)
    if zone_values.samples:
        yield zone_values


def _gauge(name, documentation, value):
    return GaugeMetricFamily(name, documentation, value=float(value))


def _counter(name, documentation, value):
    return CounterMetricFamily(name, documentation, value=float(value))
