"""Counting benchmark: what stabilising buys on the synthetic camera, and what counting costs per frame.

    python -m bench.counting_bench [--frames 3000] [--seeds 0,1001,1002] [--size 640x360]

Accuracy: the shipped demo model (edge/demo_model) runs on every frame of synthetic cameras, whose
true notes are known per frame, through edge.counting.Counter with the device's defaults
(threshold 0.3 as the demo, centre crop). The truth is the notes that lie in the
region the model sees (the centre square of the frame), at least half of it (the camera's own
rule for the frame's edges): what a perfect detector could count. A note's zone is the one that
holds the centre of its part in view, as the device places the box the model gives.
For raw counts (window 1: each frame as it is) and stabilised ones (median windows 3, 5, 7, 9):

- the share of frames whose count equals the truth, per class, for all classes at once, for the
  total (note_2000=2000, note_1000=1000) and for two zones (the model's region cut in halves);
- the same for all classes on frames half a second or more after the last true change
  (`settled_ok`: the table at rest, where a window's lag no longer counts);
- the mean delay from a true change of the counts to the frame whose published counts show
  it (frames, and ms at the camera's 24 fps), and the share of true changes never shown before
  the next one;
- counts messages per minute of camera time (a message for each change of the document),
  beside the truth's own changes per minute.

Cost: Counter.observe at 10 detections per frame, without zones, with 4 zones of 8 points and
with 16 zones of 32 points (the most PUT /zones takes), beside two baselines measured in the
same run: an observer that does nothing (the call itself) and a bare per-label count.
"""
import argparse
import collections
import random
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.detector import Detector  # noqa: E402
from edge.counting import Counter, ZoneStore  # noqa: E402
from edge.demo import DEFAULTS, SHIPPED_MODEL  # noqa: E402
from shims.camera import DEFAULT_FPS, SyntheticCamera  # noqa: E402

from .report import save, table  # noqa: E402

VALUES = {"note_2000": 2000, "note_1000": 1000}
WINDOWS = (1, 3, 5, 7, 9)
BUDGET_MS = 0.5
SETTLED_FRAMES = 12  # half a second after the last true change: the table at rest


class _NoZones:
    zones, zones_only = [], False


def _zone_store(zones):
    store = ZoneStore.__new__(ZoneStore)  # no state folder: the bench changes nothing on disk
    store.zones, store.zones_only, store.source = zones, False, "settings"
    return store


def _halves(region):
    """Two zones, the left and right halves of the region (x, y, w, h normalised) the model sees."""
    from edge.counting import Zone
    x, y, w, h = region
    return [Zone("left", [(x, y), (x + w / 2, y), (x + w / 2, y + h), (x, y + h)]),
            Zone("right", [(x + w / 2, y), (x + w, y), (x + w, y + h), (x + w / 2, y + h)])]


# -- accuracy ------------------------------------------------------------------------------------
def run_camera(detector, seed, frames, size, threshold):
    """Per frame: the truth (class counts, zone counts) and the kept detections of the demo model."""
    camera = SyntheticCamera(seed, size)
    width, height = size
    records = []
    region = None
    for index in range(frames):
        image, truth = camera.render(index)
        batch, pixels = detector.preprocess(image)
        outputs = detector.infer(batch)
        detections = detector.postprocess(outputs, pixels, (width, height), threshold)
        if region is None:
            region = (pixels[0] / width, pixels[1] / height, pixels[2] / width, pixels[3] / height)
        seen = []
        for obj in truth:  # in view: at least half its box inside the region, as the camera's own rule for the frame
            x0, y0, x1, y1 = (obj["box"][0] / width, obj["box"][1] / height, obj["box"][2] / width,
                              obj["box"][3] / height)
            cx0, cy0 = max(x0, region[0]), max(y0, region[1])
            cx1, cy1 = min(x1, region[0] + region[2]), min(y1, region[1] + region[3])
            if cx1 > cx0 and cy1 > cy0 and (cx1 - cx0) * (cy1 - cy0) >= 0.5 * (x1 - x0) * (y1 - y0):
                seen.append((obj["label"], (cx0 + cx1) / 2, (cy0 + cy1) / 2))  # the centre of the part in view
        records.append((seen, detections))
    return records, region


def score(records, region, window):
    """Run the records through a Counter of this window; the figures of `score_docs`."""
    zones = _halves(region)
    counter = Counter(window, VALUES, _zone_store(zones))
    detector = types.SimpleNamespace(version="demo", classes=list(VALUES), name="demo", package=None)
    published = []
    counter.publish = published.append
    truths, shown = [], []
    for index, (seen, kept) in enumerate(records):
        counter.observe(types.SimpleNamespace(seq=index, ts=index / DEFAULT_FPS), detector, kept, kept)
        truth = {"counts": dict.fromkeys(VALUES, 0), "zones": {z.name: dict.fromkeys(VALUES, 0) for z in zones}}
        for label, cx, cy in seen:
            truth["counts"][label] += 1
            for zone in zones:
                if zone.contains(cx, cy):
                    truth["zones"][zone.name][label] += 1
        truth["total"] = sum(n * VALUES[c] for c, n in truth["counts"].items())
        truths.append(truth)
        shown.append(counter.snapshot())
    return score_docs(truths, shown, len(published) - 1)  # the first: counting starts, all at 0


def score_docs(truths, shown, messages):
    frames = len(truths)
    figures = {}
    for label in VALUES:
        figures[f"{label}_ok"] = sum(s["counts"][label] == t["counts"][label] for t, s in zip(truths, shown)) / frames
    figures["all_ok"] = sum(s["counts"] == t["counts"] for t, s in zip(truths, shown)) / frames
    figures["total_ok"] = sum(s["total"] == t["total"] for t, s in zip(truths, shown)) / frames
    figures["zones_ok"] = sum(s["zones"] == t["zones"] for t, s in zip(truths, shown)) / frames
    delays, missed = [], 0
    changes = [i for i in range(1, frames) if truths[i]["counts"] != truths[i - 1]["counts"]]
    settled, last = [], 0
    for i in range(frames):
        last = i if i and truths[i]["counts"] != truths[i - 1]["counts"] else last
        if i - last >= SETTLED_FRAMES:
            settled.append(shown[i]["counts"] == truths[i]["counts"])
    figures["settled_ok"] = sum(settled) / len(settled) if settled else None
    for k, start in enumerate(changes):
        end = changes[k + 1] if k + 1 < len(changes) else frames
        hit = next((i for i in range(start, end) if shown[i]["counts"] == truths[start]["counts"]), None)
        if hit is None:
            missed += 1
        else:
            delays.append(hit - start)
    minutes = frames / DEFAULT_FPS / 60
    figures.update(true_changes=len(changes), delay_frames=statistics.mean(delays) if delays else None,
                   missed_changes=missed / len(changes) if changes else None,
                   messages_per_min=messages / minutes, true_changes_per_min=len(changes) / minutes)
    figures["delay_ms"] = figures["delay_frames"] * 1000 / DEFAULT_FPS if delays else None
    return figures


def accuracy(seeds, frames, size, threshold):
    detector = Detector.open(SHIPPED_MODEL)
    runs = []
    for seed in seeds:
        start = time.perf_counter()
        records, region = run_camera(detector, seed, frames, size, threshold)
        print(f"camera synthetic:{seed}: {frames} frames in {time.perf_counter() - start:.1f} s", flush=True)
        runs.append((records, region))
    rows = []
    for window in WINDOWS:
        per_seed = [score(records, region, window) for records, region in runs]
        row = {"counts": "raw" if window == 1 else f"median {window}", "window": window}
        for key in per_seed[0]:
            values = [f[key] for f in per_seed if f[key] is not None]
            row[key] = statistics.mean(values) if values else None
        row["true_changes"] = sum(f["true_changes"] for f in per_seed)
        rows.append(row)
    return rows


# -- cost ----------------------------------------------------------------------------------------
def _polygon(cx, cy, radius, points):
    import math
    return [(cx + radius * math.cos(2 * math.pi * k / points), cy + radius * math.sin(2 * math.pi * k / points))
            for k in range(points)]


def cost(calls=20000, detections=10):
    from edge.counting import Zone
    rng = random.Random(0)
    frames = []
    for _ in range(500):
        kept = []
        for _ in range(detections):
            x, y = rng.uniform(0.05, 0.9), rng.uniform(0.05, 0.9)
            kept.append({"class_id": 0, "label": rng.choice(list(VALUES)), "score": 0.9,
                         "box": [x, y, x + 0.08, y + 0.06]})
        frames.append(kept)
    detector = types.SimpleNamespace(version="v", classes=list(VALUES), name="bench", package=None)
    four = [Zone(f"z{k}", _polygon(0.25 + 0.5 * (k % 2), 0.25 + 0.5 * (k // 2), 0.24, 8)) for k in range(4)]
    many = [Zone(f"z{k}", _polygon(0.125 + 0.25 * (k % 4), 0.125 + 0.25 * (k // 4), 0.12, 32)) for k in range(16)]

    class Noop:
        def observe(self, frame, detector, detections, kept):
            pass

    class Bare:
        def observe(self, frame, detector, detections, kept):
            collections.Counter(d["label"] for d in kept)

    def counter(zones, zones_only=False):
        store = _zone_store(zones)
        store.zones_only = zones_only
        return Counter(5, VALUES, store)

    cases = [("baseline: no-op observer", Noop()), ("baseline: bare per-label count", Bare()),
             ("Counter, no zones", counter([])), ("Counter, 4 zones x 8 points", counter(four)),
             ("Counter, 4 zones, zones_only", counter(four, True)),
             ("Counter, 16 zones x 32 points", counter(many))]
    rows = []
    for name, observer in cases:
        frame = types.SimpleNamespace(seq=0, ts=0.0)
        for i in range(1000):  # warm up
            observer.observe(frame, detector, frames[i % 500], frames[i % 500])
        times = []
        for i in range(calls):
            kept = frames[i % 500]
            start = time.perf_counter_ns()
            observer.observe(frame, detector, kept, kept)
            times.append(time.perf_counter_ns() - start)
        times.sort()
        rows.append({"case": name, "detections": detections, "mean_us": statistics.mean(times) / 1000,
                     "p50_us": times[len(times) // 2] / 1000, "p99_us": times[int(len(times) * 0.99)] / 1000,
                     "under_budget": times[int(len(times) * 0.99)] / 1e6 < BUDGET_MS})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=3000, help="frames per camera (3000: about 2 min at 24 fps)")
    parser.add_argument("--seeds", default="0,1001,1002", help="synthetic camera seeds (0: the demo's camera)")
    parser.add_argument("--size", default="640x360", help="frame size WIDTHxHEIGHT")
    parser.add_argument("--calls", type=int, default=20000, help="observe() calls per cost case")
    parser.add_argument("--threshold", type=float, default=DEFAULTS["threshold"],
                        help=f"detection threshold (default: the demo's, {DEFAULTS['threshold']})")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    seeds = [int(s) for s in args.seeds.split(",")]
    threshold = args.threshold

    print(f"\ncost of counting per frame (budget {BUDGET_MS} ms at 10 detections)\n")
    costs = cost(args.calls)
    table(costs, ["case", "detections", "mean_us", "p50_us", "p99_us", "under_budget"])

    print(f"\naccuracy on synthetic cameras {seeds}, {args.frames} frames each at {args.size}, demo model, "
          f"threshold {threshold}\n")
    rows = accuracy(seeds, args.frames, size, threshold)
    table(rows, ["counts", *(f"{c}_ok" for c in VALUES), "all_ok", "total_ok", "zones_ok", "settled_ok", "delay_frames",
                 "delay_ms", "missed_changes", "messages_per_min", "true_changes_per_min"])
    save("counting", {"settings": {"frames": args.frames, "seeds": seeds, "size": args.size, "threshold": threshold,
                                   "fps": DEFAULT_FPS, "values": VALUES, "budget_ms": BUDGET_MS},
                      "cost": costs, "accuracy": rows})


if __name__ == "__main__":
    main()
