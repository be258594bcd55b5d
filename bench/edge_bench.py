"""Edge service benchmark: the loop's own work per frame against the bare forward pass, /capture
latency, frame-to-subscriber latency, all in one run.

    python -m bench.edge_bench [--seconds 17] [--arch mobilenet]

Runs a real `deeplens-edge serve` (synthetic 1920x1080 camera, Debian's mosquitto on a free
loopback port, a random-weight SSD of the chosen architecture, about 200 detections a frame at
threshold 0.3) and measures, in the same run:

- bare forward pass: the same model's forward pass in the device runtime (MXNetModel, as the
  service binds it), in this process, just before and just after the loop's figures (the load of
  a shared machine drifts: the two show by how much; ratios use their mean): back to back, and
  once per frame period of a 30 fps camera, as the loop runs it (between two passes MXNet's
  threads sleep and the caches cool, which on this 2-core machine made a pass from 1.05x to
  1.4x slower).
- loop work per frame: /status `work_ms`, the inference loop's wall time from the camera's frame
  in hand to the frame done: crop and resize, the forward pass, postprocess and threshold, the
  observers (counting, keep, metrics) and queueing the event for MQTT. It leaves out the wait
  for the camera's next frame (`grab`), the camera's own work (its thread; the synthetic
  camera's render time is measured apart, below) and the event's JSON encoding and sending (the
  publisher's sender thread). Every other thread of the service shares the two cores with it,
  so their cost shows in it. The ratio is its p50 over the bare forward pass's p50 (back to
  back; and at the camera's pace). Measured over `--seconds` at 30 fps (17 s: the last 500
  frames /status keeps are all in the window).
- service CPU per frame: the process's CPU time (every thread, the camera's included) over the
  frames processed, beside the bare forward pass's CPU time (its OpenMP threads included).
- /capture with 1 and 8 clients (`crop=square&size=300`), with the default `capture_fresh_s`
  and with 0 (every request waits for the camera's next frame, as before that setting).
- frame to MQTT subscriber: the frame's timestamp to a subscriber's receipt of its event.

The load average is printed at the start and end: the figures are only as quiet as the machine.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import Mosquitto  # noqa: E402
from edge_service import EdgeService  # noqa: E402

from core.ssd import dummy_package  # noqa: E402
from core.detector import Detector  # noqa: E402
from core.runtime import MXNetModel  # noqa: E402
from shims.camera import SyntheticCamera  # noqa: E402

from .report import load_average, save, table  # noqa: E402

CAMERA_FPS = 30
WARM_FRAMES = 30  # frames the loop runs before the measured window
CAPTURE_REQUESTS = {1: 60, 8: 25}  # clients: requests each


def percentiles(samples):
    return {"p50": float(np.percentile(samples, 50)), "p99": float(np.percentile(samples, 99))}


def bound_model(package):
    """The package bound as the service binds it, and a batch for it."""
    model = MXNetModel.from_package(package)
    return model, Detector(model).preprocess(np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8))[0]


def bare_forward(model, batch, runs=300, paced_runs=120):
    """Wall ms per forward pass (p50, p99) back to back, with the CPU ms per pass (every thread of
    this process); and wall ms per pass when one starts every frame period of the camera."""
    for _ in range(20):
        model.forward(batch)
    times, cpu = [], time.process_time()
    for _ in range(runs):
        start = time.perf_counter()
        model.forward(batch)
        times.append((time.perf_counter() - start) * 1000)
    back_to_back = {**percentiles(times), "cpu_ms": (time.process_time() - cpu) * 1000 / runs}
    paced = []
    for _ in range(paced_runs):
        start = time.perf_counter()
        model.forward(batch)
        paced.append((time.perf_counter() - start) * 1000)
        time.sleep(max(0.0, 1 / CAMERA_FPS - (time.perf_counter() - start)))
    return {"back_to_back": back_to_back, "paced": percentiles(paced)}


def mean_p50(runs, kind):
    return sum(run[kind]["p50"] for run in runs) / len(runs)


def render_ms(runs=100):
    """The synthetic camera's cost per 1920x1080 frame: its thread's work, not the service's."""
    camera, times = SyntheticCamera(1, (1920, 1080)), []
    for index in range(runs):
        start = time.perf_counter()
        camera.render(index)
        times.append((time.perf_counter() - start) * 1000)
    return percentiles(times)


def process_cpu_s(pid):
    """User + system CPU seconds of process `pid`, every thread."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def capture_latency(url, clients, requests_per_client):
    def one_client(_):
        session, times = requests.Session(), []
        for _ in range(requests_per_client):
            start = time.perf_counter()
            response = session.get(url + "/capture", params={"crop": "square", "size": 300}, timeout=30)
            response.raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
        return times

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        times = [t for chunk in pool.map(one_client, range(clients)) for t in chunk]
    elapsed = time.perf_counter() - start
    return {**percentiles(times), "requests_per_s": len(times) / elapsed, "requests": len(times)}


def event_latency(address, device, seconds):
    """Frame timestamp to arrival at a subscriber, for every detection event during `seconds`."""
    host, _, port = address.rpartition(":")
    delays, lock = [], threading.Lock()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"deeplens/{device}/detections", qos=1)

    def on_message(c, u, message):
        arrived = time.time()
        with lock:
            delays.append((arrived - json.loads(message.payload)["ts"]) * 1000)

    client.on_message = on_message
    client.connect(host, int(port))
    client.loop_start()
    time.sleep(seconds)
    client.loop_stop()
    client.disconnect()
    return {**percentiles(delays), "events": len(delays)} if delays else {"events": 0}


def measure_loop(work, broker, package, seconds):
    """The loop at a camera's pace (30 fps), with a subscriber taking every event."""
    service = EdgeService(work, "--camera", f"synthetic:1?fps={CAMERA_FPS}", "--broker", broker.address,
                          "--model", str(package.folder), "--threshold", "0.3").start()
    try:
        before = service.wait_status(lambda s: s["frames_processed"] >= WARM_FRAMES, timeout=60)
        cpu = process_cpu_s(service.proc.pid)
        events = event_latency(broker.address, "testcam", seconds)
        cpu = process_cpu_s(service.proc.pid) - cpu
        doc = service.get("/status").json()
    finally:
        service.stop()
    frames = doc["frames_processed"] - before["frames_processed"]
    return {"fps": doc["fps"], "frames": frames, "stage_ms": doc["stage_ms"], "work_ms": doc["work_ms"],
            "cpu_ms_per_frame": cpu * 1000 / frames}, events


def measure_capture(work, broker, package, fresh_s):
    """/capture at the device's pace (24 fps camera), with the loop running."""
    service = EdgeService(work, "--broker", broker.address, "--model", str(package.folder),
                          *(["--capture-fresh-s", str(fresh_s)] if fresh_s is not None else [])).start()
    try:
        capture_latency(service.url, 1, 3)  # the first requests set things up
        return {f"{n}_clients": capture_latency(service.url, n, count) for n, count in CAPTURE_REQUESTS.items()}
    finally:
        service.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=17.0, help="how long to run the loop for its figures")
    parser.add_argument("--arch", default="mobilenet", help="architecture of the random-weight model")
    args = parser.parse_args(argv)
    if not shutil.which("mosquitto"):
        sys.exit("mosquitto is not installed (make system-deps)")
    figures = {"arch": args.arch, "load_avg_start": load_average()}
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    package = dummy_package(work / "model", name="bench", num_classes=2, arch=args.arch)
    model, batch = bound_model(package)
    bare = figures["bare_forward_ms"] = {"before": bare_forward(model, batch)}
    figures["camera_render_ms"] = render_ms()
    broker = Mosquitto(work)
    broker.start()
    try:
        loop, figures["event_latency_ms"] = measure_loop(work, broker, package, args.seconds)
        bare["after"] = bare_forward(model, batch)
        runs = list(bare.values())
        loop["work_vs_bare_ratio"] = loop["work_ms"]["p50"] / mean_p50(runs, "back_to_back")
        loop["work_vs_paced_bare_ratio"] = loop["work_ms"]["p50"] / mean_p50(runs, "paced")
        loop["infer_vs_bare_ratio"] = loop["stage_ms"]["infer"]["p50"] / mean_p50(runs, "back_to_back")
        figures["loop"] = loop
        figures["capture_ms"] = measure_capture(work, broker, package, None)
        figures["capture_ms_fresh_0"] = measure_capture(work, broker, package, 0)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    figures["load_avg_end"] = load_average()
    report(figures)
    save("edge", figures)


def report(figures):
    before, after = figures["bare_forward_ms"]["before"], figures["bare_forward_ms"]["after"]
    loop, ev = figures["loop"], figures["event_latency_ms"]

    def both(kind, figure):
        return f"{before[kind][figure]:.3g} / {after[kind][figure]:.3g}"

    print(f"\nEdge service, {figures['arch']} random-weight SSD, synthetic 1920x1080 camera at {CAMERA_FPS} fps; "
          f"load average {figures['load_avg_start']} at start, {figures['load_avg_end']} at end\n")
    rows = [{"what": "bare forward pass (MXNetModel), back to back", "p50 ms": both("back_to_back", "p50"),
             "p99 ms": both("back_to_back", "p99"), "note": "before / after the loop's figures; ratios: their mean"},
            {"what": f"bare forward pass, one per {1000 / CAMERA_FPS:.0f} ms", "p50 ms": both("paced", "p50"),
             "p99 ms": both("paced", "p99"), "note": "the camera's pace, as the loop runs it"},
            {"what": "loop work per frame (/status work_ms)", "p50 ms": loop["work_ms"]["p50"],
             "p99 ms": loop["work_ms"]["p99"], "note": f"{loop['work_vs_bare_ratio']:.2f}x the bare forward "
             f"pass ({loop['work_vs_paced_bare_ratio']:.2f}x at the camera's pace)"}]
    rows += [{"what": f"  stage {stage}", "p50 ms": v["p50"], "p99 ms": v["p99"],
              "note": "the wait for the camera: not loop work" if stage == "grab" else
              f"{loop['infer_vs_bare_ratio']:.2f}x the bare forward pass" if stage == "infer" else None}
             for stage, v in loop["stage_ms"].items()]
    rows.append({"what": "service CPU per frame, all threads", "note": f"{loop['cpu_ms_per_frame']:.1f} ms (mean over "
                 f"{loop['frames']} frames at {loop['fps']:.1f}/s); bare forward pass "
                 f"{both('back_to_back', 'cpu_ms')} ms"})
    rows.append({"what": "synthetic camera render, 1080p", "p50 ms": figures["camera_render_ms"]["p50"],
                 "p99 ms": figures["camera_render_ms"]["p99"], "note": "the camera thread's: in the CPU figure only"})
    for key, label in (("capture_ms", "capture_fresh_s default"), ("capture_ms_fresh_0", "capture_fresh_s 0")):
        rows += [{"what": f"/capture, {n} client{'s' if n > 1 else ''}, {label}", "p50 ms": v["p50"],
                  "p99 ms": v["p99"], "note": f"{v['requests']} requests, {v['requests_per_s']:.0f}/s"}
                 for n, v in ((n, figures[key][f"{n}_clients"]) for n in CAPTURE_REQUESTS)]
    rows.append({"what": "frame -> MQTT subscriber", "p50 ms": ev.get("p50"), "p99 ms": ev.get("p99"),
                 "note": f"{ev['events']} events"})
    table(rows, ["what", "p50 ms", "p99 ms", "note"])


if __name__ == "__main__":
    main()
