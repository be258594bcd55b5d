"""What a dataset holds (per class, per image, box sizes, image sizes), and a PNG of it.

The plot is drawn with OpenCV alone: one bar chart per distribution, no plotting library.
"""
from collections import Counter

import cv2
import numpy as np

from core.fileio import atomic_write_bytes

SIZE_BINS = (0, 16, 32, 64, 96, 128, 192, 256, 384, 512, 10 ** 9)   # box side sqrt(w*h) in px


def stats(dataset):
    per_class = Counter(box.label for image in dataset.images for box in image.boxes)
    per_image = Counter(len(image.boxes) for image in dataset.images)
    sides = np.array([np.sqrt(max(b.width * b.height, 0)) for i in dataset.images for b in i.boxes])
    relative = np.array([b.width * b.height / (i.width * i.height) for i in dataset.images for b in i.boxes])
    histogram = np.histogram(sides, bins=SIZE_BINS)[0] if len(sides) else np.zeros(len(SIZE_BINS) - 1)
    return {
        "images": len(dataset.images),
        "boxes": int(sum(per_class.values())),
        "classes": list(dataset.classes),
        "boxes_per_class": {name: per_class.get(name, 0) for name in dataset.classes},
        "boxes_per_image": {str(k): v for k, v in sorted(per_image.items())},
        "box_side_px": {f"{lo}-{hi}" if hi < 10 ** 9 else f"{lo}+": int(n)
                        for lo, hi, n in zip(SIZE_BINS, SIZE_BINS[1:], histogram)},
        "box_area_fraction": {q: round(float(np.quantile(relative, p)), 4) if len(relative) else None
                              for q, p in (("min", 0), ("p50", 0.5), ("max", 1))},
        "image_sizes": {f"{w}x{h}": n for (w, h), n in Counter((i.width, i.height) for i in dataset.images).most_common()},
    }


def format_stats(result):
    """The stats as lines a person reads."""
    lines = [f"images: {result['images']}", f"boxes: {result['boxes']}"]
    for title, key in (("boxes per class", "boxes_per_class"), ("boxes per image", "boxes_per_image"),
                       ("box side (sqrt of area, px)", "box_side_px"), ("box area / image area", "box_area_fraction"),
                       ("image sizes", "image_sizes")):
        lines.append(f"{title}:")
        lines.extend(f"  {k:>12}  {v}" for k, v in result[key].items())
    return "\n".join(lines)


def plot(result, out, panel=(360, 260)):
    """A PNG with a bar chart per distribution, side by side."""
    panels = [_bars(title, result[key], panel) for title, key in (
        ("boxes per class", "boxes_per_class"), ("boxes per image", "boxes_per_image"),
        ("box side, px", "box_side_px"), ("image sizes", "image_sizes"))]
    ok, png = cv2.imencode(".png", np.hstack(panels))
    atomic_write_bytes(out, png.tobytes())


def _bars(title, counts, size):
    width, height = size
    canvas = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(canvas, title, (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    items = list(counts.items())[:12]
    top = max([v for _, v in items], default=0) or 1
    slot = (width - 20) / max(len(items), 1)
    for i, (label, value) in enumerate(items):
        x0, x1 = int(10 + i * slot + 2), int(10 + (i + 1) * slot - 2)
        y1 = height - 40
        y0 = y1 - int((height - 80) * value / top)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (180, 120, 40), -1)
        cv2.putText(canvas, str(value), (x0, y0 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, str(label)[:9], (x0, height - 24 + (i % 2) * 12), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
