"""The device runtime: an MXNet inference graph bound once on the CPU, as `awscam.Model` runs it.

Frames reach it through core.detector.Detector, which crops and resizes them."""
import cv2
import mxnet as mx
import numpy as np

from .errors import ModelError


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
        self.input_name = input_name
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


def resize(image, width, height):
    """Resize for a network or a training frame: area-averaged when shrinking, so thin texture
    does not alias, at a fraction of INTER_AREA's cost on big frames (linear to twice the
    target first, then an exact 2:1 area step)."""
    h, w = image.shape[:2]
    if w <= 2 * width or h <= 2 * height:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if w > width else cv2.INTER_LINEAR)
    image = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)

