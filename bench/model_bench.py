"""The device runtime's speed and accuracy per variant of one trained model (issue 14).

    python -m bench.model_bench [PACKAGE] [--val MANIFEST] [--calib MANIFEST] [--repeats 300]

PACKAGE is an fp32 package trained on the banknotes (default: the newest one under
bench/results/runs/, which `python -m bench.train_banknotes` leaves), --val and --calib the
validation and training manifests of that split (default: bench/results/banknotes-split/).

Variants, all of the same weights:
- `gluon`: the bare forward pass of the symbol and params as a hybridised Gluon SymbolBlock (the baseline);
- `runtime, no fusion`: the device runtime with MXNet's oneDNN fusion turned off
  (MXNET_SUBGRAPH_BACKEND=NONE), to show what the fusion MXNet does at bind time is worth;
- `runtime`: the device runtime as it runs an fp32 package;
- `runtime, nms_topk 100`: the same graph with MultiBoxDetection keeping 100 boxes, not 400;
- `int8`: the package quantized by `deeplens-ctl model quantize` (calibrated on --calib frames).

Timings take turns in blocks of 20 runs, variant after variant on the same frame, so that all
see the same machine load while each model runs back to back as on the device; "device ms" is the device's detection path (crop + resize, forward, rows), "forward
ms" the forward pass alone. Accuracy is `deeplens-ctl evaluate --json` on --val for each package.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np

from core.detector import Detector
from core.package import load_package, write_package

from . import report
from .train_banknotes import image_paths

RESULTS = report.RESULTS
SPLIT = RESULTS / "banknotes-split"


def newest_package():
    packages = sorted(RESULTS.glob("runs/*/model/model.json"), key=lambda p: p.stat().st_mtime)
    if not packages:
        sys.exit("no trained package under bench/results/runs/: run `python -m bench.train_banknotes` first")
    return packages[-1].parent


def ctl(*args):
    done = subprocess.run([str(Path(sys.executable).parent / "deeplens-ctl"), *map(str, args)],
                          stdout=subprocess.PIPE, text=True, check=True)
    return done.stdout


def with_nms_topk(package, topk, folder):
    """A copy of `package` whose MultiBoxDetection keeps `topk` boxes before suppression."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    graph = json.loads(package.symbol_path.read_text())
    for node in graph["nodes"]:
        if node["op"] == "_contrib_MultiBoxDetection":
            node.setdefault("attrs", {})["nms_topk"] = str(topk)
    (folder / package.symbol_path.name).write_text(json.dumps(graph))
    shutil.copy(package.params_path, folder / package.params_path.name)
    return write_package(folder, package.name, package.classes, package.width, package.height,
                         source={"nms_topk_of": package.version}, values=package.values, precision=package.precision)


def timings(steps, repeats, block=20, warmup=2):
    """{name: (median, p90) ms} of `repeats` runs of each step. Steps take turns in blocks of
    `block` runs, so that all see the same machine load, and within a block a model runs back to
    back, as on the device; the first `warmup` runs of a block (the model's weights coming back
    into the cache after another's) are not counted."""
    times = {name: [] for name in steps}
    for _ in range(-(-repeats // (block - warmup))):
        for name, step in steps.items():
            for i in range(block):
                started = time.perf_counter()
                step()
                if i >= warmup:
                    times[name].append((time.perf_counter() - started) * 1000)
    return {name: (float(np.median(t)), float(np.percentile(t, 90))) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", nargs="?", type=Path, help="an fp32 package trained on the banknotes")
    parser.add_argument("--val", type=Path, default=SPLIT / "val.manifest")
    parser.add_argument("--calib", type=Path, default=SPLIT / "train.manifest")
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args(argv)
    load_before = report.load_average()
    fp32 = load_package(args.package or newest_package())
    work = RESULTS / "model-bench"
    folders = {"fp32": fp32.folder, "fp32, nms_topk 100": with_nms_topk(fp32, 100, work / "topk100").folder}
    quantized = json.loads(ctl("model", "quantize", fp32.folder, "--calib", args.calib, "-o", work / "int8", "--json"))
    folders["int8"] = Path(quantized["package"])
    folders["int8, nms_topk 100"] = with_nms_topk(load_package(folders["int8"]), 100, work / "int8-topk100").folder

    frame = cv2.imread(image_paths(args.val)[0])
    block = mx.gluon.SymbolBlock.imports(str(fp32.symbol_path), ["data"], str(fp32.params_path))
    block.hybridize(static_alloc=True, static_shape=True)
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"       # read when a graph is bound
    detectors = {"runtime, no fusion": Detector.open(fp32.folder)}
    del os.environ["MXNET_SUBGRAPH_BACKEND"]
    detectors.update({"runtime": Detector.open(fp32.folder),
                      "runtime, nms_topk 100": Detector.open(folders["fp32, nms_topk 100"]),
                      "int8": Detector.open(folders["int8"]),
                      "int8, nms_topk 100": Detector.open(folders["int8, nms_topk 100"])})
    batch, region = detectors["int8"].preprocess(frame)
    size = frame.shape[1], frame.shape[0]
    data = mx.nd.array(batch)
    forward = {"gluon": lambda: block(data).wait_to_read(),
               **{name: (lambda d=d: d.infer(batch)) for name, d in detectors.items()}}
    device = {name: (lambda d=d: d.rows(d.infer(d.preprocess(frame)[0]), region, size))
              for name, d in detectors.items()}
    forward_ms, device_ms = timings(forward, args.repeats), timings(device, args.repeats)

    accuracy = {}
    for name, folder in folders.items():
        result = json.loads(ctl("evaluate", folder, args.val, "--json"))
        accuracy[name] = {k: round(result[k], 4) for k in ("map50", "map_coco", "best_f1")}
    package_of = {"runtime, no fusion": "fp32", "runtime": "fp32",
                  "runtime, nms_topk 100": "fp32, nms_topk 100", "int8": "int8",
                  "int8, nms_topk 100": "int8, nms_topk 100"}
    rows = [{"variant": "gluon (baseline: bare forward)", "forward ms (median, p90)": "%.2f, %.2f" % forward_ms["gluon"]}]
    for name, package in package_of.items():
        rows.append({"variant": name, "forward ms (median, p90)": "%.2f, %.2f" % forward_ms[name],
                     "device ms (median, p90)": "%.2f, %.2f" % device_ms[name],
                     "x gluon": round(device_ms[name][0] / forward_ms["gluon"][0], 2),
                     "mAP@0.5": accuracy[package]["map50"], "mAP@[.5:.95]": accuracy[package]["map_coco"]})
    print(f"\n{fp32.folder} ({fp32.version}), {args.repeats} frames each, in turns; validation: {args.val}\n")
    report.table(rows, ["variant", "forward ms (median, p90)", "device ms (median, p90)", "x gluon", "mAP@0.5",
                        "mAP@[.5:.95]"])
    print(f"\nint8 vs fp32 on {quantized['frames']} calibration frames: the same detections on "
          f"{quantized['same_detections']}, largest score difference {quantized['max_score_difference']}")
    print(f"load average (1 min) before / after: {load_before[0]:.2f} / {report.load_average()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    report.save("model", {"package": str(fp32.folder), "version": fp32.version, "repeats": args.repeats,
                          "load_before": load_before, "forward_ms": forward_ms, "device_ms": device_ms,
                          "accuracy": accuracy, "int8_agreement": quantized})


if __name__ == "__main__":
    main()
