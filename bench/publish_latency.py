"""Detection-event latency through mosquitto: frame timestamp to arrival at a subscriber.

    python -m bench.publish_latency [--events 1000] [--rate 30] [--burst 1000]

Starts Debian's mosquitto on a free loopback port, publishes events of the schema's shape with
edge.events.Publisher (QoS 1), first paced like a camera (--rate per second), then as a burst,
and measures each event's delay (subscriber arrival - event ts) and how long each
publish_detections call held the caller (the inference loop).
"""
import argparse
import json
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import Mosquitto  # noqa: E402

from core.topics import detection_event, topics
from edge.events import Publisher  # noqa: E402

from .report import save, table  # noqa: E402

DEVICE = "benchcam"
DETECTIONS = [{"class_id": 0, "label": "banknote", "score": 0.91, "box": [0.12, 0.2, 0.48, 0.66]},
              {"class_id": 1, "label": "coin", "score": 0.55, "box": [0.6, 0.55, 0.7, 0.68]}]


class Collector:
    """Subscribes to the detections topic and records (seq, delay seconds) per arrival."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.delays = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics(DEVICE).detections, qos=1)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.loop_start()
        subscribed.wait(10)

    def _on_message(self, client, userdata, message):
        event = json.loads(message.payload)
        self.delays.put((event["seq"], time.time() - event["ts"]))

    def take(self, n, timeout):
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n and time.monotonic() < deadline:
            try:
                got.append(self.delays.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return got

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def run_phase(publisher, collector, name, count, rate, first_seq):
    """Publish `count` events (`rate` per second, or as fast as possible when None)."""
    call_s = []
    started = time.perf_counter()
    for i in range(count):
        if rate:
            time.sleep(max(0.0, started + i / rate - time.perf_counter()))
        event = detection_event(first_seq + i, "bench0001", 12.5, DETECTIONS)
        t0 = time.perf_counter()
        publisher.publish_detections(event)
        call_s.append(time.perf_counter() - t0)
    got = collector.take(count, timeout=30)
    elapsed = time.perf_counter() - started
    delays_ms = np.array([d for _, d in got]) * 1000
    in_order = [s for s, _ in got] == list(range(first_seq, first_seq + len(got)))
    return {"phase": name, "events": count, "received": len(got), "in_order": in_order,
            "rate_per_s": rate, "throughput_per_s": len(got) / elapsed,
            "latency_ms": {"p50": float(np.percentile(delays_ms, 50)), "p99": float(np.percentile(delays_ms, 99)),
                           "max": float(delays_ms.max())},
            "publish_call_us": {"p50": float(np.percentile(call_s, 50) * 1e6),
                                "p99": float(np.percentile(call_s, 99) * 1e6)}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="events in the paced phase")
    parser.add_argument("--rate", type=float, default=30.0, help="events per second in the paced phase")
    parser.add_argument("--burst", type=int, default=1000, help="events in the burst phase")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        broker = Mosquitto(folder)
        broker.start()
        collector = Collector(broker.address)
        publisher = Publisher("127.0.0.1", broker.port, DEVICE, "deeplens_" + DEVICE, queue_limit=args.burst + 100)
        publisher.start()
        try:
            while not publisher.stats()["connected"]:
                time.sleep(0.05)
            phases = [run_phase(publisher, collector, f"paced {args.rate:g}/s", args.events, args.rate, 0),
                      run_phase(publisher, collector, "burst", args.burst, None, args.events)]
            stats = publisher.stats()
        finally:
            publisher.stop()
            collector.close()
            broker.stop()
    table([{"phase": p["phase"], "events": p["events"], "received": p["received"], "in order": p["in_order"],
            "p50 ms": p["latency_ms"]["p50"], "p99 ms": p["latency_ms"]["p99"], "max ms": p["latency_ms"]["max"],
            "events/s": p["throughput_per_s"], "publish() p50 us": p["publish_call_us"]["p50"],
            "publish() p99 us": p["publish_call_us"]["p99"]} for p in phases],
          ["phase", "events", "received", "in order", "p50 ms", "p99 ms", "max ms", "events/s",
           "publish() p50 us", "publish() p99 us"])
    save("publish_latency", {"broker": "mosquitto", "qos": 1, "phases": phases, "publisher_stats": stats})


if __name__ == "__main__":
    main()
