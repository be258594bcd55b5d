"""GET /metrics through prometheus_client (edge/metrics.py): parsed as Prometheus parses it,
moving as frames go by, and clean for `promtool check metrics` (Debian's prometheus package)."""
import math
import shutil
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.metrics import Metrics

SMALL = ("--frame-size", "640x360")


def scrape(service):
    response = service.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.text, {family.name: family for family in text_string_to_metric_families(response.text)}


def samples(family, sample=None, **labels):
    """The samples of `family` named `sample` (any, when None) with these labels."""
    return [s for s in family.samples if (sample is None or s.name == sample)
            and all(s.labels.get(k) == v for k, v in labels.items())]


def value(families, family, sample=None, **labels):
    (found,) = samples(families[family], sample, **labels)
    return found.value


def buckets(families, stage):
    """[(le, cumulative count)] of one stage's histogram, in order."""
    found = samples(families["deeplens_stage_seconds"], "deeplens_stage_seconds_bucket", stage=stage)
    return sorted(((float(s.labels["le"]), s.value) for s in found), key=lambda pair: pair[0])


def promtool(text):
    if not shutil.which("promtool"):
        pytest.fail("promtool is not installed: run `make test`, which installs Debian's prometheus package")
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)


def test_metrics_of_a_running_service(edge_service, dummy_model, mosquitto):
    service = edge_service(*SMALL, "--broker", mosquitto.address, "--model", str(dummy_model.folder))
    service.wait_status(lambda s: s["frames_processed"] >= 3 and s["mqtt"]["connected"])
    text, first = scrape(service)

    checked = promtool(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    assert first["deeplens_stage_seconds"].type == "histogram"
    stages = {s.labels["stage"] for s in samples(first["deeplens_stage_seconds"], "deeplens_stage_seconds_count")}
    assert stages == {"grab", "preprocess", "infer", "postprocess", "publish"}
    assert first["deeplens_frames_processed"].type == "counter"
    assert value(first, "deeplens_up") == 1 and value(first, "deeplens_camera_connected") == 1
    assert value(first, "deeplens_mqtt_connected") == 1 and value(first, "deeplens_mqtt_dropped") == 0
    assert "deeplens_mqtt_queued" in first and value(first, "deeplens_uptime_seconds") > 0
    (info,) = first["deeplens_model_info"].samples  # an info metric is a gauge of 1 in text format 0.0.4
    assert info.name == "deeplens_model_info" and info.value == 1
    assert info.labels == {"name": "dummy", "version": dummy_model.version, "classes": "class0,class1"}
    assert value(first, "process_cpu_seconds") > 0 and value(first, "process_resident_memory_bytes") > 10e6
    assert {s.labels["label"] for s in samples(first["deeplens_objects"])} == {"class0", "class1"}

    processed = value(first, "deeplens_frames_processed")
    service.wait_status(lambda s: s["frames_processed"] >= processed + 10)
    _, later = scrape(service)
    assert value(later, "deeplens_frames_processed") >= processed + 10
    for stage in stages:
        before, after = buckets(first, stage), buckets(later, stage)
        assert before[-1][0] == math.inf and [le for le, _ in before] == [le for le, _ in after]
        counts = [n for _, n in after]
        assert counts == sorted(counts), "buckets are cumulative"
        assert after[-1][1] == value(later, "deeplens_stage_seconds", sample="deeplens_stage_seconds_count",
                                     stage=stage)
        assert after[-1][1] >= before[-1][1] + 10, f"{stage}: the histogram did not move"
        assert value(later, "deeplens_stage_seconds", sample="deeplens_stage_seconds_sum", stage=stage) > \
            value(first, "deeplens_stage_seconds", sample="deeplens_stage_seconds_sum", stage=stage)
    # The infer histogram agrees with /status's rolling median (ms there, seconds here).
    p50_s = service.get("/status").json()["stage_ms"]["infer"]["p50"] / 1000
    assert any(le >= p50_s and n > 0 for le, n in buckets(later, "infer"))
    detections = samples(later["deeplens_detections"], "deeplens_detections_total")
    assert detections and {s.labels["label"] for s in detections} <= {"class0", "class1"}


class FakeRuntime:
    """Just what the collector reads; parts left None are skipped, as during a start."""
    started_at = time.time()
    loop = grabber = publisher = manager = None

    def __init__(self, counter=None):
        if counter is not None:
            self.counter = counter


class FakeCounter:
    def snapshot(self):
        return {"counts": {"note_2000": 2, "note_1000": 1}, "objects": 3, "total": 5000,
                "zones": {"tray": {"note_2000": 1, "note_1000": 0}}, "zone_totals": {"tray": 2000}}


def test_each_service_has_its_own_registry_and_reads_the_counter():
    one, two = Metrics(FakeRuntime(FakeCounter())), Metrics(FakeRuntime())  # no clash over names
    one.observe_stages({"infer": 20.0, "grab": 1.0})
    one.observe(None, None, [], [{"label": "note_2000"}, {"label": "note_2000"}])
    families = {f.name: f for f in text_string_to_metric_families(one.exposition().decode())}
    assert value(families, "deeplens_stage_seconds", sample="deeplens_stage_seconds_sum", stage="infer") == 0.02
    assert value(families, "deeplens_detections", sample="deeplens_detections_total", label="note_2000") == 2
    assert value(families, "deeplens_objects", label="note_2000") == 2
    assert value(families, "deeplens_zone_objects", zone="tray", label="note_1000") == 0
    assert value(families, "deeplens_counted_value") == 5000
    assert value(families, "deeplens_zone_counted_value", zone="tray") == 2000
    other = {f.name for f in text_string_to_metric_families(two.exposition().decode())}
    assert "deeplens_objects" not in other and "deeplens_detections" in other
    assert value({f.name: f for f in text_string_to_metric_families(two.exposition().decode())},
                 "deeplens_stage_seconds", sample="deeplens_stage_seconds_count", stage="infer") == 0
    checked = promtool(one.exposition().decode())
    assert checked.returncode == 0, checked.stdout + checked.stderr
