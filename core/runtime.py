"""The device runtime: an MXNet inference graph bound once on the CPU, as `awscam.Model` runs it.

MXNet fuses an fp32 graph for oneDNN as it binds it (convolution + BatchNorm + ReLU become one
operator: MXNET_SUBGRAPH_BACKEND, "MKLDNN" unless set); an int8 package (core.quantize) holds
a graph already fused and quantized. Frames reach the runtime through core.detector.Detector,
which crops and resizes them."""
import json
import os

import cv2
import mxnet as mx
import numpy as np

from .errors import ModelError

QUANTIZE_OPS = {"_contrib_quantize_v2", "_contrib_quantize", "_sg_mkldnn_quantize"}
# MXNet reads this at every bind: unset, each bind prints "Subgraph backend MKLDNN is activated".
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")


class MXNetModel:
    """An MXNet symbol + params bound once for batch-1 inference on the CPU.

    Input is the resized BGR frame (1x3xHxW, 0..255), as DeepLens code passes it; any
    normalisation lives inside the graph (docs/model-package.md).
    """

    def __init__(self, symbol_path, params_path, width, height, input_name="data"):
        self.width, self.height = int(width), int(height)
        try:
            symbol = mx.sym.load(str(symbol_path))
        except Exception as exc:  # MXNet raises its own MXNetError or ValueError
            raise ModelError(f"cannot load symbol ({exc})", symbol_path) from None
        try:
            saved = mx.nd.load(str(params_path))
        except Exception as exc:
            raise ModelError(f"cannot load params ({exc})", params_path) from None
        args, auxs = {}, {}
        for key, value in saved.items():
            kind, _, name = key.partition(":")
            (auxs if kind == "aux" else args)[name if name else kind] = value
        if input_name not in symbol.list_arguments():
            raise ModelError(f"graph has no input named '{input_name}'", symbol_path)
        missing = [a for a in symbol.list_arguments() if a != input_name and a not in args]
        missing += [a for a in symbol.list_auxiliary_states() if a not in auxs]
        if missing:
            raise ModelError(f"params lack {len(missing)} arrays the graph needs, e.g. {missing[0]}", params_path)
        self.input_name, self.precision = input_name, graph_precision(symbol)
        try:
            self._exe = symbol.simple_bind(mx.cpu(), grad_req="null", **{input_name: (1, 3, self.height, self.width)})
        except Exception as exc:
            raise ModelError(f"graph does not take a 1x3x{self.height}x{self.width} input ({exc})", symbol_path) from None
        try:
            self._exe.copy_params_from(args, auxs, allow_extra_params=True)
        except Exception as exc:
            raise ModelError(f"params do not fit the graph ({exc})", params_path) from None
        self.output_names = [n[:-len("_output")] if n.endswith("_output") else n for n in symbol.list_outputs()]
        self.symbol = symbol

    def non_finite_weights(self):
        """How many bound weights are NaN or infinite."""
        arrays = [*self._exe.arg_dict.items(), *self._exe.aux_dict.items()]
        return sum(int(value.size - np.isfinite(value.asnumpy()).sum()) for name, value in arrays
                   if name != self.input_name)

    @classmethod
    def from_package(cls, pkg):
        return cls(pkg.symbol_path, pkg.params_path, pkg.width, pkg.height)

    def forward(self, batch):
        """Run the graph on a Nx3xHxW float32 array; return {output name: numpy array}.
        The graph is bound for batch 1 (the device's case): a larger batch runs image by image."""
        if len(batch) != 1:
            outputs = [self.forward(batch[i:i + 1]) for i in range(len(batch))]
            return {name: np.concatenate([out[name] for out in outputs]) for name in self.output_names}
        self._exe.arg_dict[self.input_name][:] = batch
        outputs = self._exe.forward(is_train=False)
        return {name: out.asnumpy() for name, out in zip(self.output_names, outputs)}


def graph_nodes(symbol):
    """The graph's nodes as JSON. `remove_amp_cast=False`: with the default, MXNet 1.9.1 leaks a
    copy of the graph at every call (apache/mxnet#19574), which a device that swaps models
    would carry for good; both give the same JSON for graphs without AMP casts."""
    return json.loads(symbol.tojson(remove_amp_cast=False))["nodes"]


def graph_precision(symbol):
    """"int8" for a graph core.quantize made (it quantizes its input somewhere), else "fp32"."""
    ops = {node["op"] for node in graph_nodes(symbol)}
    return "int8" if ops & QUANTIZE_OPS else "fp32"


def resize(image, width, height):
    """Resize for a network or a training frame: area-averaged when shrinking, so thin texture
    does not alias, at a fraction of INTER_AREA's cost on big frames: exact 2:1 area steps (the
    fast path of OpenCV's INTER_AREA) while the image is over twice the target, then one linear step."""
    h, w = image.shape[:2]
    while w > 2 * width and h > 2 * height:
        w, h = w // 2, h // 2
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if (w, h) == (width, height):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if w > 2 * width else cv2.INTER_LINEAR)
