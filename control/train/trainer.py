"""The training loop, as a template with callbacks (plain named events), and the run folder.

A run folder `runs/<name>/` holds `args.yaml`, `metrics.csv`, `weights/{best,last}.params`,
`weights/last.states` + `state.json` (what `--resume` continues from), plots and, at the end,
the exported package `model/` and `model.tar.gz` (SageMaker layout).
"""
import dataclasses
import json
import math
import os
import resource
import time
from pathlib import Path

import click
import mxnet as mx
import numpy as np
import yaml
from mxnet import autograd, gluon

from core import ssd
from core.detector import Detector, to_pixels
from core.errors import ModelError
from core.fileio import atomic_write_text, sha256_file
from core.package import MODEL_JSON, load_package

from control.dataset.model import ClassMap

from . import TrainError
from . import callbacks as cb
from .config import ARGS, TrainConfig, lr_at
from .data import BatchMaker, DetectionData, read_manifest
from .loss import SSDLoss
from .metrics import DetectionMetric
from .sagemaker import write_artifact
from .transforms import TrainTransform

STATE = "state.json"


def fitness(row):
    """What "best" means: validation mAP@0.5 and mAP@[.5:.95] alike. mAP@0.5 alone saturates
    near 1 on an easy set and stops the run early, before the boxes tighten."""
    return (row["map50"] + row["map_coco"]) / 2


def peak_memory_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Trainer:
    """Fits an SSD on `train` samples, validating on `val` samples after every epoch."""

    def __init__(self, config, train_samples, val_samples, classes, run_dir, callbacks=()):
        self.config, self.classes, self.run_dir = config, list(classes), Path(run_dir)
        self.callbacks = list(callbacks)
        self.train_data = DetectionData(train_samples, TrainTransform(config.size, flip=config.flip))
        self.val_data = DetectionData(val_samples)
        try:
            self.net = ssd.build(config.arch, len(self.classes), seed=config.seed)
        except ValueError as exc:     # an unknown architecture: the message lists the known ones
            raise TrainError(str(exc)) from None
        self.net.hybridize(static_alloc=True, static_shape=True)
        self.deploy = ssd.DeployNet(self.net)
        self.deploy.hybridize(static_alloc=True)
        # Validation runs the device's detection path (crop policy included) on the graph in memory.
        self.detector = Detector(GluonModel(self.deploy, config.size), self.classes, crop=config.crop)
        self.loss = SSDLoss()
        trainable = {k: v for k, v in self.net.collect_params().items() if v.grad_req != "null"}
        options = {"learning_rate": config.lr, "wd": config.weight_decay}
        if config.optimizer == "sgd":
            options["momentum"] = 0.9
        self.trainer = gluon.Trainer(trainable, config.optimizer, options)
        self.epoch, self.elapsed, self.history, self.stop = 0, 0.0, [], False
        self.init_note = None       # what load_init loaded, in words
        self.last_result = None     # the EvalResult of the latest validation
        self.batch_size = min(config.batch_size, len(self.train_data))
        self.batches_per_epoch = len(self.train_data) // self.batch_size

    # -- the run folder --------------------------------------------------------------------
    @property
    def weights(self):
        return self.run_dir / "weights"

    def save_args(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / ARGS, yaml.safe_dump(dataclasses.asdict(self.config), sort_keys=False))

    def save_checkpoint(self, best):
        """last (and best) weights and optimizer state, each replaced atomically, then
        state.json, which commits the epoch: a kill before it costs that one epoch, no more."""
        self.weights.mkdir(parents=True, exist_ok=True)
        for name in ("last", "best") if best else ("last",):
            tmp = self.weights / f".{name}.params.tmp"
            self.net.save_parameters(str(tmp))
            tmp.replace(self.weights / f"{name}.params")
        tmp = self.weights / ".last.states.tmp"
        self.trainer.save_states(str(tmp))
        tmp.replace(self.weights / "last.states")
        state = {"epoch": self.epoch, "elapsed": self.elapsed, "history": self.history}
        atomic_write_text(self.run_dir / STATE, json.dumps(state) + "\n")

    def restore(self):
        """Continue from the last completed epoch of this run folder."""
        try:
            state = json.loads((self.run_dir / STATE).read_text(encoding="utf-8"))
            self.net.load_parameters(str(self.weights / "last.params"))
            self.trainer.load_states(str(self.weights / "last.states"))
        except (OSError, ValueError, mx.MXNetError) as exc:
            raise TrainError(f"{self.run_dir}: cannot resume ({exc})") from None
        self.epoch, self.elapsed, self.history = state["epoch"], state["elapsed"], state["history"]

    def load_init(self, path):
        """Start from the weights of an earlier run or package (--init), so that a relabel-and-
        retrain round takes minutes. Backbone and box heads are copied as they are; the class
        heads' rows move to each class's position here by name (background too); a class the
        init model lacks starts as an improbable background (copy_weights). Returns what was
        loaded, in words."""
        init, where, config = find_init(path), f"--init {path}", self.config
        if init.arch and init.arch != config.arch:
            raise TrainError(f"{where} is a {init.arch!r} model; this run is --arch {config.arch}")
        if tuple(init.size) != (config.size, config.size):
            raise TrainError(f"{where} takes {init.size[0]}x{init.size[1]} input; this run is --size {config.size}")
        ids = {ClassMap.key(name): i for i, name in enumerate(self.classes)}
        missing = [name for name in init.classes if ClassMap.key(name) not in ids]
        if missing:
            raise TrainError(f"{where} has classes this run lacks: {', '.join(missing)} (it has "
                             f"{', '.join(init.classes)}; this run {', '.join(self.classes)}): "
                             "--init needs the same classes or more")
        rows = [(0, 0)] + [(1 + old, 1 + ids[ClassMap.key(name)]) for old, name in enumerate(init.classes)]
        self.net(mx.nd.zeros((1, 3, config.size, config.size)))     # gives the parameters their shapes
        copy_weights(self.net, init.params, rows, len(init.classes) + 1, where)
        self.init_note = (f"init: {len(init.classes)} of {len(self.classes)} classes from {path}"
                          + (f" (epoch {init.epoch})" if init.epoch else ""))
        return self.init_note

    @property
    def best(self):
        """The history row of the best epoch so far (the first of equals)."""
        return max(self.history, key=fitness) if self.history else None

    # -- the loop ----------------------------------------------------------------------------
    def _emit(self, event, *args):
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def progress(self, step):
        """Fraction of the run done: by steps, or by time when a budget binds sooner."""
        by_steps = step / max(self.config.epochs * self.batches_per_epoch, 1)
        budget = self.config.time_budget * 60
        return max(by_steps, self.elapsed / budget) if budget else by_steps

    def fit(self):
        self._emit("on_train_start")
        with BatchMaker(self.train_data, self.config.workers) as maker:
            while self.epoch < self.config.epochs and not self.stop:
                started = time.monotonic()
                logs = self.train_epoch(maker)
                logs.update(self.validate())
                self.epoch += 1
                self.elapsed += time.monotonic() - started
                logs.update(epoch=self.epoch, time=round(self.elapsed, 1), memory_mb=round(peak_memory_mb()))
                improved = not self.history or fitness(logs) > fitness(self.best)
                self.history.append(logs)
                self.save_checkpoint(best=improved)
                self._emit("on_epoch_end", logs)
        if (self.weights / "best.params").is_file():
            self.net.load_parameters(str(self.weights / "best.params"))
        self._emit("on_train_end")
        return self.history

    def train_epoch(self, maker):
        mx.random.seed(self.config.seed * 100003 + self.epoch)
        self._emit("on_epoch_start", self.batches_per_epoch)
        totals, images, started = np.zeros(3), 0, time.monotonic()
        plan = self.train_data.plan(self.batch_size, self.config.seed, self.epoch)
        for step, (data, labels) in enumerate(maker.batches(plan)):
            self.trainer.set_learning_rate(lr_at(self.config, self.progress(self.epoch * self.batches_per_epoch + step)))
            data, labels = mx.nd.array(data, dtype=np.float32), mx.nd.array(labels)
            with autograd.record():
                class_preds, box_preds, anchors = self.net(data)
                loss, class_loss, box_loss = self.loss(class_preds, box_preds, anchors, labels)
            loss.backward()
            self.trainer.step(1)
            totals += [loss.asscalar(), class_loss.asscalar(), box_loss.asscalar()]
            images += len(data)
            logs = {"loss": totals[0] / (step + 1), "images_per_s": images / (time.monotonic() - started)}
            self._emit("on_batch_end", logs)
        totals /= max(self.batches_per_epoch, 1)
        return {"loss": round(float(totals[0]), 5), "class_loss": round(float(totals[1]), 5),
                "box_loss": round(float(totals[2]), 5), "lr": self.trainer.learning_rate,
                "images_per_s": round(images / (time.monotonic() - started), 2)}

    def predict_val(self, batch_size=16):
        """Detection rows in pixels of each validation image, through the device's detection path."""
        images, out = self.val_data.images, []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            out += [to_pixels(rows, image.shape[1], image.shape[0])
                    for rows, image in zip(self.detector.detect_rows(chunk), chunk)]
        return out

    def validate(self):
        metric = DetectionMetric(self.classes, threshold=self.config.threshold)
        for rows, sample in zip(self.predict_val(), self.val_data.samples):
            metric.update(rows, sample.boxes)
        self.last_result = metric.get()
        return {k: round(v, 5) for k, v in self.last_result.summary().items()
                if k in ("map50", "map50_voc07", "map_coco")}


@dataclasses.dataclass
class Init:
    """Weights to start a run from, and what they fit."""
    params: Path
    classes: list
    arch: str           # None when the package does not say
    size: tuple         # (width, height)
    epoch: int          # the epoch they come from, None when unknown


def find_init(path):
    """The Init of a run folder (weights/best.params, args.yaml) or a model package (model.json)."""
    path = Path(path)
    if (path / MODEL_JSON).is_file():
        try:
            package = load_package(path)
        except ModelError as exc:
            raise TrainError(f"--init: {exc}") from None
        source = package.source if isinstance(package.source, dict) else {}
        recipe = source.get("recipe") if isinstance(source.get("recipe"), dict) else {}
        return Init(package.params_path, package.classes, recipe.get("arch") or source.get("arch"),
                    (package.width, package.height), (source.get("metrics") or {}).get("epoch"))
    if (path / ARGS).is_file():
        if not (path / "weights/best.params").is_file():
            raise TrainError(f"--init {path}: no weights/best.params (the run has not finished an epoch)")
        config = TrainConfig.load(path / ARGS)
        try:
            epoch = max(json.loads((path / STATE).read_text(encoding="utf-8"))["history"], key=fitness)["epoch"]
        except (OSError, ValueError, KeyError, TypeError):
            epoch = None
        return Init(path / "weights/best.params", list(config.classes or []), config.arch,
                    (config.size, config.size), epoch)
    raise TrainError(f"--init {path}: neither a run folder (args.yaml, weights/best.params) "
                     f"nor a model package ({MODEL_JSON})")


def _unprefixed(names):
    """{name without the prefix all `names` share: name}. An export names parameters after the
    net's instance ("ssd0_conv0_weight"), whose counter depends on how many nets a process built."""
    common = os.path.commonprefix(list(names))
    cut = max(common.rfind("_"), common.rfind(".")) + 1
    return {name[cut:]: name for name in names}


def copy_weights(net, params_file, rows, old_count, where):
    """Load `params_file` (saved by save_parameters, or exported: "arg:"/"aux:" names) into `net`;
    class-head channels move from class index `old` to `new` for each (old, new) in `rows`
    (the head's channels are anchor-major, `old_count` classes per anchor there). Every other
    parameter must match by name and shape: a different network fails here, loudly.

    A class without an old row keeps its fresh weights plus background's, with background's
    bias less log(100): a fresh logit near 0 would outbid the trained ones and change every
    old detection, whereas this starts the class at 1/100 of background's odds."""
    try:
        saved = mx.nd.load(str(params_file))
    except mx.MXNetError as exc:
        raise TrainError(f"{where}: cannot read {params_file} ({str(exc).strip().splitlines()[-1]})") from None
    exported = {k.split(":", 1)[1]: v for k, v in saved.items() if k.startswith(("arg:", "aux:"))}
    targets = net.collect_params() if exported else net._collect_params_with_prefix()
    source = {short: (exported or saved)[name] for short, name in _unprefixed(exported or saved).items()}
    targets = {short: targets[name] for short, name in _unprefixed(targets).items()}
    matched = [name for name in targets if name in source]
    if not matched:
        raise TrainError(f"{where}: none of its {len(source)} parameters is one of this {net.arch.name} network's "
                         f"(it has e.g. {next(iter(source), '-')}, this network {next(iter(targets))}): "
                         "a different architecture")
    if len(matched) < len(targets):
        lacking = [name for name in targets if name not in source]
        raise TrainError(f"{where}: lacks {len(lacking)} of the {len(targets)} parameters of this {net.arch.name} "
                         f"network (e.g. {lacking[0]}): a different architecture")
    heads = {id(p) for head in net.class_heads for p in (head.weight, head.bias)}
    per_cell = net.arch.anchors_per_cell
    for name, param in targets.items():
        value, head = source[name], id(param) in heads
        expected = (per_cell * old_count, *param.shape[1:]) if head else param.shape
        if value.shape != expected:
            raise TrainError(f"{where}: {name} is {value.shape} there, {expected} expected for this "
                             f"{net.arch.name} network and {old_count - 1} classes: a different architecture")
        if head:
            old = value.asnumpy().reshape(per_cell, old_count, *value.shape[1:])
            new = param.data().asnumpy().reshape(per_cell, -1, *value.shape[1:])
            fresh = sorted(set(range(new.shape[1])) - {n for _, n in rows})
            new[:, fresh] += old[:, :1] - (math.log(100) if len(param.shape) == 1 else 0)   # 1-D: the bias
            new[:, [n for _, n in rows]] = old[:, [o for o, _ in rows]]
            value = mx.nd.array(new.reshape(param.shape))
        param.set_data(value)


class GluonModel:
    """The trainer's in-memory device graph in the shape core.detector.Detector runs."""

    def __init__(self, deploy, size):
        self.deploy, self.width, self.height = deploy, size, size

    def forward(self, batch):
        return {"detection": self.deploy(mx.nd.array(batch)).asnumpy()}


def train_local(config, train_manifest, val_manifest=None, runs_dir="runs", resume=False, callbacks=None,
                init=None):
    """Read the manifests, fit (or continue) runs/<name>/, export the best weights as
    `model/` (DeepLens package) and `model.tar.gz` (SageMaker layout). Returns (trainer, package).

    `init` (or config.init): a run folder or package to start from instead of random weights
    (Trainer.load_init); a resumed run continues from its own weights instead."""
    run_dir = Path(runs_dir) / config.name
    if init is not None:
        config.init = str(init)
    if resume:
        if not (run_dir / ARGS).is_file():
            raise TrainError(f"{run_dir}: no run to resume (no {ARGS})")
        config = TrainConfig.load(run_dir / ARGS)
    elif (run_dir / STATE).exists():
        raise TrainError(f"{run_dir} already holds a run: --resume it or pick another --name")
    train_samples, classes = read_manifest(train_manifest)
    val_samples = read_manifest(val_manifest)[0] if val_manifest else train_samples
    if config.classes:
        if len(config.classes) != len(classes):
            raise TrainError(f"{len(config.classes)} class names given, the manifest has {len(classes)} classes")
        classes = list(config.classes)
    config.classes = classes
    if callbacks is None:
        callbacks = [cb.ProgressBar(), cb.CSVLogger(), cb.EarlyStopping(config.patience),
                     cb.TimeBudget(config.time_budget), cb.StopRequest(), cb.Plots()]
    trainer = Trainer(config, train_samples, val_samples, classes, run_dir, callbacks)
    if resume:
        trainer.restore()
    elif config.init:
        click.echo(trainer.load_init(config.init), err=True)
    trainer.save_args()
    trainer.fit()
    best = trainer.best
    source = {"manifest_sha256": sha256_file(train_manifest), "recipe": dataclasses.asdict(config),
              "metrics": {k: best[k] for k in ("epoch", "map50", "map_coco")}}
    package = ssd.export_package(trainer.net, run_dir / "model", config.name, classes, config.size, source=source)
    write_artifact(package, run_dir / "model.tar.gz", base_network=config.arch)
    return trainer, package
