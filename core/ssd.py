"""SSD detectors in MXNet Gluon: the networks `train` fits and the DeepLens graph it exports.

A network is a backbone giving feature maps at a few scales, and per scale a 3x3 conv head
for class scores and one for box offsets, with MultiBoxPrior anchors. `DeployNet` wraps it
into the graph the device runs: SoftmaxActivation(mode='channel') + MultiBoxDetection, built
only from layers the DeepLens model optimizer accepts (docs/model-package.md, "The graph").
Input is the raw BGR frame 0..255; the first layer normalises it (a frozen BatchNorm, which
the optimizer accepts and which costs nothing at inference).
"""
import dataclasses
from pathlib import Path

import mxnet as mx
from mxnet.gluon import nn

from core.package import write_package

BGR_MEAN = (103.53, 116.28, 123.675)
BGR_STD = (57.375, 57.12, 58.395)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What distinguishes one detector from another; looked up by name in ARCHITECTURES."""
    name: str
    backbone: str
    width: float            # channel multiplier of the backbone
    sizes: tuple            # anchor sizes per feature scale, fractions of the input
    ratios: tuple = (1.0, 2.0, 0.5)

    @property
    def anchors_per_cell(self):
        return len(self.sizes[0]) + len(self.ratios) - 1


ARCHITECTURES = {
    a.name: a for a in (
        # The default: fast on two CPU cores, four scales (strides 16, 32, 64, 128 at 300 px).
        Architecture("mobilenet", "mobilenet", 0.5,
                     ((0.1, 0.16), (0.22, 0.32), (0.4, 0.52), (0.62, 0.8))),
        # ResNet-18-style, half width: more capacity for harder sets, at about 3x the cost.
        Architecture("resnet", "resnet", 0.5,
                     ((0.1, 0.16), (0.22, 0.32), (0.4, 0.52), (0.62, 0.8))),
        # Smallest possible, for tests and smoke runs.
        Architecture("tiny", "mobilenet", 0.125,
                     ((0.1, 0.16), (0.22, 0.32), (0.4, 0.52), (0.62, 0.8))),
    )
}


def get_architecture(name):
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of: {', '.join(sorted(ARCHITECTURES))}") from None


def _conv_bn(channels, kernel, stride=1, groups=1):
    block = nn.HybridSequential()
    block.add(nn.Conv2D(channels, kernel, stride, kernel // 2, groups=groups, use_bias=False),
              nn.BatchNorm(), nn.Activation("relu"))
    return block


def _separable(in_channels, out_channels, stride):
    """MobileNet's depthwise 3x3 then pointwise 1x1."""
    block = nn.HybridSequential()
    block.add(_conv_bn(in_channels, 3, stride, groups=in_channels), _conv_bn(out_channels, 1))
    return block


class InputNorm(nn.HybridBlock):
    """(x - mean) / std per BGR channel, as a BatchNorm with frozen statistics."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = nn.BatchNorm(use_global_stats=True, in_channels=3)
        for param in self.bn.collect_params().values():
            param.grad_req = "null"

    def set_statistics(self):
        """Load the fixed BGR mean and std (call after initialisation)."""
        self.bn.gamma.set_data(mx.nd.ones(3))
        self.bn.beta.set_data(mx.nd.zeros(3))
        self.bn.running_mean.set_data(mx.nd.array(BGR_MEAN))
        self.bn.running_var.set_data(mx.nd.array([s * s for s in BGR_STD]))

    def hybrid_forward(self, F, x):
        return self.bn(x)


class Pyramid(nn.HybridBlock):
    """A backbone's feature maps: `stage16` (stride 16), `stage32`, then each of `extras`."""

    def hybrid_forward(self, F, x):
        x = self.stage16(x)
        features = [x]
        x = self.stage32(x)
        features.append(x)
        for extra in self.extras:
            x = extra(x)
            features.append(x)
        return features


class MobileNetFeatures(Pyramid):
    """Feature maps at strides 16, 32, 64 and 128."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        c = lambda n: max(8, int(n * width))  # noqa: E731 - channel count at this width
        with self.name_scope():
            self.stage16 = nn.HybridSequential()
            self.stage16.add(_conv_bn(c(32), 3, 2))
            # MobileNet v1's layers, but the first separable already strides: the 150x150
            # stage costs a third of the forward pass on a CPU and adds little for objects
            # of 1/10 of the frame and up.
            for cin, cout, stride in ((32, 64, 2), (64, 128, 1), (128, 128, 2), (128, 256, 1),
                                      (256, 256, 2), (256, 512, 1), (512, 512, 1), (512, 512, 1)):
                self.stage16.add(_separable(c(cin), c(cout), stride))
            self.stage32 = _separable(c(512), c(1024), 2)
            self.extras = nn.HybridSequential()
            for channels in (c(512), c(256)):
                extra = nn.HybridSequential()
                extra.add(_conv_bn(channels // 2, 1), _conv_bn(channels, 3, 2))
                self.extras.add(extra)



class BasicBlock(nn.HybridBlock):
    """ResNet's two 3x3 convolutions with a shortcut (a 1x1 projection when the shape changes)."""

    def __init__(self, channels, stride, project, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = nn.HybridSequential()
            self.body.add(_conv_bn(channels, 3, stride), nn.Conv2D(channels, 3, 1, 1, use_bias=False), nn.BatchNorm())
            self.shortcut = None
            if project:
                self.shortcut = nn.HybridSequential()
                self.shortcut.add(nn.Conv2D(channels, 1, stride, use_bias=False), nn.BatchNorm())

    def hybrid_forward(self, F, x):
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(self.body(x) + shortcut)


class ResNetFeatures(Pyramid):
    """ResNet-18-style stages (two basic blocks each) on a two-conv stem; feature maps at
    strides 16, 32, 64 and 128: more capacity than the MobileNet, about three times slower."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        c = lambda n: max(8, int(n * width))  # noqa: E731 - channel count at this width
        with self.name_scope():
            self.stage16 = nn.HybridSequential()
            self.stage16.add(_conv_bn(c(32), 3, 2), _conv_bn(c(64), 3, 2))
            for channels, stride in ((64, 1), (128, 2), (256, 2)):
                self.stage16.add(BasicBlock(c(channels), stride, project=stride > 1),
                                 BasicBlock(c(channels), 1, project=False))
            self.stage32 = nn.HybridSequential()
            self.stage32.add(BasicBlock(c(512), 2, project=True), BasicBlock(c(512), 1, project=False))
            self.extras = nn.HybridSequential()
            for channels in (c(512), c(256)):
                extra = nn.HybridSequential()
                extra.add(_conv_bn(channels // 2, 1), _conv_bn(channels, 3, 2))
                self.extras.add(extra)


BACKBONES = {"mobilenet": MobileNetFeatures, "resnet": ResNetFeatures}


class SSD(nn.HybridBlock):
    """Training-time network: returns (class logits (B, N, C+1), box offsets (B, N*4), anchors (1, N, 4))."""

    def __init__(self, arch, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.arch, self.num_classes = arch, num_classes
        per_cell = arch.anchors_per_cell
        with self.name_scope():
            self.norm = InputNorm()
            self.features = BACKBONES[arch.backbone](arch.width)
            self.class_heads = nn.HybridSequential()
            self.box_heads = nn.HybridSequential()
            for _ in arch.sizes:
                self.class_heads.add(nn.Conv2D(per_cell * (num_classes + 1), 3, padding=1))
                self.box_heads.add(nn.Conv2D(per_cell * 4, 3, padding=1))

    def hybrid_forward(self, F, x):
        features = self.features(self.norm(x))
        classes, boxes, anchors = [], [], []
        for feat, sizes, class_head, box_head in zip(features, self.arch.sizes, self.class_heads, self.box_heads):
            # NHWC before flattening so that values group per cell, then per anchor,
            # the order MultiBoxPrior emits its anchors in.
            classes.append(F.flatten(F.transpose(class_head(feat), axes=(0, 2, 3, 1))))
            boxes.append(F.flatten(F.transpose(box_head(feat), axes=(0, 2, 3, 1))))
            anchors.append(F.flatten(F.contrib.MultiBoxPrior(feat, sizes=sizes, ratios=self.arch.ratios)))
        class_preds = F.reshape(F.concat(*classes, dim=1), (0, -1, self.num_classes + 1))
        box_preds = F.concat(*boxes, dim=1)
        anchors = F.reshape(F.concat(*anchors, dim=1), (1, -1, 4))
        return class_preds, box_preds, anchors


class DeployNet(nn.HybridBlock):
    """The device graph: rows [class_id, score, xmin, ymin, xmax, ymax], normalised, -1 when suppressed."""

    def __init__(self, ssd, nms_threshold=0.45, nms_topk=400, **kwargs):
        super().__init__(**kwargs)
        self.ssd, self.nms_threshold, self.nms_topk = ssd, nms_threshold, nms_topk

    def hybrid_forward(self, F, x):
        class_preds, box_preds, anchors = self.ssd(x)
        class_probs = F.SoftmaxActivation(F.transpose(class_preds, axes=(0, 2, 1)), mode="channel")
        return F.contrib.MultiBoxDetection(class_probs, box_preds, anchors, clip=True, threshold=0.01,
                                           nms_threshold=self.nms_threshold, nms_topk=self.nms_topk,
                                           name="detection")


def build(arch_name, num_classes, seed=None):
    """A freshly initialised SSD (He-style init, as the networks train from scratch)."""
    if seed is not None:
        mx.random.seed(seed)
    net = SSD(get_architecture(arch_name), num_classes)
    net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2))
    # Small head weights: He-scaled heads start with logits of std ~4 and a loss of ~70.
    for head in (*net.class_heads, *net.box_heads):
        head.weight.initialize(mx.init.Normal(0.01), force_reinit=True)
    net.norm.set_statistics()
    return net


def export_package(net, folder, name, classes, size, source=None):
    """Export `net` (an SSD) as a model package in `folder`; returns the ModelPackage."""
    width, height = size if isinstance(size, (tuple, list)) else (size, size)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    deploy = DeployNet(net)
    deploy.hybridize()
    deploy(mx.nd.zeros((1, 3, height, width)))
    deploy.export(str(folder / name), epoch=0)
    return write_package(folder, name, classes, width, height, source=source)


def dummy_package(folder, name="dummy", num_classes=2, size=300, arch="tiny", seed=0):
    """A random-weight package for smoke tests and benchmarks: no training needed."""
    net = build(arch, num_classes, seed=seed)
    # Spread the class biases so that random weights still give confident boxes to look at.
    for head in net.class_heads:
        head.bias.set_data(mx.nd.random.normal(0, 3, shape=head.bias.shape))
    classes = [f"class{i}" for i in range(num_classes)]
    return export_package(net, folder, name, classes, size, source={"recipe": "random weights", "arch": arch})
