"""Hot-swap benchmark: swap models 20 times while the inference loop runs at full speed.

    python -m bench.swap_bench [--swaps 20] [--fps 15] [--frame-size 640x360] [--arch tiny]

Runs a real `deeplens-edge serve` (synthetic camera at --fps, Debian's mosquitto on a free
loopback port) and swaps it through `deeplens-ctl swap-model`'s code path (control.swap.swap:
pack, upload, activate, wait for the health check and the first detection), each time to a new
random-weight package. Every processed frame publishes an event (threshold 0), so the events'
`seq` show frames skipped or processed twice, and their arrival times the gaps in the loop.
Figures: frames dropped during swaps (must be 0), the largest gap between processed frames
during swaps against the median gap without swaps, upload-start-to-first-detection time, and
the service's RSS before and after the swaps.
"""
import argparse
import json
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import Mosquitto  # noqa: E402
from edge_service import EdgeService  # noqa: E402

from control.swap import swap  # noqa: E402
from core.client import DeviceClient  # noqa: E402
from core.devices import Device  # noqa: E402
from core.ssd import dummy_package  # noqa: E402

from .report import save, table  # noqa: E402

TOKEN = "bench"


class Events:
    """(arrival time, seq, model_version) of every detection event."""

    def __init__(self, address, device_id):
        host, _, port = address.rpartition(":")
        self.queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"deeplens/{device_id}/detections", qos=1)
        self.client.on_message = lambda c, u, m: self.queue.put((time.monotonic(), json.loads(m.payload)))
        self.client.connect(host, int(port))
        self.client.loop_start()

    def drain(self):
        got = []
        while not self.queue.empty():
            at, event = self.queue.get()
            got.append((at, event["seq"], event["model_version"]))
        return got

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def gaps(events):
    """(skipped frames, repeated frames, gaps between arrivals in ms) of a run of events."""
    skipped = sum(max(0, b[1] - a[1] - 1) for a, b in zip(events, events[1:]))
    repeated = sum(1 for a, b in zip(events, events[1:]) if b[1] <= a[1])
    return skipped, repeated, [(b[0] - a[0]) * 1000 for a, b in zip(events, events[1:])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--fps", type=float, default=15.0, help="Camera pace (the loop must keep up with it).")
    parser.add_argument("--frame-size", default="640x360")
    parser.add_argument("--arch", default="tiny")
    parser.add_argument("--baseline", type=float, default=10.0, help="Seconds measured without swaps.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="swap-bench-") as tmp:
        tmp = Path(tmp)
        print(f"making {args.swaps + 1} random-weight packages ({args.arch})...", file=sys.stderr)
        packages = [dummy_package(tmp / f"pkg{i}", name=f"m{i}", arch=args.arch, seed=i) for i in range(args.swaps + 1)]
        broker = Mosquitto(tmp)
        broker.start()
        service = EdgeService(tmp, "--broker", broker.address, "--camera", f"synthetic?fps={args.fps:g}",
                              "--frame-size", args.frame_size, "--artifacts", str(tmp / "artifacts"),
                              "--threshold", "0", "--token", TOKEN, "--health-slowdown", "100").start()
        events = Events(broker.address, "testcam")
        try:
            client = DeviceClient(Device("bench", service.url, TOKEN))
            swap(client, packages[0].folder, wait=60)
            process = psutil.Process(service.proc.pid)
            time.sleep(2)
            events.drain()
            rss_before = process.memory_info().rss
            dropped_before = client.status()["frames_dropped"]
            time.sleep(args.baseline)
            baseline = events.drain()
            first_detection, windows, rss = [], [], []
            for i, pkg in enumerate(packages[1:], 1):
                start = time.monotonic()
                result = swap(client, pkg.folder, wait=60)
                windows.append((start, time.monotonic()))
                first_detection.append(result["first_detection_s"] * 1000)
                rss.append(process.memory_info().rss)
                print(f"swap {i}/{args.swaps}: {result['version']} first detection after "
                      f"{first_detection[-1]:.0f} ms", file=sys.stderr)
            time.sleep(1)
            during = events.drain()
            status = client.status()
            rss_after = process.memory_info().rss
        finally:
            events.close()
            service.stop()
            broker.stop()

    base_skipped, base_repeated, base_gaps = gaps(baseline)
    swap_skipped, swap_repeated, swap_gaps = gaps(during)
    in_windows = [g for (a, b), g in zip(zip(during, during[1:]), swap_gaps)
                  if any(s <= b[0] and a[0] <= e for s, e in windows)]
    versions = [v for _, _, v in during]
    switches = sum(1 for a, b in zip(versions, versions[1:]) if a != b)
    normal_gap = statistics.median(base_gaps)
    figures = {
        "swaps": args.swaps, "camera_fps": args.fps, "frame_size": args.frame_size, "arch": args.arch,
        "frames_processed_during_swaps": len(during), "model_switches_seen_in_events": switches,
        "frames_skipped_without_swaps": base_skipped, "frames_skipped_during_swaps": swap_skipped,
        "frames_processed_twice": base_repeated + swap_repeated,
        "frames_dropped_counter_delta": status["frames_dropped"] - dropped_before,
        "inference_errors": status["inference_errors"],
        "normal_gap_ms": {"median": round(normal_gap, 1), "max": round(max(base_gaps), 1)},
        "swap_gap_ms": {"median": round(statistics.median(in_windows), 1), "max": round(max(in_windows), 1)},
        "max_gap_ratio": round(max(in_windows) / normal_gap, 2),
        "upload_to_first_detection_ms": {"median": round(statistics.median(first_detection)),
                                         "max": round(max(first_detection))},
        "rss_mb": {"before": round(rss_before / 2**20, 1), "after_half": round(rss[len(rss) // 2 - 1] / 2**20, 1),
                   "after": round(rss_after / 2**20, 1), "after_each_swap": [round(v / 2**20, 1) for v in rss]},
    }
    table([
        {"figure": "frames skipped during swaps", "value": swap_skipped, "note": f"{len(during)} frames processed"},
        {"figure": "frames skipped without swaps", "value": base_skipped, "note": f"{args.baseline:g} s baseline"},
        {"figure": "frames processed twice", "value": base_repeated + swap_repeated},
        {"figure": "frames_dropped counter delta", "value": figures["frames_dropped_counter_delta"]},
        {"figure": "model switches seen in events", "value": switches, "note": f"{args.swaps} swaps"},
        {"figure": "normal gap, median / max (ms)", "value": f"{normal_gap:.1f} / {max(base_gaps):.1f}"},
        {"figure": "gap during swaps, median / max (ms)",
         "value": f"{statistics.median(in_windows):.1f} / {max(in_windows):.1f}"},
        {"figure": "largest gap during swaps / normal gap", "value": figures["max_gap_ratio"]},
        {"figure": "upload start -> first detection, median / max (ms)",
         "value": f"{figures['upload_to_first_detection_ms']['median']} / {figures['upload_to_first_detection_ms']['max']}"},
        {"figure": "service RSS before / half-way / after (MB)",
         "value": f"{figures['rss_mb']['before']} / {figures['rss_mb']['after_half']} / {figures['rss_mb']['after']}"},
    ], ["figure", "value", "note"])
    save("swap_bench", figures)


if __name__ == "__main__":
    main()
