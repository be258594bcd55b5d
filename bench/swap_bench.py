"""Hot-swap benchmark: swap models 20 times while the inference loop runs at full speed.

    python -m bench.swap_bench [--swaps 20] [--fps 15] [--frame-size 640x360] [--arch tiny]

Runs a real `deeplens-edge serve` (synthetic camera at --fps, Debian's mosquitto on a free
loopback port) and swaps it through `deeplens-ctl swap-model`'s code path (control.swap.swap:
pack, upload, activate, wait for the health check and the first detection), each time to a new
random-weight package. Every processed frame publishes an event (threshold 0), so the events'
`seq` show frames skipped or processed twice, and their arrival times the gaps in the loop.
Figures: frames dropped during swaps (must be 0), the largest gap between processed frames
during swaps against the median gap without swaps, upload-start-to-first-detection time, and
the service's memory (target: at most 250 MB, flat across the swaps): its RSS at start (no
model yet), with the first model, every --every swaps, after the last and at its peak, the
anonymous and file-backed parts of it at the end, against a bare `import mxnet, cv2`; and the
machine's load average at start and end (other work on the machine skews the frame gaps).
"""
import argparse
import json
import os
import queue
import statistics
import subprocess
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

from .report import load_average, save, table  # noqa: E402

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


MB = 2 ** 20
BARE_IMPORT = "import mxnet, cv2; print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS:')))"


def bare_import_mb():
    """RSS of a Python that only imports MXNet and OpenCV: the floor under the service."""
    return int(subprocess.run([sys.executable, "-c", BARE_IMPORT], capture_output=True, text=True,
                              check=True).stdout) / 1024


def memory_mb(pid):
    """The process's RSS split as /proc/<pid>/smaps_rollup does: anonymous (heap, arrays,
    thread stacks) and file-backed (mapped libraries), and its peak RSS so far (VmHWM)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        fields = dict(line.split()[:2] for line in rollup if line.split()[0].endswith(":"))
    with open(f"/proc/{pid}/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    anonymous, rss = int(fields["Anonymous:"]), int(fields["Rss:"])
    return {"anonymous": round(anonymous / 1024, 1), "file": round((rss - anonymous) / 1024, 1),
            "peak": round(peak / 1024, 1)}


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
    parser.add_argument("--every", type=int, default=5, help="Show the service's RSS every this many swaps.")
    args = parser.parse_args()
    load_start, bare_mb = load_average(), bare_import_mb()

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
        process = psutil.Process(service.proc.pid)
        try:
            time.sleep(2)
            rss_start = process.memory_info().rss
            client = DeviceClient(Device("bench", service.url, TOKEN))
            swap(client, packages[0].folder, wait=60)
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
                shown = f", service RSS {rss[-1] / MB:.1f} MB" if i % args.every == 0 else ""
                print(f"swap {i}/{args.swaps}: {result['version']} first detection after "
                      f"{first_detection[-1]:.0f} ms{shown}", file=sys.stderr)
            time.sleep(1)
            during = events.drain()
            status = client.status()
            rss_after = process.memory_info().rss
            memory = memory_mb(process.pid)
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
        "rss_mb": {"bare_import": round(bare_mb, 1), "start": round(rss_start / MB, 1),
                   "before": round(rss_before / MB, 1), "after_half": round(rss[len(rss) // 2 - 1] / MB, 1),
                   "after": round(rss_after / MB, 1), "max": memory["peak"],
                   "growth_over_swaps": round((rss_after - rss_before) / MB, 1),
                   "after_each_swap": [round(v / MB, 1) for v in rss],
                   "at_end": {"anonymous": memory["anonymous"], "file": memory["file"]}},
        "load_avg": {"start": load_start, "end": load_average()},
    }
    every = [f"{i}: {v / MB:.0f}" for i, v in enumerate(rss, 1) if i % args.every == 0]
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
        {"figure": "RSS: bare `import mxnet, cv2` / service at start (MB)",
         "value": f"{figures['rss_mb']['bare_import']} / {figures['rss_mb']['start']}", "note": "no model yet"},
        {"figure": "service RSS with the first model / after the swaps / max (MB)",
         "value": f"{figures['rss_mb']['before']} / {figures['rss_mb']['after']} / {figures['rss_mb']['max']}",
         "note": f"growth {figures['rss_mb']['growth_over_swaps']} MB"},
        {"figure": f"service RSS every {args.every} swaps (MB)", "value": ", ".join(every) or "-"},
        {"figure": "service RSS at end: anonymous / file-backed (MB)",
         "value": f"{memory['anonymous']} / {memory['file']}", "note": "file-backed: shared libraries"},
        {"figure": "load average (1, 5, 15 min) at start / end",
         "value": f"{load_start} / {figures['load_avg']['end']}", "note": f"{os.cpu_count()} CPUs"},
    ], ["figure", "value", "note"])
    save("swap_bench", figures)


if __name__ == "__main__":
    main()
