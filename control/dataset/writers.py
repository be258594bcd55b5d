"""Exports of a Dataset: COCO JSON, Pascal VOC, YOLO, MXNet .lst + RecordIO (.rec/.idx).

Every export appears whole or not at all: files are written under temporary names (a
temporary folder for the one-file-per-image formats) and renamed when complete. Image
references are relative to the export, so that it can be moved with the images.
"""
import contextlib
import datetime
import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET

from core.fileio import atomic_open

from .model import DatasetError, pixels


@contextlib.contextmanager
def atomic_folder(out):
    """A temporary folder beside `out` that replaces `out` once the block succeeds."""
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.")
    try:
        yield tmp
        old = None
        if os.path.exists(out):
            old = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.old.")
            os.replace(out, os.path.join(old, "out"))
        os.replace(tmp, out)
        if old:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _local(dataset, what):
    missing = [image.location for image in dataset.images if not image.path]
    if missing:
        raise DatasetError(f"{what} needs local image files; not found locally: {', '.join(missing[:5])}"
                           + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    return [image.path for image in dataset.images]


def _keys(paths):
    """A name per image without extension: its path below the images' common folder."""
    common = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    return [os.path.splitext(os.path.relpath(p, common))[0] for p in paths]


def _write_names(dataset, file):
    with open(file, "w", encoding="utf-8") as f:
        f.writelines(name + "\n" for name in dataset.classes)


def write_coco(dataset, out, **_):
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    _local(dataset, "a COCO export")
    images, annotations = [], []
    for image_id, image in enumerate(dataset.images, 1):
        images.append({"id": image_id, "file_name": os.path.relpath(image.path, folder),
                       "width": image.width, "height": image.height})
        for box in image.boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": dataset.class_id(box.label) + 1,
                                "bbox": [pixels(box.xmin), pixels(box.ymin), pixels(box.width), pixels(box.height)],
                                "area": pixels(box.width * box.height), "iscrowd": 0})
    document = {"info": {"description": "deeplens-kit export",
                         "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat()},
                "licenses": [], "images": images, "annotations": annotations,
                "categories": [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(dataset.classes)]}
    with atomic_open(out, "w", encoding="utf-8") as f:
        json.dump(document, f)


def write_voc(dataset, out, **_):
    """A folder with one <image path below the common folder>.xml per image, and classes.txt."""
    paths = _local(dataset, "a VOC export")
    with atomic_folder(out) as tmp:
        _write_names(dataset, os.path.join(tmp, "classes.txt"))
        for image, key in zip(dataset.images, _keys(paths)):
            xml_file = os.path.join(tmp, key + ".xml")
            os.makedirs(os.path.dirname(xml_file), exist_ok=True)
            root = ET.Element("annotation")
            ET.SubElement(root, "folder").text = os.path.basename(os.path.dirname(image.path))
            ET.SubElement(root, "filename").text = os.path.basename(image.path)
            ET.SubElement(root, "path").text = os.path.relpath(image.path, os.path.dirname(os.path.join(out, key)))
            size = ET.SubElement(root, "size")
            for tag, value in (("width", image.width), ("height", image.height), ("depth", image.depth)):
                ET.SubElement(size, tag).text = str(value)
            for box in image.boxes:
                obj = ET.SubElement(root, "object")
                ET.SubElement(obj, "name").text = box.label
                ET.SubElement(obj, "difficult").text = "0"
                ET.SubElement(obj, "truncated").text = "0"
                bndbox = ET.SubElement(obj, "bndbox")
                for tag in ("xmin", "ymin", "xmax", "ymax"):
                    ET.SubElement(bndbox, tag).text = str(pixels(getattr(box, tag)))
            ET.indent(root)
            ET.ElementTree(root).write(xml_file, encoding="utf-8", xml_declaration=True)


def write_yolo(dataset, out, **_):
    """classes.txt, images.txt (paths relative to the folder) and labels/<image>.txt."""
    paths = _local(dataset, "a YOLO export")
    with atomic_folder(out) as tmp:
        _write_names(dataset, os.path.join(tmp, "classes.txt"))
        with open(os.path.join(tmp, "images.txt"), "w", encoding="utf-8") as f:
            f.writelines(os.path.relpath(p, os.path.abspath(out)) + "\n" for p in paths)
        for image, key in zip(dataset.images, _keys(paths)):
            label_file = os.path.join(tmp, "labels", key + ".txt")
            os.makedirs(os.path.dirname(label_file), exist_ok=True)
            with open(label_file, "w", encoding="utf-8") as f:
                for box in image.boxes:
                    f.write(f"{dataset.class_id(box.label)} {(box.xmin + box.xmax) / 2 / image.width:.6f} "
                            f"{(box.ymin + box.ymax) / 2 / image.height:.6f} {box.width / image.width:.6f} "
                            f"{box.height / image.height:.6f}\n")


def write_recordio(dataset, out, **_):
    """<prefix>.lst, .rec, .idx for SageMaker's RecordIO input and im2rec; <prefix>.classes.txt.

    Label: header width 2, object width 5, then (class, xmin, ymin, xmax, ymax) normalised;
    the image bytes are packed as they are (no re-encoding).
    """
    from mxnet import recordio
    import numpy as np
    prefix = os.path.splitext(out)[0] if out.endswith((".lst", ".rec", ".idx")) else out
    _local(dataset, "a RecordIO export")
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=folder, prefix=f".{os.path.basename(prefix)}.")
    try:
        record = recordio.MXIndexedRecordIO(os.path.join(tmp, "idx"), os.path.join(tmp, "rec"), "w")
        with open(os.path.join(tmp, "lst"), "w", encoding="utf-8") as lst:
            for index, image in enumerate(dataset.images):
                label = [2.0, 5.0]
                for box in image.boxes:
                    label += [dataset.class_id(box.label), box.xmin / image.width, box.ymin / image.height,
                              box.xmax / image.width, box.ymax / image.height]
                fields = [str(index), "2", "5"] + [f"{v:.6f}" for v in label[2:]] + [os.path.relpath(image.path, folder)]
                lst.write("\t".join(fields) + "\n")
                with open(image.path, "rb") as f:
                    record.write_idx(index, recordio.pack(recordio.IRHeader(0, np.array(label, np.float32), index, 0), f.read()))
        record.close()
        _write_names(dataset, os.path.join(tmp, "classes.txt"))
        for suffix in ("rec", "idx", "lst", "classes.txt"):
            os.replace(os.path.join(tmp, suffix), f"{prefix}.{suffix}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
