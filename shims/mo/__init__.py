"""The DeepLens model optimizer, `mo.optimize`, for MXNet models run by this shim's runtime.

On a device `mo.optimize` turns `<name>-symbol.json` + `<name>-<epoch>.params` in
/opt/awscam/artifacts into an OpenVINO `<name>.xml`. Here it checks that the graph loads at
the asked input size and writes `<name>.xml` as a small descriptor naming those files and the
size, which `awscam.Model` reads. Like the device it reports failure as a non-zero status
(and a logged message naming the file at fault), never as an exception.
"""
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from shims import settings
from core.errors import ModelError
from core.fileio import atomic_write_bytes
from core.package import find_checkpoint
from core.runtime import MXNetModel

log = logging.getLogger(__name__)

MAX_INPUT_SIZE = 1024  # the device's limit on input_width and input_height
DESCRIPTOR_TAG = "deeplens-model"


def optimize(model_name, input_width, input_height, platform="MXNet", aux_inputs=None):
    """`(0, path of <name>.xml)` on success, `(1, '')` when the model is missing, broken or
    the arguments are out of range. `aux_inputs` may select the params epoch: `{'--epoch': N}`."""
    folder = Path(settings.artifacts_dir())
    try:
        path = _optimize(folder, model_name, input_width, input_height, platform, dict(aux_inputs or {}))
    except (ModelError, ValueError, OSError) as exc:
        log.error("mo.optimize(%r) failed: %s", model_name, exc)
        return 1, ""
    log.info("mo.optimize(%r): wrote %s", model_name, path)
    return 0, str(path)


def _optimize(folder, model_name, width, height, platform, aux_inputs):
    if str(platform).lower() != "mxnet":
        raise ValueError(f"platform {platform!r} is not supported here: only MXNet models run on this shim")
    if not isinstance(model_name, str) or not model_name or "/" in model_name:
        raise ValueError(f"model_name {model_name!r} must be the base name of files in {folder}")
    for label, size in (("input_width", width), ("input_height", height)):
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_INPUT_SIZE:
            raise ValueError(f"{label} must be an integer in 1..{MAX_INPUT_SIZE}, got {size!r}")
    epoch = aux_inputs.pop("--epoch", 0)
    if not str(epoch).isdigit():
        raise ValueError(f"aux_inputs '--epoch' must be a non-negative integer, got {epoch!r}")
    if aux_inputs:
        log.warning("mo.optimize(%r): ignoring model optimizer flags %s", model_name, sorted(aux_inputs))
    symbol, params = find_checkpoint(folder, model_name, int(epoch))
    MXNetModel(symbol, params, width, height)  # raises ModelError naming the file at fault
    path = folder / f"{model_name}.xml"
    write_descriptor(path, symbol, params, width, height)
    return path


def write_descriptor(path, symbol, params, width, height):
    """Write the `.xml` that stands for an optimized model; files are named relative to it."""
    root = ET.Element(DESCRIPTOR_TAG, framework="MXNet")
    ET.SubElement(root, "symbol").text = Path(symbol).name
    ET.SubElement(root, "params").text = Path(params).name
    ET.SubElement(root, "input", width=str(width), height=str(height))
    atomic_write_bytes(path, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def read_descriptor(path):
    """`(symbol path, params path, width, height)` of a `.xml` that `optimize` wrote."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise ModelError("not found", path) from None
    except (ET.ParseError, OSError) as exc:
        raise ModelError(f"not readable XML ({exc})", path) from None
    if root.tag != DESCRIPTOR_TAG:
        raise ModelError(f"not written by this mo shim (root <{root.tag}>, expected <{DESCRIPTOR_TAG}>); "
                         "run mo.optimize on the MXNet <name>-symbol.json and params", path)
    symbol, params, size = root.findtext("symbol"), root.findtext("params"), root.find("input")
    try:
        width, height = int(size.get("width")), int(size.get("height"))
    except (AttributeError, TypeError, ValueError):
        raise ModelError("<input width= height=> missing or not integers", path) from None
    if not symbol or not params:
        raise ModelError("<symbol> or <params> missing", path)
    return path.parent / symbol, path.parent / params, width, height
