"""SageMaker Ground Truth object-detection augmented manifests: read, write, validate.

The interchange format of deeplens-kit (design §4): one JSON line per image, `source-ref`,
a label attribute (any name) with `image_size` and pixel `annotations`, and
`<attr>-metadata` with the class-map. Reading is strict about structure (a truncated line
means a damaged file: nothing is imported); validate lists every problem instead.
"""
import datetime
import json
import os

from core.fileio import atomic_open
from core.quality import flat_band_rows

from .images import image_size, read_image
from .model import DatasetError, Problem, pixels

DEFAULT_ATTRIBUTE = "labels"
BOX_KEYS = ("left", "top", "width", "height")


class Record:
    """One parsed manifest line: `annotations` are (class_id, left, top, width, height, field)."""
    __slots__ = ("line", "ref", "size", "annotations", "names", "attribute")

    def __init__(self, line, ref, size, annotations, names, attribute):
        self.line, self.ref, self.size = line, ref, size
        self.annotations, self.names, self.attribute = annotations, names, attribute


def parse(path, attribute=None, problems=None):
    """Records of the manifest at `path`; structural problems are appended to `problems`."""
    records, problems = [], ([] if problems is None else problems)
    with open(path, "rb") as f:     # lines split at b"\n" only: the numbers drop_invalid copies by
        for number, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(_problem(str(path), number, None, f"not UTF-8 text (byte {exc.start + 1}); "
                                         "a damaged line?"))
                continue
            if text.strip():
                record = _parse_line(str(path), number, text, attribute, problems)
                if record is not None:
                    records.append(record)
    return records


def _parse_line(file, line, text, attribute, problems):
    def fail(field, message):
        problems.append(_problem(file, line, field, message))

    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return fail(None, f"not valid JSON ({exc.msg} at column {exc.colno}); a truncated line?")
    if not isinstance(row, dict):
        return fail(None, "a line must be a JSON object")
    ref = row.get("source-ref")
    if not isinstance(ref, str) or not ref:
        return fail("source-ref", "missing or not a string")
    attribute = attribute or _find_attribute(row)
    if attribute is None or not isinstance(row.get(attribute), dict):
        return fail(attribute, "no label attribute (an object with image_size and annotations); "
                    f"keys are: {', '.join(row)}")
    label = row[attribute]
    sizes = label.get("image_size")
    size_ok = (isinstance(sizes, list) and len(sizes) == 1 and isinstance(sizes[0], dict)
               and all(_positive_int(sizes[0].get(k)) for k in ("width", "height")))
    if not size_ok:
        return fail(f"{attribute}.image_size", f"must be [{{\"width\": W, \"height\": H, \"depth\": 3}}], got {sizes!r}")
    annotations = []
    for index, ann in enumerate(label.get("annotations") or []):
        field = f"{attribute}.annotations[{index}]"
        bad = [k for k in ("class_id",) + BOX_KEYS if not _number(ann.get(k) if isinstance(ann, dict) else None)]
        if bad:
            fail(f"{field}.{bad[0]}", f"missing or not a number in {ann!r}")
            continue
        annotations.append((int(ann["class_id"]),) + tuple(float(ann[k]) for k in BOX_KEYS) + (field,))
    if not isinstance(label.get("annotations", []), list):
        fail(f"{attribute}.annotations", "must be a list")
    class_map = (row.get(f"{attribute}-metadata") or {}).get("class-map")
    names = {int(k): v for k, v in class_map.items()} if isinstance(class_map, dict) else None
    return Record(line, ref, (sizes[0]["width"], sizes[0]["height"]), annotations, names, attribute)


def _find_attribute(row):
    for key, value in row.items():
        if key != "source-ref" and not key.endswith("-metadata") and isinstance(value, dict) \
                and "annotations" in value:
            return key
    return None


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _problem(file, line, field, message):
    return Problem("error", file, line, field, message)


def collect(collector, path, attribute=None, strict_structure=True):
    """Add the images of one manifest to `collector`; returns [(line, Image)].

    Structural problems (bad JSON, missing fields) stop the import unless
    `strict_structure` is False (validate), where they are recorded and the line skipped.
    """
    structure = []
    records = parse(path, attribute, structure)
    if structure and strict_structure:
        raise DatasetError(f"{path}: damaged manifest, nothing imported", structure)
    collector.problems.extend(structure)
    unnamed = [cid for r in records if r.names is None for cid, *_ in r.annotations]
    if unnamed:
        collector.reserve_ids(max(unnamed))
    added = []
    for record in records:
        if record.names:
            collector.adopt(record.names[i] for i in sorted(record.names))
        boxes = []
        for class_id, left, top, width, height, field in record.annotations:
            name = collector.name_for_id(class_id, record.names)
            if name is None:
                known = record.names if record.names is not None else dict(enumerate(collector.classes.names))
                collector.problem("error", path, record.line, f"{field}.class_id",
                                  f"class id {class_id} is not in the class-map {json.dumps(known)}")
                continue
            boxes.append((name, left, top, left + width, top + height, field))
        image = collector.add(path, record.line, record.ref, boxes, size=record.size, field="source-ref")
        if image is not None:
            added.append((record, image))
    return added


def read(collector, path, attribute=None, **_):
    collect(collector, path, attribute)


def write(dataset, out, attribute=DEFAULT_ATTRIBUTE, s3_prefix=None, images_root=None):
    """Write `dataset` as a manifest at `out`; source-refs are relative to `out`'s folder,
    or `s3_prefix` + the path below `images_root` (default: the images' common folder)."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    local = [image.path for image in dataset.images if image.path]
    root = images_root or (os.path.commonpath([os.path.dirname(p) for p in local]) if local else folder)
    meta = metadata(dataset.classes)
    with atomic_open(out, "w", encoding="utf-8") as f:
        for image in dataset.images:
            if image.path is None:
                ref = image.ref
            elif s3_prefix:
                ref = s3_prefix.rstrip("/") + "/" + os.path.relpath(image.path, root).replace(os.sep, "/")
            else:
                ref = os.path.relpath(image.path, folder)
            f.write(line(ref, image, [dataset.class_id(b.label) for b in image.boxes], meta, attribute))


def metadata(classes):
    """The `<attr>-metadata` of every line: the class map, and what Ground Truth writes."""
    return {"class-map": {str(i): name for i, name in enumerate(classes)},
            "type": "groundtruth/object-detection", "human-annotated": "yes",
            "creation-date": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat()}


def line(ref, image, class_ids, meta, attribute=DEFAULT_ATTRIBUTE):
    """One manifest line (with its newline) for `image`, whose boxes have the ids `class_ids`."""
    annotations = [{"class_id": class_id, "left": pixels(b.xmin), "top": pixels(b.ymin),
                    "width": pixels(b.width), "height": pixels(b.height)} for class_id, b in zip(class_ids, image.boxes)]
    row = {"source-ref": ref,
           attribute: {"image_size": [{"width": image.width, "height": image.height, "depth": image.depth}],
                       "annotations": annotations},
           f"{attribute}-metadata": meta}
    return json.dumps(row) + "\n"


def validate(collector, path, attribute=None, check_pixels=True, progress=None):
    """Every problem of a manifest: structure, images, sizes, boxes, class ids, broken frames.

    `progress` wraps the per-image loop (a click progress bar). Returns the problems by line.
    """
    added = collect(collector, path, attribute, strict_structure=False)
    if any(record.names is None for record, _ in added) and not collector.classes.fixed:
        first = next(record for record, _ in added if record.names is None)
        collector.problem("warning", path, first.line, f"{first.attribute}-metadata",
                          "no class-map: class ids have no names (pass --class-map to name them)")
    lines = {}
    for record, _ in added:
        lines.setdefault(record.ref, []).append(record.line)
    for ref, numbers in lines.items():
        if len(numbers) > 1:
            collector.problem("warning", path, numbers[0], "source-ref",
                              f"{ref} is listed {len(numbers)} times (lines {', '.join(map(str, numbers))})")
    for record, image in (progress or (lambda items: items))(added):
        if image.path:
            _check_file(collector, path, record, image, check_pixels)
    return sorted(collector.problems, key=lambda p: p.line or 0)


def drop_invalid(path, problems, out):
    """Write `out`: the manifest at `path` without the lines that have an error, every other line
    byte-for-byte (same order, same attributes, blank lines too), so that the fix-up changes
    nothing it keeps. Warnings drop nothing. Returns (kept, total, dropped): counts of JSON
    lines and [(line, reason)].

    Nothing is written when an error has no line (it concerns the whole file, and dropping
    lines would not fix it) or when no line would be left.
    """
    errors = [p for p in problems if p.severity == "error"]
    whole = [p for p in errors if p.line is None]
    if whole:
        raise DatasetError(f"{path}: errors about the whole file, not single lines; {out} not written", whole)
    reasons = {}
    for p in errors:
        reasons.setdefault(p.line, []).append(f"{p.field}: {p.message}" if p.field else p.message)
    with open(path, "rb") as f:
        lines = list(enumerate(f, 1))
    kept = [raw for number, raw in lines if number not in reasons]
    total, left = (sum(bool(raw.strip()) for raw in group) for group in ([raw for _, raw in lines], kept))
    if not left:
        raise DatasetError(f"{path}: no line is free of errors; {out} not written", errors)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_open(out, "wb") as f:
        f.writelines(kept)
    return left, total, [(number, "; ".join(texts)) for number, texts in sorted(reasons.items())]


def _check_file(collector, path, record, image, check_pixels):
    try:
        if check_pixels:
            pixels = read_image(image.path)
            actual = pixels.shape[1], pixels.shape[0]
        else:
            actual = image_size(image.path)
    except (OSError, ValueError) as exc:
        collector.problem("error", path, record.line, "source-ref", f"unreadable image: {exc}")
        return
    if tuple(actual) != tuple(record.size):
        collector.problem("error", path, record.line, f"{record.attribute}.image_size",
                          f"says {record.size[0]}x{record.size[1]} but {image.path} is {actual[0]}x{actual[1]}")
    elif check_pixels:
        rows = flat_band_rows(pixels)
        if rows:
            collector.problem("error", path, record.line, "source-ref",
                              f"broken frame: the bottom {rows} rows of {image.path} are one flat colour "
                              "(a partially decoded capture); drop it or recapture")
