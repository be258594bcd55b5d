"""int8 variants of a model package, for the device runtime.

MXNet's oneDNN quantization (`quantize_model_mkldnn`) fuses the graph, then quantizes its
convolutions to int8 with thresholds calibrated ("naive": the min and max seen) on frames
like the ones it will see. The SSD's head (softmax, anchors, reshapes and MultiBoxDetection)
stays fp32: it is cheap, and box decoding and suppression need the precision.

The result is a package of its own (its own version, `"precision": "int8"` in model.json,
`source.quantized_from` naming the fp32 version) that `swap-model` deploys like any other.
The fp32 package stays the one for a real DeepLens, whose model optimizer takes only plain
MXNet layers (docs/model-package.md, "int8 packages").
"""
import mxnet as mx
import numpy as np
from mxnet.contrib.quantization import quantize_model_mkldnn

from .boxes import box_iou
from .crop import DEFAULT_CROP
from .detector import Detector, check_package, ssd_rows
from .errors import ModelError
from .package import write_package
from .runtime import MXNetModel

# Operators kept fp32: the detection head after the last convolutions.
FP32_OPS = ["SoftmaxActivation", "_contrib_MultiBoxPrior", "_contrib_MultiBoxDetection", "Flatten", "transpose",
            "Reshape", "Concat"]
CALIBRATION_FRAMES = 64


def spread(items, count):
    """`count` items spread evenly over `items` (all of them when there are fewer): calibration
    should see the whole set, not its first scene."""
    if len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def quantize_package(package, frames, folder, crop=DEFAULT_CROP):
    """Write the int8 variant of `package` (a ModelPackage) into `folder`, calibrated on
    `frames` (BGR images, as the camera gives them; cropped and resized as the device does).
    Returns (the int8 ModelPackage, agreement with fp32 on the calibration frames: see `agreement`)."""
    if package.precision != "fp32":
        raise ModelError(f"is already {package.precision}: quantize its fp32 package", package.folder / "model.json")
    if not frames:
        raise ModelError("no calibration frames: int8 thresholds come from frames like the camera's", package.folder)
    fp32 = Detector.open(package.folder, crop=crop)
    batch = np.concatenate([fp32.preprocess(frame)[0] for frame in frames])
    symbol = mx.sym.load(str(package.symbol_path))
    args, auxs = {}, {}
    for key, value in mx.nd.load(str(package.params_path)).items():
        kind, _, name = key.partition(":")
        (auxs if kind == "aux" else args)[name] = value
    calibration = mx.io.NDArrayIter(data=mx.nd.array(batch), batch_size=1)
    qsymbol, qargs, qauxs = quantize_model_mkldnn(
        symbol, args, auxs, ctx=mx.cpu(), label_names=(), excluded_op_names=FP32_OPS, calib_mode="naive",
        calib_data=calibration, num_calib_examples=len(batch), quantized_dtype="auto", quantize_mode="smart")
    folder.mkdir(parents=True, exist_ok=True)
    qsymbol.save(str(folder / f"{package.name}-symbol.json"))
    mx.nd.save(str(folder / f"{package.name}-0000.params"),
               {**{f"arg:{k}": v for k, v in qargs.items()}, **{f"aux:{k}": v for k, v in qauxs.items()}})
    source = {"quantized_from": {"version": package.version, "source": package.source},
              "calibration": {"frames": len(batch), "mode": "naive", "crop": crop}}
    int8 = write_package(folder, package.name, package.classes, package.width, package.height, source=source,
                         values=package.values, precision="int8")
    model = MXNetModel.from_package(int8)
    check_package(int8, model)
    return int8, agreement(fp32, Detector(model, int8.classes, crop), batch)


def agreement(fp32, int8, batch, min_score=0.3):
    """How close the int8 graph's detections come to fp32's on `batch`: the frames on which every
    fp32 box scoring at least `min_score` has an int8 box of its class overlapping it (IoU >= 0.5),
    and the largest score difference of those pairs."""
    same, worst = 0, 0.0
    for image in batch:
        a, b = (ssd_rows(d.infer(image[np.newaxis])) for d in (fp32, int8))
        a = a[a[:, 1] >= min_score]
        ious = box_iou(a[:, 2:], b[:, 2:]) * (a[:, None, 0] == b[None, :, 0])
        pairs = ious.argmax(axis=1) if len(b) else np.zeros(0, int)
        matched = len(b) > 0 and bool((ious[np.arange(len(a)), pairs] >= 0.5).all())
        same += matched or not len(a)
        if len(a) and len(b):
            worst = max(worst, float(np.abs(a[:, 1] - b[pairs, 1]).max()))
    return {"frames": len(batch), "same_detections": same, "max_score_difference": round(worst, 4)}
