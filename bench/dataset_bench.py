"""Import + validate + export time for a synthetic manifest of N lines (default 10,000).

    python -m bench.dataset_bench [--lines 10000] [--size 160x120] [--keep DIR]

Writes N small JPEGs (distinct noise, 1-3 boxes each) and their manifest in a temporary
folder, then times: import (read the manifest into the dataset model), validate (header
only, and with every image decoded for the broken-frame check) and each export format.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from control.dataset import WRITERS, Collector, read, write
from control.dataset.sagemaker import validate

from . import report


def make_set(folder, lines, width, height):
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (height, width, 3), np.uint8)
    rows = []
    for i in range(lines):
        name = f"img/{i // 1000:02d}/frame_{i:06d}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), np.roll(tile, i, axis=1))
        boxes = []
        for _ in range(1 + i % 3):
            w, h = int(rng.integers(8, width // 2)), int(rng.integers(8, height // 2))
            boxes.append({"class_id": int(rng.integers(0, 3)), "left": int(rng.integers(0, width - w)),
                          "top": int(rng.integers(0, height - h)), "width": w, "height": h})
        rows.append(json.dumps({"source-ref": name, "labels": {
            "image_size": [{"width": width, "height": height, "depth": 3}], "annotations": boxes},
            "labels-metadata": {"class-map": {"0": "cat", "1": "dog", "2": "bird"}}}))
    (folder / "data.manifest").write_text("\n".join(rows) + "\n")
    return folder / "data.manifest"


def timed(func):
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def run(folder, lines, width, height):
    import mxnet.recordio  # noqa: F401 - its one-off import (about a second) is not export time
    setup, manifest = timed(lambda: make_set(folder, lines, width, height))
    rows = []
    seconds, (dataset, problems) = timed(lambda: read("sagemaker", manifest))
    assert not problems and len(dataset.images) == lines
    rows.append({"step": "import (sagemaker)", "seconds": seconds, "lines_per_s": lines / seconds})
    for label, pixels in (("validate --fast (headers)", False), ("validate (decode all)", True)):
        seconds, found = timed(lambda: validate(Collector(), manifest, check_pixels=pixels))
        assert not found, found[:3]
        rows.append({"step": label, "seconds": seconds, "lines_per_s": lines / seconds})
    for format in sorted(WRITERS):
        out = folder / "export" / {"coco": "coco.json", "sagemaker": "out.manifest"}.get(format, format)
        seconds, _ = timed(lambda: write(format, dataset, out))
        rows.append({"step": f"export {format}", "seconds": seconds, "lines_per_s": lines / seconds})
    total = sum(r["seconds"] for r in rows if r["step"] in ("import (sagemaker)", "validate (decode all)"))
    total += max(r["seconds"] for r in rows if r["step"].startswith("export"))
    rows.append({"step": "import + validate + slowest export", "seconds": total, "lines_per_s": lines / total})
    return setup, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--size", default="160x120", help="synthetic image size WxH")
    parser.add_argument("--keep", type=Path, help="build the set in this folder and keep it")
    args = parser.parse_args(argv)
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        setup, rows = run(folder, args.lines, width, height)
    print(f"{args.lines} manifest lines, {args.size} JPEGs (set written in {setup:.1f} s)")
    report.table(rows, ["step", "seconds", "lines_per_s"])
    report.save("dataset_bench", {"lines": args.lines, "image_size": args.size, "steps": rows})


if __name__ == "__main__":
    main()
