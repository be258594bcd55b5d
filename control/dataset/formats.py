"""Readers and writers looked up by format key; an unknown key lists the valid ones."""
import os

from . import readers, sagemaker, writers
from .collect import Collector
from .model import DatasetError

READERS = {
    "sagemaker": sagemaker.read,
    "labelbox": readers.read_labelbox,
    "labelbox-ndjson": readers.read_labelbox_ndjson,
    "coco": readers.read_coco,
    "voc": readers.read_voc,
    "yolo": readers.read_yolo,
    "labelstudio": readers.read_labelstudio,
    "recordio": readers.read_recordio,
    "images": readers.read_images,
}

WRITERS = {
    "sagemaker": sagemaker.write,
    "coco": writers.write_coco,
    "voc": writers.write_voc,
    "yolo": writers.write_yolo,
    "recordio": writers.write_recordio,
}


def _lookup(table, key, what):
    try:
        return table[key]
    except KeyError:
        raise DatasetError(f"unknown {what} format {key!r}; valid formats: {', '.join(sorted(table))}") from None


def read(format, paths, class_names=None, images_root=None, strict=False, attribute=None):
    """Read one or more exports of `format` into one Dataset under one class map.

    Returns (dataset, problems). `class_names` fixes names and ids (an unknown name is a
    problem); `strict` turns any problem of severity error into a DatasetError.
    """
    reader = _lookup(READERS, format, "input")
    collector = Collector(class_names, images_root)
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        try:
            reader(collector, str(path), attribute=attribute)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"{path}: not a {format} export as documented "
                               f"({type(exc).__name__}: {exc})") from None
    return collector.result(strict)


def write(format, dataset, out, **options):
    """Write `dataset` as `format` at `out` (a file, a folder or a prefix, per format)."""
    options = {key: value for key, value in options.items() if value is not None}
    _lookup(WRITERS, format, "output")(dataset, str(out), **options)
