"""What every reader shares: turning raw rows into checked Images under one class map.

A reader parses its format and calls `Collector.add` per image; the collector finds the
file, reads the size when the export does not say it, maps class names to the global map,
and records each problem (missing image, box outside the image, zero area, unknown class)
with file, line and field. Non-strict, bad boxes are clipped or dropped and reading goes on.
"""
import os

from .images import Resolver, image_size, is_remote
from .model import Box, ClassMap, Dataset, DatasetError, Image, Problem

SLACK = 0.01   # px: fractions written with 6 digits come back a hair outside the image


class Collector:
    def __init__(self, class_names=None, images_root=None):
        self.classes = ClassMap(class_names or (), fixed=bool(class_names))
        self.images_root = images_root
        self.images = {}
        self.problems = []
        self._resolvers = {}

    def problem(self, severity, file, line, field, message):
        self.problems.append(Problem(severity, str(file), line, field, message))

    def name_for_id(self, class_id, names=None):
        """The class name of a numeric id: from the source's own names, else the user's map,
        else the id itself ("0") so ids survive a round trip without names."""
        if names is not None:
            return names.get(class_id)
        if self.classes.fixed:
            return self.classes.names[class_id] if 0 <= class_id < len(self.classes) else None
        return str(class_id)

    def adopt(self, names):
        """Register a source's own class list in its order, unless the user fixed the map."""
        if not self.classes.fixed:
            for name in names:
                self.classes.id(name)

    def reserve_ids(self, max_id):
        """Register unnamed ids 0..max_id in order, so that id N stays id N."""
        if not self.classes.fixed:
            for class_id in range(max_id + 1):
                self.classes.id(str(class_id))

    def resolver(self, base):
        base = os.path.abspath(base)
        if base not in self._resolvers:
            self._resolvers[base] = Resolver(base, self.images_root or base)
        return self._resolvers[base]

    def add(self, file, line, ref, boxes, size=None, base=None, field="image"):
        """Add one image; returns it, or None when it was dropped (the problem is recorded).

        `ref`: a reference or a list of candidates, the first found wins. `boxes`:
        (label, xmin, ymin, xmax, ymax, field) in pixels, or a function of (width, height)
        giving them, for formats in fractions. `size`: (width, height) when the export
        states it, else it is read from the file. `base`: where relative references start
        (default: the folder of `file`).
        """
        refs = [ref] if isinstance(ref, str) else [r for r in ref if r]
        resolver = self.resolver(base or os.path.dirname(os.path.abspath(file)))
        path = next(filter(None, map(resolver.find, refs)), None)
        ref = refs[0] if refs else None
        if path is None:
            if not (ref and is_remote(ref) and size):
                self.problem("error", file, line, field, f"image not found: {ref} (looked under {resolver.root})")
                return None
            self.problem("warning", file, line, field, f"image not found locally, kept as a remote reference: {ref}")
        elif size is None:
            try:
                size = image_size(path)
            except (OSError, ValueError) as exc:
                self.problem("error", file, line, field, f"unreadable image {path}: {exc}")
                return None
        width, height = int(size[0]), int(size[1])
        image = self.images.get(path or ref)
        if image is None:
            image = self.images[path or ref] = Image(path, width, height, ref=None if path else ref)
        for label, xmin, ymin, xmax, ymax, box_field in (boxes(width, height) if callable(boxes) else boxes):
            box = self._check_box(file, line, box_field, label, (xmin, ymin, xmax, ymax), width, height)
            if box is not None and box not in image.boxes:
                image.boxes.append(box)
        return image

    def _check_box(self, file, line, field, label, corners, width, height):
        name = self.classes.canonical(label) if label is not None else None
        if name is None:
            what = f"unknown class {label!r}" if label is not None else "a class id without a name"
            self.problem("error", file, line, field, f"{what}; the class map has: {', '.join(self.classes.names)}")
            return None
        xmin, ymin, xmax, ymax = (float(v) for v in corners)
        shown = "[" + ", ".join(f"{v:g}" for v in corners) + "]"
        if xmax <= xmin or ymax <= ymin:
            self.problem("error", file, line, field, f"zero-area box {shown} (xmin, ymin, xmax, ymax)")
            return None
        if min(xmin, ymin) < -SLACK or xmax > width + SLACK or ymax > height + SLACK:
            clipped = max(xmin, 0), max(ymin, 0), min(xmax, width), min(ymax, height)
            inside = clipped[2] > clipped[0] and clipped[3] > clipped[1]
            self.problem("error", file, line, field, f"box {shown} (xmin, ymin, xmax, ymax) is outside the "
                         f"{width}x{height} image; " + ("clipped" if inside else "dropped"))
            if not inside:
                return None
        xmin, ymin, xmax, ymax = max(xmin, 0), max(ymin, 0), min(xmax, width), min(ymax, height)
        return Box(name, xmin, ymin, xmax, ymax)

    def result(self, strict=False):
        """The Dataset and the problems; with `strict`, any error raises DatasetError instead."""
        errors = [p for p in self.problems if p.severity == "error"]
        if strict and errors:
            raise DatasetError(f"{len(errors)} problem(s) in the input (--strict): nothing written", errors)
        return Dataset(list(self.images.values()), list(self.classes.names)), list(self.problems)
