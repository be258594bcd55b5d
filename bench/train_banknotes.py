"""Benchmark of issue 5: train the default detector on the shared banknotes set from scratch
within a time budget, evaluate it on a group-aware validation split, time the exported model.

    python -m bench.train_banknotes [--minutes 15] [--arch mobilenet] [--flip rot90] [--speed-only]
    python -m bench.train_banknotes --until-map 0.95 --compare-workers 0,2,2,0

Prints a table and writes bench/results/train_banknotes.json. Training runs the real
`deeplens-ctl train`, evaluation `deeplens-ctl evaluate`, in child processes (so that their
peak memory and wall time are measured as a user would see them). Report the machine's load
with the figures: on a shared machine the timings are perturbed.

`--until-map` (issue 14) measures instead the training time until validation mAP@0.5 first
reaches the target, for each `--workers` value of `--compare-workers` in turn, in one bench
run (list a value twice, ABBA, to even out a drifting machine load): the same command as the
full run, stopped as the studio stops a run (a STOP file) once metrics.csv shows the target,
or at the time budget. Same seed, same batches whatever the workers; but under a time budget
the learning rate follows the clock, so the epoch that first reaches the target varies from run
to run (32 to 42 in eight runs of the same command): compare s/epoch, and time to target over
repeated runs. Writes bench/results/train_banknotes_until_map.json.

Flips: the DeepLens looks straight down on notes lying any way round, and a note's two sides
are not mirror images of each other (text, portraits): quarter turns (`--flip rot90`) make
views that occur, mirroring makes notes that do not exist.
"""
import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import report

REPO = Path(__file__).resolve().parent.parent
BANKNOTES = REPO.parent / "shared" / "datasets" / "banknotes"
RESULTS = report.RESULTS
CLASSES = ["2000RUB", "1000RUB"]       # the set's README: class 0 = 2000 RUB note, 1 = 1000 RUB note


def group_split(manifest, out, seed=0):
    """Split `manifest` 80/20 with `deeplens-ctl manifest split` (group-aware: near-duplicate
    frames stay on one side; stratified by class), after leaving out the frames the dataset
    validator rejects (broken captures) and pointing source-refs at the local files.
    Returns (train path, val path, dropped lines)."""
    from control.dataset import Collector
    from control.dataset.sagemaker import validate
    broken = {p.line for p in validate(Collector(), str(manifest)) if p.severity == "error"}
    out.mkdir(parents=True, exist_ok=True)
    usable = out / "usable.manifest"
    with open(usable, "w") as f:
        for n, line in enumerate(Path(manifest).read_text().splitlines(), 1):
            if line.strip() and n not in broken:
                row = json.loads(line)
                folder, file = row["source-ref"].split("/")[-2:]
                row = dict(row, **{"source-ref": str(BANKNOTES / folder / file),
                                   "cash-metadata": {"class-map": dict(enumerate(CLASSES))}})
                f.write(json.dumps(row) + "\n")
    ctl("manifest", "split", usable, "--seed", seed, "-o", out)
    return out / "train.manifest", out / "val.manifest", sorted(broken)


def ctl(*args):
    """Run deeplens-ctl in a child; returns (stdout, wall seconds). Progress passes to stderr."""
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "deeplens-ctl"), *map(str, args)], cwd=REPO,
                          stdout=subprocess.PIPE, text=True, check=True)
    return done.stdout, time.monotonic() - started


def train_command(args, train, val, name, workers=None):
    """The `deeplens-ctl train` arguments of a run of this bench."""
    return (["train", train, "--val", val, "--name", name, "--arch", args.arch, "--runs-dir", RESULTS / "runs",
             "--time-budget", args.minutes, "--seed", args.seed, "--flip", args.flip,
             "--class-names", ",".join(CLASSES), "--json"] + (["--workers", workers] if workers is not None else []))


def train_until(command, run_dir, target, poll_s=0.5):
    """Run `deeplens-ctl train` and stop it with a STOP file once metrics.csv shows mAP@0.5 >=
    `target` (the run ends after the epoch in progress). Returns (metrics rows, wall seconds)."""
    started, asked = time.monotonic(), False
    child = subprocess.Popen([str(Path(sys.executable).parent / "deeplens-ctl"), *map(str, command)], cwd=REPO,
                             stdout=subprocess.DEVNULL)
    try:
        while child.poll() is None:
            time.sleep(poll_s)
            if not asked and first_reaching(metrics(run_dir), target):
                (run_dir / "STOP").touch()
                asked = True
    finally:
        if child.poll() is None:
            child.kill()
    if child.wait():
        raise SystemExit(f"deeplens-ctl train exited {child.returncode}")
    return metrics(run_dir), time.monotonic() - started


def metrics(run_dir):
    path = run_dir / "metrics.csv"
    return [{k: float(v) for k, v in row.items() if v} for row in csv_rows(path)] if path.is_file() else []


def first_reaching(rows, target):
    return next((row for row in rows if row["map50"] >= target), None)


def compare_workers(args, train, val, stamp):
    """Time to mAP@0.5 >= args.until_map for each --workers value of args.compare_workers."""
    runs = []
    for n, workers in enumerate(int(w) for w in args.compare_workers.split(",")):
        name = f"until-{args.arch}-w{workers}-{stamp}-{n}"
        load_before = report.load_average()
        command = train_command(args, train, val, name, workers)
        rows, wall = train_until(command, RESULTS / "runs" / name, args.until_map)
        reached = first_reaching(rows, args.until_map)
        runs.append({"workers": workers, "command": "deeplens-ctl " + " ".join(map(str, command)),
                     "seconds_to_target": reached and reached["time"],
                     "epoch_reached": reached and int(reached["epoch"]),
                     "epochs": len(rows), "s_per_epoch": round(rows[-1]["time"] / len(rows), 2),
                     "images_per_s": round(float(np.mean([r["images_per_s"] for r in rows])), 1),
                     "best_map50": max(r["map50"] for r in rows), "best_map_coco": max(r["map_coco"] for r in rows),
                     "wall_s": round(wall, 1), "load_before": load_before,
                     "load_after": report.load_average()})
        print(f"workers {workers}: {runs[-1]['seconds_to_target']} s to mAP@0.5 >= {args.until_map} "
              f"(epoch {runs[-1]['epoch_reached']}), load {load_before[0]} -> {runs[-1]['load_after'][0]}",
              file=sys.stderr)
    return runs


def time_package(folder, frame, repeats=200):
    """Median and p90 ms per 300x300 frame, batch 1: the device's detection path (core.detector:
    preprocess, forward on the device runtime, rows) and, interleaved so both see the same machine
    load, the bare forward pass of the same symbol and params as a hybridised Gluon SymbolBlock."""
    import mxnet as mx
    from core.detector import Detector
    detector = Detector.open(folder)
    pkg = detector.package
    block = mx.gluon.SymbolBlock.imports(str(pkg.symbol_path), ["data"], str(pkg.params_path))
    block.hybridize(static_alloc=True, static_shape=True)
    batch, region = detector.preprocess(frame)
    data = mx.nd.array(batch)
    size = frame.shape[1], frame.shape[0]
    steps = {"runtime": lambda: detector.rows(detector.infer(detector.preprocess(frame)[0]), region, size),
             "bare_forward": lambda: block(data).wait_to_read()}
    times = {name: [] for name in steps}
    for i in range(repeats + 10):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            if i >= 10:
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: {"median_ms": round(float(np.median(t)), 2), "p90_ms": round(float(np.percentile(t, 90)), 2)}
            for name, t in times.items()}


def image_paths(manifest):
    """The images of a manifest; relative source-refs start at the manifest's folder."""
    folder = Path(manifest).parent
    return [str(folder / json.loads(line)["source-ref"]) for line in open(manifest)]


def device_matches_predict(package, manifest):
    """Whether the shim's awscam.Model gives, on every validation image, the detections that
    `deeplens-ctl predict` prints (acceptance of issue 5)."""
    import awscam
    model = awscam.Model(package, {"GPU": 1})
    paths = image_paths(manifest)
    predicted = [json.loads(line) for line in ctl("predict", package, *paths, "--threshold", 0)[0].splitlines()]
    import cv2
    worst = 0.0
    for path, printed in zip(paths, predicted):
        parsed = model.parseResult("ssd", model.doInference(cv2.imread(path)))["ssd"]
        if [d["label"] for d in parsed] != [d["class_id"] for d in printed["detections"]]:
            return {"match": False, "image": path}
        for d, p in zip(parsed, printed["detections"]):
            worst = max(worst, abs(d["prob"] - p["score"]), *(abs(a - b) for a, b in zip(
                (d["xmin"], d["ymin"], d["xmax"], d["ymax"]), p["pixels"])))
    return {"match": worst < 0.1, "images": len(paths), "max_abs_difference": round(worst, 4)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15, help="training time budget")
    parser.add_argument("--arch", default="mobilenet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip", default="rot90", help="the camera looks straight down on notes lying any way round")
    parser.add_argument("--speed-only", action="store_true", help="time both architectures, train nothing")
    parser.add_argument("--until-map", type=float, help="time training until validation mAP@0.5 reaches this")
    parser.add_argument("--compare-workers", default="0,2", help="with --until-map: the --workers values, in order")
    args = parser.parse_args()
    import cv2
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    figures = {"load_before": report.load_average(), "args": vars(args)}
    train, val, dropped = group_split(BANKNOTES / "sg-manifest.manifest", RESULTS / "banknotes-split")
    figures["split"] = {"train": sum(1 for _ in open(train)), "val": sum(1 for _ in open(val)), "dropped_lines": dropped}
    if args.until_map:
        figures["runs"] = compare_workers(args, train, val, stamp)
        report.table(until_map_rows(figures, args.until_map), ["workers", "s to target", "epoch", "s/epoch",
                                                               "images/s", "best mAP@0.5", "load before / after"])
        report.save("train_banknotes_until_map", figures)
        return
    frame = cv2.imread(image_paths(val)[0])
    packages = {}
    if not args.speed_only:
        name = f"bench-{args.arch}-{stamp}"
        command = train_command(args, train, val, name)
        out, wall = ctl(*command)
        trained = json.loads(out.strip().splitlines()[-1])
        evaluation = json.loads(ctl("evaluate", trained["package"], val, "--json")[0])
        history = list(csv_rows(Path(trained["run"]) / "metrics.csv"))
        figures["training"] = {
            "command": "deeplens-ctl " + " ".join(map(str, command)), "wall_s": round(wall, 1),
            "train_s": trained["seconds"], "epochs": trained["epochs"], "best_epoch": trained["best_epoch"],
            "images_per_s": round(float(np.mean([float(r["images_per_s"]) for r in history])), 1),
            "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
            **{k: round(evaluation[k], 4) for k in ("map50", "map50_voc07", "map_coco", "best_f1", "best_threshold")},
            "per_class_ap50": {r["name"]: round(r["ap50"], 4) for r in evaluation["per_class"]},
            "confusion": evaluation["confusion"]}
        figures["device_matches_predict"] = device_matches_predict(trained["package"], val)
        packages[args.arch] = trained["package"]
    from core.ssd import dummy_package
    for arch in ("mobilenet", "resnet"):
        folder = packages.get(arch) or dummy_package(RESULTS / "speed" / arch, name=arch, arch=arch).folder
        figures.setdefault("speed", {})[arch] = {"package": str(folder), **time_package(folder, frame)}
    report.table(table_rows(figures), ["figure", "value", "target"])
    report.save("train_banknotes", figures)


def csv_rows(path):
    import csv
    with open(path) as f:
        yield from csv.DictReader(f)


def until_map_rows(figures, target):
    return [{"workers": r["workers"], "s to target": r["seconds_to_target"] or f"not reached (>= {target})",
             "epoch": r["epoch_reached"], "s/epoch": r["s_per_epoch"], "images/s": r["images_per_s"],
             "best mAP@0.5": r["best_map50"], "load before / after": f"{r['load_before'][0]} / {r['load_after'][0]}"}
            for r in figures["runs"]]


def table_rows(figures):
    rows = []
    if "training" in figures:
        t = figures["training"]
        rows += [("mAP@0.5 (VOC all-point), val", f"{t['map50']:.4f}", ">= 0.95"),
                 ("mAP@0.5 (VOC 11-point), val", f"{t['map50_voc07']:.4f}", ""),
                 ("mAP@[.5:.95] (COCO), val", f"{t['map_coco']:.4f}", ""),
                 ("training s / wall s of the command", f"{t['train_s']:.0f} / {t['wall_s']:.0f}", "<= 900"),
                 ("epochs (best)", f"{t['epochs']} ({t['best_epoch']})", ""),
                 ("training images/s", f"{t['images_per_s']:.1f}", ""),
                 ("training peak memory MB", f"{t['peak_memory_mb']}", "<= 3072")]
    for arch, s in figures["speed"].items():
        rows += [(f"{arch}: device runtime ms/frame (median, p90)",
                  f"{s['runtime']['median_ms']:.2f}, {s['runtime']['p90_ms']:.2f}", "<= 8" if arch == "mobilenet" else ""),
                 (f"{arch}: bare forward ms/frame (median, p90)",
                  f"{s['bare_forward']['median_ms']:.2f}, {s['bare_forward']['p90_ms']:.2f}", "")]
    rows.append(("load average (1 min) before / after", f"{figures['load_before'][0]:.2f} / {os.getloadavg()[0]:.2f}",
                 f"{os.cpu_count()} CPUs"))
    return [dict(zip(("figure", "value", "target"), row)) for row in rows]


if __name__ == "__main__":
    main()
