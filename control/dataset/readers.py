"""Readers of label exports made elsewhere; each feeds a Collector (see collect.py).

Conventions per format (docs/manifest.md, "Formats"): Labelbox, COCO, VOC are pixels;
Label Studio percent of the original size; YOLO and MXNet .lst fractions of the image
size, read from the image file. VOC corners are taken as written (no 1-based shift), as
labelformat and our VOC writer do. Rows are numbered from 1 in messages.
"""
import glob
import json
import math
import os
import xml.etree.ElementTree as ET

from .images import IMAGE_EXTENSIONS
from .model import DatasetError, Problem


def read_images(collector, path, **_):
    """Images as they are: a file, or every image below a folder. Unlabelled, unless a `pull`
    sidecar beside an image holds the true boxes a synthetic camera sent (its `truth`)."""
    files = [path] if os.path.isfile(path) else sorted(
        p for p in glob.glob(os.path.join(path, "**", "*"), recursive=True) if p.lower().endswith(IMAGE_EXTENSIONS))
    for file in files:
        sidecar = os.path.splitext(file)[0] + ".json"
        truth = load_json(sidecar).get("truth", []) if os.path.isfile(sidecar) else []
        boxes = [(obj["label"], *obj["box"], f"truth[{i}]") for i, obj in enumerate(truth)]
        collector.add(sidecar if truth else file, None, os.path.abspath(file), boxes)


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON", [Problem("error", str(path), exc.lineno, None,
                                                                f"{exc.msg} at column {exc.colno}")]) from None


def json_lines(path):
    """(line number, object) of a JSON-lines file; a bad line stops the import."""
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if text.strip():
                try:
                    yield number, json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}: damaged JSON lines, nothing imported", [Problem(
                        "error", str(path), number, None,
                        f"not valid JSON ({exc.msg} at column {exc.colno}); a truncated line?")]) from None


def _xywh(label, box, field):
    left, top = float(box["left"]), float(box["top"])
    return label, left, top, left + float(box["width"]), top + float(box["height"]), field


def read_labelbox(collector, path, **_):
    """Labelbox legacy ("v1") JSON export: an array of data rows."""
    rows = load_json(path)
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: a Labelbox legacy export is a JSON array of rows; for NDJSON use "
                           "--format labelbox-ndjson")
    for number, row in enumerate(rows, 1):
        label = row.get("Label")
        if row.get("Skipped") or not isinstance(label, dict) or not label:
            continue
        refs = [row.get("External ID"), row.get("Labeled Data")]
        if "objects" in label:
            boxes = [_xywh(obj.get("title") or obj.get("value"), obj["bbox"], f"Label.objects[{i}].bbox")
                     for i, obj in enumerate(label["objects"]) if "bbox" in obj]
        else:
            boxes = _legacy_geometry(label)
        collector.add(path, number, refs, boxes, field="External ID")


def _legacy_geometry(label):
    """The oldest export: {class: [{"geometry": [{x, y}, ...]}]} with a bottom-left origin."""
    def boxes(width, height):
        for name, items in label.items():
            for i, item in enumerate(items if isinstance(items, list) else []):
                points = item.get("geometry") if isinstance(item, dict) else None
                if points:
                    xs = [float(p["x"]) for p in points]
                    ys = [height - float(p["y"]) for p in points]
                    yield name, min(xs), min(ys), max(xs), max(ys), f"Label.{name}[{i}].geometry"
    return boxes


def read_labelbox_ndjson(collector, path, **_):
    """Labelbox export v2: one data row per line; per project the latest label counts."""
    for number, row in json_lines(path):
        data_row = row.get("data_row", {})
        media = row.get("media_attributes") or {}
        size = (media["width"], media["height"]) if media.get("width") and media.get("height") else None
        boxes = []
        for project_id, project in (row.get("projects") or {}).items():
            labels = project.get("labels") or []
            if not labels:
                continue
            objects = (labels[-1].get("annotations") or {}).get("objects") or []
            for i, obj in enumerate(objects):
                if obj.get("annotation_kind", "ImageBoundingBox") == "ImageBoundingBox" and "bounding_box" in obj:
                    field = f"projects.{project_id}.labels[{len(labels) - 1}].annotations.objects[{i}].bounding_box"
                    boxes.append(_xywh(obj.get("name") or obj.get("value"), obj["bounding_box"], field))
        refs = [data_row.get(k) for k in ("external_id", "global_key", "row_data", "id")]
        collector.add(path, number, refs, boxes, size=size, field="data_row")


def read_coco(collector, path, **_):
    data = load_json(path)
    try:
        names = {c["id"]: c["name"] for c in data["categories"]}
        images = {i["id"]: i for i in data["images"]}
        annotations = data.get("annotations", [])
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a COCO detection file (missing {exc})") from None
    per_image = {image_id: [] for image_id in images}
    for index, ann in enumerate(annotations):
        field = f"annotations[{index}]"
        if ann.get("image_id") not in images:
            collector.problem("error", path, None, f"{field}.image_id", f"no image with id {ann.get('image_id')!r}")
        elif ann.get("category_id") not in names:
            collector.problem("error", path, None, f"{field}.category_id", f"no category with id {ann.get('category_id')!r}")
        elif not ann.get("iscrowd"):   # crowd regions are ignore areas, not objects
            x, y, w, h = (float(v) for v in ann["bbox"])
            per_image[ann["image_id"]].append((names[ann["category_id"]], x, y, x + w, y + h, f"{field}.bbox"))
    collector.adopt(names[i] for i in sorted(names))
    for index, (image_id, image) in enumerate(images.items()):
        size = (image["width"], image["height"]) if image.get("width") and image.get("height") else None
        collector.add(path, None, image["file_name"], per_image[image_id], size=size, field=f"images[{index}].file_name")


def read_voc(collector, path, **_):
    """Pascal VOC XML: one file, or every .xml below a folder (with classes.txt, if there, for the ids)."""
    files = sorted(glob.glob(os.path.join(path, "**", "*.xml"), recursive=True)) if os.path.isdir(path) else [path]
    names = _names_file(os.path.join(path, "classes.txt"))
    collector.adopt(names.values() if names else ())
    for file in files:
        try:
            root = ET.parse(file).getroot()
        except ET.ParseError as exc:
            raise DatasetError(f"{file}: not valid XML", [Problem("error", file, exc.position[0], None, str(exc))]) from None
        size = root.find("size")
        size = (int(float(size.findtext("width"))), int(float(size.findtext("height")))) \
            if size is not None and size.findtext("width") else None
        boxes = []
        for i, obj in enumerate(root.iter("object")):
            box = obj.find("bndbox")
            corners = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            boxes.append((obj.findtext("name"), *corners, f"object[{i}].bndbox"))
        collector.add(file, None, [root.findtext("path"), root.findtext("filename")], boxes, size=size, field="filename")


def read_yolo(collector, path, **_):
    """A YOLO folder: class names (classes.txt, obj.names or data.yaml), labels/<image>.txt.

    Images are those listed in images.txt (or train.txt), else every image below images/
    (or the folder); each label file mirrors its image's path below their common folder.
    """
    names = _yolo_names(path)
    images = _yolo_images(path)
    if not images:
        raise DatasetError(f"{path}: no images found (images.txt, train.txt or an images/ folder)")
    if names is None:
        collector.reserve_ids(_max_yolo_id(path))
    else:
        collector.adopt(names[i] for i in sorted(names))
    common = os.path.commonpath([os.path.dirname(p) for p in images])
    for image in images:
        stem = os.path.splitext(os.path.relpath(image, common))[0]
        label_file = next((f for f in (os.path.join(path, "labels", stem + ".txt"), os.path.splitext(image)[0] + ".txt")
                           if os.path.isfile(f)), None)
        collector.add(label_file or image, None, image, _yolo_boxes(collector, label_file, names))


def _yolo_boxes(collector, label_file, names):
    def boxes(width, height):
        if label_file is None:
            return
        with open(label_file, encoding="utf-8") as f:
            for number, text in enumerate(f, 1):
                parts = text.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    collector.problem("error", label_file, number, None, f"expected 'class xc yc w h', got {text.strip()!r}")
                    continue
                class_id, (xc, yc, w, h) = int(parts[0]), (float(v) for v in parts[1:])
                name = collector.name_for_id(class_id, names)
                if name is None:
                    collector.problem("error", label_file, number, "class", f"class id {class_id} has no name")
                    continue
                yield (name, (xc - w / 2) * width, (yc - h / 2) * height,
                       (xc + w / 2) * width, (yc + h / 2) * height, f"line {number}")
    return boxes


def _names_file(file):
    """{id: name} of a file with one class name per line, or None if there is none."""
    if not os.path.isfile(file):
        return None
    with open(file, encoding="utf-8") as f:
        return dict(enumerate(line.strip() for line in f if line.strip()))


def _yolo_names(path):
    for name in ("classes.txt", "obj.names"):
        names = _names_file(os.path.join(path, name))
        if names is not None:
            return names
    file = os.path.join(path, "data.yaml")
    if os.path.isfile(file):
        import yaml
        with open(file, encoding="utf-8") as f:
            names = yaml.safe_load(f).get("names")
        return dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
    return None


def _yolo_images(path):
    for name in ("images.txt", "train.txt"):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, encoding="utf-8") as f:
                return [os.path.normpath(os.path.join(path, line.strip())) for line in f if line.strip()]
    folder = os.path.join(path, "images") if os.path.isdir(os.path.join(path, "images")) else path
    return sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                  if p.lower().endswith(IMAGE_EXTENSIONS))


def _max_yolo_id(path):
    ids = [int(line.split()[0]) for file in glob.glob(os.path.join(path, "**", "*.txt"), recursive=True)
           for line in open(file, encoding="utf-8") if line.split() and line.split()[0].isdigit()]
    return max(ids, default=-1)


def read_labelstudio(collector, path, **_):
    """Label Studio JSON export (task list); per task the latest annotation not cancelled."""
    tasks = load_json(path)
    for number, task in enumerate(tasks if isinstance(tasks, list) else [tasks], 1):
        kept = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        results = [r for r in (kept[-1].get("result") if kept else []) if r.get("type") == "rectanglelabels"]
        image = (task.get("data") or {}).get("image") or next(iter((task.get("data") or {}).values()), None)
        if image is None:
            collector.problem("error", path, number, "data.image", "task has no image")
            continue
        size = (results[0]["original_width"], results[0]["original_height"]) if results else None
        boxes = [_labelstudio_box(r, f"annotations[{len(kept) - 1}].result[{i}].value") for i, r in enumerate(results)]
        # Uploaded files are renamed "<8 hex>-<original name>": try the original name too.
        base = os.path.basename(image)
        collector.add(path, number, [image, base.split("-", 1)[1] if "-" in base else None], boxes,
                      size=size, field="data.image")


def _labelstudio_box(result, field):
    """Percent of the original size; a rotation (degrees, about the top-left corner) gives
    the axis-aligned envelope of the rotated box."""
    v, width, height = result["value"], result["original_width"], result["original_height"]
    x, y, w, h = v["x"] / 100 * width, v["y"] / 100 * height, v["width"] / 100 * width, v["height"] / 100 * height
    angle = math.radians(v.get("rotation") or 0)
    cos, sin = math.cos(angle), math.sin(angle)
    xs = [x + dx * cos - dy * sin for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    ys = [y + dx * sin + dy * cos for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    return v["rectanglelabels"][0], min(xs), min(ys), max(xs), max(ys), field


def read_recordio(collector, path, **_):
    """MXNet .lst (as written for im2rec / SageMaker RecordIO): normalised corners.

    `path` is the .lst (or its .rec/.idx, or the prefix); names come from <prefix>.classes.txt
    when it is there, images are relative to the .lst's folder.
    """
    prefix = os.path.splitext(path)[0] if path.endswith((".lst", ".rec", ".idx")) else path
    lst = prefix + ".lst"
    names = _names_file(prefix + ".classes.txt")
    rows = []
    with open(lst, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            parts = text.rstrip("\n").split("\t")
            if len(parts) < 4:
                raise DatasetError(f"{lst}:{number}: expected 'index<TAB>A<TAB>B<TAB>...<TAB>path'")
            header, per_object = int(float(parts[1])), int(float(parts[2]))
            values = [float(v) for v in parts[1 + header:-1]]
            objects = [values[i:i + per_object] for i in range(0, len(values) - per_object + 1, per_object)]
            rows.append((number, parts[-1], objects))
    if names is None:
        collector.reserve_ids(max((int(o[0]) for _, _, objs in rows for o in objs), default=-1))
    else:
        collector.adopt(names[i] for i in sorted(names))

    def boxes_of(objects):
        def boxes(width, height):
            for i, (cls, x0, y0, x1, y1, *_) in enumerate(objects):
                yield (collector.name_for_id(int(cls), names), x0 * width, y0 * height, x1 * width, y1 * height,
                       f"object {i}")
        return boxes

    for number, image, objects in rows:
        collector.add(lst, number, image, boxes_of(objects))
