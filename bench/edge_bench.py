"""Edge service benchmark: /capture latency, inference-loop speed per stage, event latency.

    python -m bench.edge_bench [--seconds 15] [--arch mobilenet]

Runs a real `deeplens-edge serve` (synthetic 1920x1080 camera, Debian's mosquitto on a free
loopback port, a random-weight SSD of the chosen architecture) and compares the loop's
inference stage with the bare MXNet forward pass of the same model, measured in the same run.
"""
import argparse
import concurrent.futures
import json
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

from .report import save, table  # noqa: E402


def percentiles(samples):
    return {"p50": float(np.percentile(samples, 50)), "p99": float(np.percentile(samples, 99))}


def bare_forward_ms(package, runs=200):
    model = MXNetModel.from_package(package)
    batch = Detector(model).preprocess(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8))[0]
    for _ in range(20):
        model.forward(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.forward(batch)
        times.append((time.perf_counter() - start) * 1000)
    return percentiles(times)


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to run the loop for its figures")
    parser.add_argument("--arch", default="mobilenet", help="architecture of the random-weight model")
    args = parser.parse_args(argv)
    if not shutil.which("mosquitto"):
        sys.exit("mosquitto is not installed (make system-deps)")
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    package = dummy_package(work / "model", name="bench", num_classes=2, arch=args.arch)
    bare = bare_forward_ms(package)
    broker = Mosquitto(work)
    broker.start()
    figures = {"arch": args.arch, "bare_forward_ms": bare}
    try:
        # 1. The loop at a camera's pace (30 fps): per-stage times show the headroom.
        service = EdgeService(work, "--camera", "synthetic:1?fps=30", "--broker", broker.address,
                              "--model", str(package.folder), "--threshold", "0.3").start()
        try:
            figures["event_latency_ms"] = event_latency(broker.address, "testcam", args.seconds)
            doc = service.get("/status").json()
        finally:
            service.stop()
        figures["loop"] = {"fps": doc["fps"], "stage_ms": doc["stage_ms"], "frames": doc["frames_processed"]}
        # "grab" is the wait for the camera's next frame; the loop's own work is the rest.
        stage_total = sum(v["p50"] for stage, v in doc["stage_ms"].items() if stage != "grab" and v["p50"] is not None)
        figures["loop"]["frame_ms_p50_sum"] = stage_total
        figures["loop"]["overhead_ratio"] = stage_total / bare["p50"]
        figures["loop"]["infer_vs_bare_ratio"] = doc["stage_ms"]["infer"]["p50"] / bare["p50"]
        # 2. /capture at the device's pace (24 fps camera), with the loop running.
        service = EdgeService(work, "--broker", broker.address, "--model", str(package.folder)).start()
        try:
            figures["capture_ms"] = {f"{n}_clients": capture_latency(service.url, n, 40 // n * 2 if n > 1 else 40)
                                     for n in (1, 8)}
        finally:
            service.stop()
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nEdge service, {args.arch} random-weight SSD, synthetic 1920x1080 camera\n")
    rows = [{"stage": s, "p50 ms": v["p50"], "p99 ms": v["p99"]} for s, v in figures["loop"]["stage_ms"].items()]
    rows.append({"stage": "bare MXNet forward", "p50 ms": bare["p50"], "p99 ms": bare["p99"]})
    table(rows, ["stage", "p50 ms", "p99 ms"])
    print(f"\nloop: {figures['loop']['fps']:.1f} frames/s (the camera's pace); work per frame (p50 of "
          f"preprocess+infer+postprocess+publish) {stage_total:.2f} ms = "
          f"{figures['loop']['overhead_ratio']:.2f}x the bare forward pass "
          f"(infer stage {figures['loop']['infer_vs_bare_ratio']:.2f}x)\n")
    rows = [{"what": f"/capture, {k.replace('_', ' ')}", "p50 ms": v["p50"], "p99 ms": v["p99"],
             "per s": v["requests_per_s"]} for k, v in figures["capture_ms"].items()]
    ev = figures["event_latency_ms"]
    rows.append({"what": f"frame -> MQTT subscriber ({ev['events']} events)", "p50 ms": ev.get("p50"),
                 "p99 ms": ev.get("p99")})
    table(rows, ["what", "p50 ms", "p99 ms", "per s"])
    save("edge", figures)


if __name__ == "__main__":
    main()
