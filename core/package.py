"""The model package: the one contract between `train`, `swap-model`, the model store and the shim.

A package is a folder holding `<name>-symbol.json`, `<name>-0000.params` (an MXNet inference
graph ending in `_contrib_MultiBoxDetection`) and `model.json`, which names the model, its
version (a short content hash of symbol and params), input size, class names in class_id order,
where it came from, and the SHA-256 of every file (docs/model-package.md).
"""
import dataclasses
import datetime
import hashlib
import json
import math
import os
from pathlib import Path

from .errors import ModelError
from .fileio import atomic_write_text, sha256_file

MODEL_JSON = "model.json"
VERSION_CHARS = 12
# What the graph computes in: "fp32" (the trained graph, which a real DeepLens's model optimizer
# takes) or "int8" (its variant quantized by core.quantize, which the device runtime runs).
PRECISIONS = ("fp32", "int8")


@dataclasses.dataclass
class ModelPackage:
    folder: Path
    name: str
    version: str
    width: int
    height: int
    classes: list
    task: str = "ssd"
    created: str = ""
    source: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)
    values: dict = dataclasses.field(default_factory=dict)  # optional {class: worth}, for counted totals
    precision: str = "fp32"

    @property
    def symbol_path(self):
        return self.folder / f"{self.name}-symbol.json"

    @property
    def params_path(self):
        return self.folder / f"{self.name}-0000.params"

    def to_json(self):
        doc = {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "precision": self.precision,
            "input": {"width": self.width, "height": self.height},
            "classes": list(self.classes),
            "created": self.created,
            "source": self.source,
            "files": self.files,
        }
        if self.values:
            doc["values"] = dict(self.values)
        return doc


def content_version(symbol_path, params_path):
    """The short content hash that names a model version."""
    digest = hashlib.sha256()
    for path in (symbol_path, params_path):
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()[:VERSION_CHARS]


def write_package(folder, name, classes, width, height, source=None, values=None, precision="fp32"):
    """Write `model.json` for the symbol and params already in `folder`; return the package."""
    folder = Path(folder)
    pkg = ModelPackage(folder=folder, name=name, version="", width=int(width),
                       height=int(height), classes=[str(c) for c in classes],
                       created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       source=dict(source or {}), values=dict(values or {}), precision=precision)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    check_values(pkg.values, pkg.classes, folder / MODEL_JSON)
    for path in (pkg.symbol_path, pkg.params_path):
        if not path.is_file():
            raise ModelError("missing; export the network before writing model.json", path)
    pkg.version = content_version(pkg.symbol_path, pkg.params_path)
    pkg.files = {p.name: sha256_file(p) for p in (pkg.symbol_path, pkg.params_path)}
    atomic_write_text(folder / MODEL_JSON, json.dumps(pkg.to_json(), indent=2) + "\n")
    return pkg


def load_package(folder, verify=True):
    """Read and check `folder/model.json`; with `verify`, check every file's SHA-256 too.

    Raises ModelError naming the file and the field at fault.
    """
    folder = Path(folder)
    meta_path = folder / MODEL_JSON
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError("missing: not a model package", meta_path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"not valid JSON ({exc})", meta_path) from None
    if not isinstance(meta, dict):
        raise ModelError("must hold a JSON object", meta_path)

    def field(key, kind, parent=meta, label=None):
        value = parent.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelError(f"field '{label or key}' must be a {kind.__name__}, got {value!r}", meta_path)
        return value

    inp = field("input", dict)
    classes = field("classes", list)
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise ModelError("field 'classes' must list class names in class_id order", meta_path)
    pkg = ModelPackage(
        folder=folder, name=field("name", str), version=field("version", str),
        width=field("width", int, inp, "input.width"), height=field("height", int, inp, "input.height"),
        classes=classes, task=meta.get("task", "ssd"), created=meta.get("created", ""),
        source=meta.get("source") or {}, files=field("files", dict),
        values={} if meta.get("values") is None else meta["values"], precision=meta.get("precision", "fp32"))
    if pkg.precision not in PRECISIONS:
        raise ModelError(f"field 'precision' must be one of {', '.join(PRECISIONS)}, got {pkg.precision!r}",
                         meta_path, field="precision")
    check_values(pkg.values, classes, meta_path)
    for path in (pkg.symbol_path, pkg.params_path):
        if path.name not in pkg.files:
            raise ModelError(f"field 'files' does not list {path.name}", meta_path)
    for filename, expected in pkg.files.items():
        path = folder / filename
        if os.sep in filename or filename.startswith(".") or not path.is_file():
            raise ModelError(f"listed in {MODEL_JSON} 'files' but missing", path)
        if verify and sha256_file(path) != expected:
            raise ModelError(f"SHA-256 does not match {MODEL_JSON} 'files'", path, code="checksum_mismatch")
    if verify and content_version(pkg.symbol_path, pkg.params_path) != pkg.version:
        raise ModelError(f"field 'version' {pkg.version!r} is not the content hash of symbol and params", meta_path,
                         code="checksum_mismatch")
    return pkg


def check_values(values, classes, where):
    """`values` maps some of `classes` to what one of them is worth (a finite number): what the
    device sums into the counted `total` (edge/counting.py). ModelError names the bad entry."""
    if not isinstance(values, dict):
        raise ModelError(f"field 'values' must map class names to numbers, got {str(values)[:100]}", where)
    for name, value in values.items():
        if name not in classes:
            raise ModelError(f"field 'values' names {str(name)[:100]!r}, which is not in 'classes' "
                             f"({', '.join(classes)})", where, field=f"values.{str(name)[:100]}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ModelError(f"field 'values.{name}' must be a finite number, got {value!r}", where,
                             field=f"values.{name}")


def find_checkpoint(folder, name, epoch=0):
    """The DeepLens way: `<name>-symbol.json` and `<name>-<epoch:04d>.params` in `folder`."""
    folder = Path(folder)
    symbol, params = folder / f"{name}-symbol.json", folder / f"{name}-{epoch:04d}.params"
    for path in (symbol, params):
        if not path.is_file():
            raise ModelError("model file not found", path)
    return symbol, params
