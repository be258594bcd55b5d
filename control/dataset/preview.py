"""A contact sheet: images in a grid with their boxes and class names, to check labels by eye."""
import colorsys

import cv2
import numpy as np

from core.fileio import atomic_write_bytes

from .images import read_image


def class_color(class_id):
    """A distinct BGR colour per class id (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618034) % 1.0, 0.9, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def contact_sheet(dataset, out, columns=6, tile=200, limit=36, progress=None):
    """Write a PNG of the first `limit` images, each scaled into a `tile`-pixel square."""
    images = [image for image in dataset.images if image.path][:limit]
    rows = max(1, -(-len(images) // columns))
    sheet = np.full((rows * (tile + 18), columns * tile, 3), 40, np.uint8)
    for index, image in enumerate((progress or (lambda items: items))(images)):
        pixels = read_image(image.path)
        scale = tile / max(pixels.shape[:2])
        pixels = cv2.resize(pixels, (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale))))
        for box in image.boxes:
            color = class_color(dataset.class_id(box.label))
            p0 = (int(box.xmin * scale), int(box.ymin * scale))
            cv2.rectangle(pixels, p0, (int(box.xmax * scale), int(box.ymax * scale)), color, 2)
            cv2.putText(pixels, box.label, (p0[0] + 2, max(p0[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1,
                        cv2.LINE_AA)
        y, x = (index // columns) * (tile + 18), (index % columns) * tile
        sheet[y:y + pixels.shape[0], x:x + pixels.shape[1]] = pixels
        name = image.path.rsplit("/", 1)[-1][:28]
        cv2.putText(sheet, name, (x + 3, y + tile + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (230, 230, 230), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", sheet)
    atomic_write_bytes(out, png.tobytes())
    return len(images)
