"""Load benchmark: does the API stay responsive while streams, slow readers and pollers pile on?

    python -m bench.load_bench [--seconds 60] [--viewers 8] [--slow 8] [--pollers 8] [--live-slots 16]

Runs a real `deeplens-edge serve` (synthetic 1920x1080 camera at 24 fps, the demo detector,
no MQTT) and, for `--seconds`, keeps on it at once:

- `--viewers` /stream viewers that read everything (960 px parts),
- `--slow` /stream clients that read 4 KB every 0.25 s (they reconnect when dropped),
- `--pollers` clients taking /capture (centre square, 300 px) back to back,

while /health is asked every 50 ms. Each stream client connects from its own loopback address
(127.0.0.2, ...), as separate machines would, and the service gets `--live-slots` so that every
stream can be admitted. Before that, `--viewers` viewers alone for 10 s give the CPU one viewer
costs (the service's CPU over its idle CPU, per viewer). The stream clients run in a process of
their own so that their reading does not slow the latency probes.

Targets: /health p99 <= 50 ms, /capture p99 <= 200 ms, the loop at the camera's pace, the
service's RSS growing by at most 50 MB.
"""
import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from edge_service import EdgeService  # noqa: E402

from .report import save, table  # noqa: E402

DEMO_MODEL = Path(__file__).resolve().parent.parent / "edge" / "demo_model"
CAMERA_FPS = 24.0
TARGETS = {"health_p99_ms": 50.0, "capture_p99_ms": 200.0, "rss_growth_mb": 50.0}


# -- stream clients (in their own process) --------------------------------------------------------

def _stream_client(port, source, slow, stop, counters, lock):
    """Keep a /stream open from `source`, reading all of it or (slow) 4 KB every 0.25 s; reconnect
    when refused (after 1 s) or dropped."""
    def add(key, n=1):
        with lock:
            counters[key] = counters.get(key, 0) + n

    kind = "slow" if slow else "viewer"
    while not stop.is_set():
        sock = None
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
            if slow:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /stream?size=960 HTTP/1.1\r\nHost: bench\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                piece = sock.recv(4096)
                if not piece:
                    raise ConnectionError("closed before the head")
                data += piece
            if data.split(b" ", 2)[1] != b"200":
                add(f"{kind}_refused")
                stop.wait(1.0)
                continue
            add(f"{kind}_admitted")
            tail = b""
            while not stop.is_set():
                piece = sock.recv(4096 if slow else 262144)
                if not piece:
                    add(f"{kind}_dropped")
                    break
                window = tail + piece
                add(f"{kind}_parts", window.count(b"--deeplensframe"))
                add(f"{kind}_bytes", len(piece))
                tail = window[-20:]
                if slow:
                    time.sleep(0.25)
        except OSError:
            if not stop.is_set():
                add(f"{kind}_errors")
                stop.wait(0.5)
        finally:
            if sock is not None:
                sock.close()


def stream_clients(port, viewers, slow, stop, out, first_address=2):
    counters, lock = {}, threading.Lock()
    threads = [threading.Thread(target=_stream_client, daemon=True,
                                args=(port, f"127.0.0.{first_address + i}", i >= viewers, stop, counters, lock))
               for i in range(viewers + slow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(counters)


class StreamLoad:
    """`viewers` + `slow` stream clients in a child process; their counters come back at the end."""

    def __init__(self, port, viewers, slow):
        ctx = multiprocessing.get_context("fork")
        self.stop_event, self.out = ctx.Event(), ctx.SimpleQueue()
        self.proc = ctx.Process(target=stream_clients, args=(port, viewers, slow, self.stop_event, self.out),
                                daemon=True)
        self.result = {}

    def __enter__(self):
        self.proc.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.proc.join(20)
        if self.proc.is_alive():
            self.proc.kill()
        elif not self.out.empty():
            self.result = self.out.get()


# -- probes in this process ------------------------------------------------------------------------

def poll(url, path, params, stop, times, errors, pause=0.0):
    session = requests.Session()
    session.trust_env = False
    while not stop.is_set():
        start = time.perf_counter()
        try:
            response = session.get(url + path, params=params, timeout=10)
            response.content
            if response.status_code == 200:
                times.append((time.perf_counter() - start) * 1000)
            else:
                errors.append(response.status_code)
        except requests.RequestException as exc:
            errors.append(type(exc).__name__)
        if pause:
            stop.wait(pause)


def pct(samples, q):
    return float(np.percentile(samples, q)) if samples else None


def ms(value):
    return "-" if value is None else f"{value:.1f}"


def cpu_seconds(proc):
    times = proc.cpu_times()
    return times.user + times.system


def rss_mb(proc):
    return proc.memory_info().rss / 2 ** 20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the full load runs")
    parser.add_argument("--viewers", type=int, default=8)
    parser.add_argument("--slow", type=int, default=8)
    parser.add_argument("--pollers", type=int, default=8)
    parser.add_argument("--live-slots", type=int, default=16, help="the service's live_slots setting")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="load-bench-"))
    service = EdgeService(work, "--broker", "none", "--model", str(DEMO_MODEL), "--threshold", "0.3",
                          "--live-slots", str(args.live_slots)).start()
    figures = {"seconds": args.seconds, "viewers": args.viewers, "slow_readers": args.slow,
               "pollers": args.pollers, "live_slots": args.live_slots, "camera": "synthetic 1920x1080 @ 24 fps",
               "load_avg_before": [round(v, 2) for v in load_before]}
    try:
        proc = psutil.Process(service.proc.pid)
        service.wait_status(lambda s: s["frames_processed"] > 24, timeout=60)
        time.sleep(3)
        rss_before = rss_mb(proc)

        # 1. idle, then viewers alone: what one viewer costs
        cpu0, t0 = cpu_seconds(proc), time.monotonic()
        time.sleep(10)
        idle_cores = (cpu_seconds(proc) - cpu0) / (time.monotonic() - t0)
        with StreamLoad(service.port, args.viewers, 0) as viewers_only:
            time.sleep(2)
            cpu0, t0 = cpu_seconds(proc), time.monotonic()
            time.sleep(10)
            viewer_cores = (cpu_seconds(proc) - cpu0) / (time.monotonic() - t0)
        per_viewer = (viewer_cores - idle_cores) / max(1, args.viewers)
        figures["cpu"] = {"idle_cores": idle_cores, "with_viewers_cores": viewer_cores,
                          "per_viewer_core_share": per_viewer, "viewers_only": viewers_only.result}
        time.sleep(2)

        # 2. the full load
        stop = threading.Event()
        health, health_errors, captures, capture_errors = [], [], [], []
        status0 = service.get("/status").json()
        cpu0, t0 = cpu_seconds(proc), time.monotonic()
        rss_peak = rss_before
        with StreamLoad(service.port, args.viewers, args.slow) as load:
            probes = [threading.Thread(target=poll, args=(service.url, "/health", None, stop, health, health_errors,
                                                          0.05), daemon=True)]
            probes += [threading.Thread(target=poll, args=(service.url, "/capture", {"crop": "square", "size": 300},
                                                           stop, captures, capture_errors), daemon=True)
                       for _ in range(args.pollers)]
            for probe in probes:
                probe.start()
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                time.sleep(1)
                rss_peak = max(rss_peak, rss_mb(proc))
            stop.set()
            for probe in probes:
                probe.join(15)
        elapsed = time.monotonic() - t0
        load_cores = (cpu_seconds(proc) - cpu0) / elapsed
        status1 = service.get("/status").json()
        time.sleep(3)
        rss_after = rss_mb(proc)
        loop_fps = (status1["frames_processed"] - status0["frames_processed"]) / elapsed
        streams = load.result
        figures.update({
            "health_ms": {"p50": pct(health, 50), "p99": pct(health, 99), "max": max(health, default=None),
                          "requests": len(health), "errors": len(health_errors)},
            "capture_ms": {"p50": pct(captures, 50), "p99": pct(captures, 99), "max": max(captures, default=None),
                           "requests": len(captures), "errors": len(capture_errors),
                           "error_kinds": sorted(set(map(str, capture_errors)))},
            "loop": {"fps": loop_fps, "camera_fps": status1["camera"]["fps"],
                     "frames_dropped": status1["frames_dropped"] - status0["frames_dropped"]},
            "service_cores_under_load": load_cores,
            "streams": streams,
            "viewer_fps": streams.get("viewer_parts", 0) / elapsed / max(1, args.viewers),
            "slow_fps": streams.get("slow_parts", 0) / elapsed / max(1, args.slow),
            "rss_mb": {"before": rss_before, "peak": rss_peak, "after": rss_after, "growth": rss_after - rss_before},
            "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        })
    finally:
        service.stop()

    ok = {
        "health": figures["health_ms"]["p99"] is not None and figures["health_ms"]["p99"] <= TARGETS["health_p99_ms"],
        "capture": figures["capture_ms"]["p99"] is not None
        and figures["capture_ms"]["p99"] <= TARGETS["capture_p99_ms"],
        "loop": figures["loop"]["fps"] >= 0.9 * CAMERA_FPS,
        "rss": figures["rss_mb"]["growth"] <= TARGETS["rss_growth_mb"],
    }
    figures["targets_met"] = ok
    print(f"\nLoad for {args.seconds:g} s: {args.viewers} /stream viewers, {args.slow} slow readers, "
          f"{args.pollers} /capture pollers (live_slots {args.live_slots}); synthetic 1920x1080 camera "
          f"at 24 fps, demo detector")
    print(f"machine: {os.cpu_count()} CPUs, load average before {figures['load_avg_before']}, "
          f"after {figures['load_avg_after']}\n")
    h, c, lp, r, s = (figures["health_ms"], figures["capture_ms"], figures["loop"], figures["rss_mb"],
                      figures["streams"])
    rows = [
        {"figure": "/health p50 / p99 ms", "value": f"{ms(h['p50'])} / {ms(h['p99'])}", "target": "p99 <= 50",
         "met": ok["health"], "note": f"{h['requests']} requests, {h['errors']} errors"},
        {"figure": "/capture p50 / p99 ms", "value": f"{ms(c['p50'])} / {ms(c['p99'])}", "target": "p99 <= 200",
         "met": ok["capture"], "note": f"{c['requests']} requests, {c['errors']} errors"},
        {"figure": "loop frames/s", "value": f"{lp['fps']:.1f}", "target": f">= {0.9 * CAMERA_FPS:.1f} (camera 24)",
         "met": ok["loop"], "note": f"camera {lp['camera_fps']} fps, {lp['frames_dropped']} dropped"},
        {"figure": "CPU per viewer (core share)", "value": f"{figures['cpu']['per_viewer_core_share']:.3f}",
         "target": "-", "met": "-", "note": f"idle {figures['cpu']['idle_cores']:.2f}, "
                                            f"{args.viewers} viewers {figures['cpu']['with_viewers_cores']:.2f} cores"},
        {"figure": "service cores under load", "value": f"{figures['service_cores_under_load']:.2f}", "target": "-",
         "met": "-", "note": ""},
        {"figure": "viewer / slow frames/s each", "value": f"{figures['viewer_fps']:.1f} / {figures['slow_fps']:.2f}",
         "target": "-", "met": "-",
         "note": f"admitted {s.get('viewer_admitted', 0)}+{s.get('slow_admitted', 0)}, refused "
                 f"{s.get('viewer_refused', 0)}+{s.get('slow_refused', 0)}, dropped "
                 f"{s.get('viewer_dropped', 0)}+{s.get('slow_dropped', 0)}"},
        {"figure": "RSS before / peak / after MB", "value": f"{r['before']:.0f} / {r['peak']:.0f} / {r['after']:.0f}",
         "target": "growth <= 50", "met": ok["rss"], "note": f"growth {r['growth']:+.1f} MB"},
    ]
    table(rows, ["figure", "value", "target", "met", "note"])
    save("load", figures)


if __name__ == "__main__":
    main()
