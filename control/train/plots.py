"""Charts drawn with OpenCV (no plotting library on a training box): curves and image grids."""
import cv2
import numpy as np

COLOURS = [(200, 80, 20), (40, 160, 40), (30, 30, 220), (160, 40, 160), (20, 160, 200), (120, 120, 0)]
WHITE, GREY, BLACK = (255, 255, 255), (210, 210, 210), (40, 40, 40)


def line_chart(series, title, xlabel, ylabel, size=(640, 420), ylim=None):
    """A chart of `series` {label: (x, y)} with axes, ticks and a legend; returns a BGR image."""
    width, height = size
    left, right, top, bottom = 60, 20, 36, 44
    image = np.full((height, width, 3), 255, np.uint8)
    xs = np.concatenate([np.asarray(x, float) for x, _ in series.values()] or [np.zeros(1)])
    ys = np.concatenate([np.asarray(y, float) for _, y in series.values()] or [np.zeros(1)])
    x0, x1 = (xs.min(), xs.max()) if len(xs) else (0, 1)
    y0, y1 = ylim if ylim else ((ys.min(), ys.max()) if len(ys) else (0, 1))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    px = lambda v: int(left + (v - x0) / (x1 - x0) * (width - left - right))  # noqa: E731
    py = lambda v: int(height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom))  # noqa: E731
    for i in range(6):
        gx, gy = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
        cv2.line(image, (px(gx), top), (px(gx), height - bottom), GREY, 1)
        cv2.line(image, (left, py(gy)), (width - right, py(gy)), GREY, 1)
        cv2.putText(image, f"{gx:.3g}", (px(gx) - 12, height - bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, BLACK, 1)
        cv2.putText(image, f"{gy:.3g}", (4, py(gy) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, BLACK, 1)
    cv2.rectangle(image, (left, top), (width - right, height - bottom), BLACK, 1)
    for i, (label, (x, y)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = np.array([(px(a), py(b)) for a, b in zip(x, y)], np.int32)
        if len(points):
            cv2.polylines(image, [points], False, colour, 2, cv2.LINE_AA)
        # the legend sits in the top margin, right-aligned, where no curve can hide it
        cv2.putText(image, label, (width - right - 110 * (len(series) - i), 24), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1)
    cv2.putText(image, title, (left, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, BLACK, 1)
    cv2.putText(image, xlabel, (width // 2 - 20, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, BLACK, 1)
    cv2.putText(image, ylabel, (4, top - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, BLACK, 1)
    return image


def pr_chart(pr_curves, title="precision-recall at IoU 0.5"):
    return line_chart(pr_curves, title, "recall", "precision", ylim=(0, 1))


def draw_boxes(image, rows, classes, colour, with_score=True):
    """Draw rows [class, (score,) xmin, ymin, xmax, ymax] in pixels onto a copy of `image`."""
    image = image.copy()
    for row in rows:
        cls, coords = int(row[0]), row[-4:]
        x0, y0, x1, y1 = (int(round(v)) for v in coords)
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, 2)
        text = classes[cls] if 0 <= cls < len(classes) else str(cls)
        if with_score and len(row) == 6:
            text += f" {row[1]:.2f}"
        cv2.putText(image, text, (x0 + 2, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return image


def prediction_grid(images, predictions, truths, classes, columns=4, cell=240):
    """Validation images with truth (green) and predictions (red), in a grid."""
    cells = []
    for image, dets, gts in zip(images, predictions, truths):
        shown = draw_boxes(draw_boxes(image, gts, classes, (0, 180, 0), with_score=False), dets, classes, (0, 0, 230))
        cells.append(cv2.resize(shown, (cell, cell)))
    if not cells:
        return np.full((cell, cell, 3), 255, np.uint8)
    cells += [np.full_like(cells[0], 255)] * (-len(cells) % columns)
    return np.vstack([np.hstack(cells[i:i + columns]) for i in range(0, len(cells), columns)])
