"""Local training: a tiny model for a few epochs on synthetic images; the run folder, the
exported package, resume after a kill, reproducibility and refusal of bad manifests."""
import json
import shutil

import awscam
import cv2
import mxnet as mx
import numpy as np
import pytest

from control.train import TrainError
from control.train.config import FLIPS, TrainConfig
from control.train.data import read_manifest
from core.detector import Detector, to_pixels
from core.package import write_package
from core.ssd import dummy_package
from control.train.callbacks import Callback, StopRequest
from control.train.trainer import train_local
from control.train.transforms import TrainTransform

CLASSES = ["red", "blue"]


def write_synthetic_set(folder, count=8, size=96, seed=0, name="data.manifest"):
    """Noisy images with one or two coloured rectangles (class 0 red, 1 blue) and a manifest."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        image = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
        annotations = []
        for _ in range(1 + i % 2):
            cls = int(rng.integers(0, 2))
            w, h = (int(v) for v in rng.integers(size // 4, size // 2, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            image[y:y + h, x:x + w] = (40, 40, 230) if cls == 0 else (230, 60, 40)
            annotations.append({"class_id": cls, "left": x, "top": y, "width": w, "height": h})
        cv2.imwrite(str(folder / f"img{i}.png"), image)
        lines.append(json.dumps({"source-ref": f"img{i}.png", "labels": {
            "image_size": [{"width": size, "height": size, "depth": 3}], "annotations": annotations},
            "labels-metadata": {"class-map": dict(enumerate(CLASSES))}}))
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_config(**overrides):
    options = dict(name="tiny", arch="tiny", size=96, epochs=8, batch_size=4, lr=0.005, warmup_epochs=1,
                   patience=0, seed=0)
    options.update(overrides)
    return TrainConfig(**options)


def test_loss_falls_and_the_run_folder_is_complete(trained):
    trainer, package, _ = trained
    losses = [row["loss"] for row in trainer.history]
    assert len(losses) == 8 and np.mean(losses[-2:]) < 0.85 * np.mean(losses[:2])
    run = trainer.run_dir
    for name in ("args.yaml", "metrics.csv", "weights/best.params", "weights/last.params", "loss.png",
                 "map.png", "pr_curves.png", "val_predictions.jpg", "model/model.json", "model.tar.gz"):
        assert (run / name).is_file(), name
    assert (run / "metrics.csv").read_text().count("\n") == 9
    assert package.classes == CLASSES and (package.width, package.height) == (96, 96)
    assert package.source["metrics"]["epoch"] >= 1


def test_package_detections_match_the_device_shim_and_the_training_graph(trained):
    trainer, package, manifest = trained
    detector = Detector.open(package.folder)
    device = awscam.Model(str(package.folder), {"GPU": 1})
    for image, gluon_rows in zip(trainer.val_data.images, trainer.predict_val()):
        rows = to_pixels(detector.detect_rows([image])[0], 96, 96)  # images are 96x96, the input size
        parsed = device.parseResult("ssd", device.doInference(image))["ssd"]
        shim = np.array([[d["label"], d["prob"], d["xmin"], d["ymin"], d["xmax"], d["ymax"]] for d in parsed])
        np.testing.assert_allclose(rows, shim.reshape(-1, 6), atol=1e-4)
        top = gluon_rows[np.argsort(-gluon_rows[:, 1], kind="stable")][:5]
        np.testing.assert_allclose(rows[:5], top, atol=1e-3)


class Kill(Callback):
    """Dies like a killed process after `epochs` completed epochs."""

    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, trainer, logs):
        if trainer.epoch == self.epochs:
            raise KeyboardInterrupt


def test_a_killed_run_resumes_without_losing_epochs(tmp_path):
    manifest = write_synthetic_set(tmp_path / "data", count=4)
    config = tiny_config(name="killed", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_local(config, manifest, runs_dir=tmp_path / "runs", callbacks=[Kill(2)])
    done = json.loads((tmp_path / "runs/killed/state.json").read_text())["history"]
    assert [row["epoch"] for row in done] == [1, 2]
    with pytest.raises(TrainError, match="already holds a run"):
        train_local(config, manifest, runs_dir=tmp_path / "runs")
    trainer, _ = train_local(TrainConfig(name="killed"), manifest, runs_dir=tmp_path / "runs", resume=True, callbacks=[])
    assert [row["epoch"] for row in trainer.history] == [1, 2, 3]
    assert trainer.history[:2] == done
    assert trainer.config.arch == "tiny"      # the saved args.yaml, not the defaults passed in


def test_same_seed_same_run(tmp_path):
    manifest = write_synthetic_set(tmp_path / "data", count=4)
    runs = [train_local(tiny_config(name=f"r{i}", epochs=1), manifest, runs_dir=tmp_path, callbacks=[])[0]
            for i in range(2)]
    assert runs[0].history[0]["loss"] == pytest.approx(runs[1].history[0]["loss"], rel=1e-4)


def test_invalid_manifest_is_refused_before_training(tmp_path):
    manifest = write_synthetic_set(tmp_path / "data", count=3)
    (tmp_path / "data" / "img1.png").unlink()
    with pytest.raises(TrainError, match=r"data.manifest:2.*img1.png"):
        train_local(tiny_config(), manifest, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_the_validators_messages_refuse_the_raw_banknotes_set(banknotes):
    # two frames of the shared set are partially decoded captures: the validator says which
    with pytest.raises(TrainError, match=r"(?s):54: error.*2000_front_44.jpeg.*:201: error.*1000_back_27.jpeg"):
        read_manifest(banknotes / "sg-manifest.manifest")


@pytest.mark.parametrize("flip", ["mirror", "rot180", "rot90"])
def test_flips_and_turns_move_boxes_with_the_pixels(flip):
    image = np.zeros((60, 100, 3), np.uint8)
    image[10:20, 5:30] = 255
    boxes = np.array([[0, 5, 10, 30, 20]], np.float32)
    transform, rng = TrainTransform(96, flip=flip), np.random.default_rng(0)
    for _ in range(8):
        out, moved = transform.flipped(image, boxes, rng)
        x0, y0, x1, y1 = (int(v) for v in moved[0, 1:])
        assert out[y0:y1, x0:x1].min() == 255 and out.sum() == image.sum() and (y1 - y0) * (x1 - x0) == 250


@pytest.mark.parametrize("flip", list(FLIPS))
def test_augmented_boxes_stay_inside_the_image(flip):
    rng = np.random.default_rng(0)
    transform = TrainTransform(96, flip=flip)
    image = np.full((80, 120, 3), 100, np.uint8)
    boxes = np.array([[0, 10, 10, 60, 50], [1, 70, 20, 110, 70]], np.float32)
    for _ in range(50):
        data, labels = transform(image, boxes, rng)
        assert data.shape == (3, 96, 96) and len(labels) >= 1
        assert labels[:, 1:].min() >= 0 and labels[:, 1:].max() <= 1
        assert np.all(labels[:, 3:] > labels[:, 1:3])


# -- --init: start from an earlier run or package ------------------------------------------------

@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny model trained long enough (30 epochs, ~6 s) to detect the red and blue boxes."""
    folder = tmp_path_factory.mktemp("source")
    manifest = write_synthetic_set(folder / "data", count=16)
    trainer, package = train_local(tiny_config(name="src", epochs=30, lr=0.003, flip="none"), manifest,
                                   runs_dir=folder / "runs", callbacks=[])
    return trainer, package, manifest


def retrain_config(name, **overrides):
    return tiny_config(name=name, epochs=1, lr=0.0006, flip="none", **overrides)


@pytest.mark.parametrize("kind", ["run", "package"])
def test_init_starts_where_the_earlier_run_ended(source, tmp_path, capsys, kind):
    trainer, package, manifest = source
    init = trainer.run_dir if kind == "run" else package.folder
    warm, _ = train_local(retrain_config("warm"), manifest, runs_dir=tmp_path, callbacks=[], init=init)
    cold, _ = train_local(retrain_config("cold"), manifest, runs_dir=tmp_path, callbacks=[])
    assert warm.history[0]["map50"] > max(0.1, 2 * cold.history[0]["map50"])
    assert warm.history[0]["loss"] < cold.history[0]["loss"]
    assert f"init: 2 of 2 classes from {init} (epoch {trainer.best['epoch']})" in capsys.readouterr().err
    assert TrainConfig.load(warm.run_dir / "args.yaml").init == str(init)


def relabel(manifest, out, classes, extra=()):
    """`manifest` with class ids of `classes` (a new order, maybe more names) and `extra` lines."""
    rows = [json.loads(text) for text in manifest.read_text().splitlines()]
    keys = [name.lower() for name in classes]
    for row in rows:
        for ann in row["labels"]["annotations"]:
            ann["class_id"] = keys.index(CLASSES[ann["class_id"]])
    for row in rows + list(extra):
        row["labels-metadata"] = {"class-map": {str(i): name for i, name in enumerate(classes)}}
    out.write_text("".join(json.dumps(row) + "\n" for row in rows + list(extra)))
    return out


class Before(Callback):
    """The network's detections on the validation images before the first step."""

    def on_train_start(self, trainer):
        self.rows = trainer.detector.detect_rows(trainer.val_data.images)


def test_a_new_class_in_another_order_keeps_the_old_classes_detections(source, tmp_path, capsys):
    trainer, package, manifest = source
    image = np.random.default_rng(5).integers(60, 120, (96, 96, 3), dtype=np.uint8)
    image[20:60, 30:70] = (40, 200, 40)
    cv2.imwrite(str(manifest.parent / "green.png"), image)
    green = {"source-ref": "green.png", "labels": {"image_size": [{"width": 96, "height": 96, "depth": 3}],
             "annotations": [{"class_id": 0, "left": 30, "top": 20, "width": 40, "height": 40}]}}
    classes = ["green", "Blue", "red"]     # ids move; names match whatever the case
    relabelled = relabel(manifest, manifest.parent / "three.manifest", classes, [green])
    before = Before()
    new, _ = train_local(retrain_config("three"), relabelled, runs_dir=tmp_path, callbacks=[before],
                         init=trainer.run_dir)
    assert new.classes == classes and "init: 2 of 3 classes" in capsys.readouterr().err
    old = Detector.open(package.folder).detect_rows(new.val_data.images[:16])
    moved = {0: 2, 1: 1}
    for old_rows, new_rows in zip(old, before.rows):     # the new class starts improbable: ~1 % of background
        for cid, score, *box in old_rows[:3]:          # near-equal scores may swap places
            same = new_rows[:6][np.abs(new_rows[:6, 2:] - box).max(axis=1) < 1e-4]
            assert len(same) and same[0, 0] == moved[int(cid)] and abs(same[0, 1] - score) < 0.02


def test_init_refuses_fewer_classes_another_arch_or_size(source, tmp_path):
    trainer, package, manifest = source
    red_only = relabel(manifest, manifest.parent / "fewer.manifest", ["red", "blue"])
    red_only.write_text(red_only.read_text().replace('"1": "blue"', '"1": "yellow"'))
    with pytest.raises(TrainError, match=r"has classes this run lacks: blue .*same classes or more"):
        train_local(retrain_config("fewer"), red_only, runs_dir=tmp_path, callbacks=[], init=trainer.run_dir)
    with pytest.raises(TrainError, match=r"is a 'tiny' model; this run is --arch mobilenet"):
        train_local(retrain_config("arch", arch="mobilenet"), manifest, runs_dir=tmp_path, callbacks=[],
                    init=package.folder)
    with pytest.raises(TrainError, match=r"takes 96x96 input; this run is --size 128"):
        train_local(retrain_config("size", size=128), manifest, runs_dir=tmp_path, callbacks=[], init=trainer.run_dir)
    with pytest.raises(TrainError, match=r"neither a run folder .* nor a model package"):
        train_local(retrain_config("none"), manifest, runs_dir=tmp_path, callbacks=[], init=tmp_path)


def edited_package(package, folder, edit, source=None):
    """A copy of `package` whose parameters went through `edit` ({name: array} -> {name: array})."""
    folder = shutil.copytree(package.folder, folder)
    mx.nd.save(str(folder / package.params_path.name), edit(mx.nd.load(str(package.params_path))))
    write_package(folder, package.name, package.classes, package.width, package.height,
                  source=package.source if source is None else source)
    return folder


def test_init_maps_parameter_names_and_fails_loudly_when_they_do_not_match(source, tmp_path):
    trainer, package, manifest = source
    # exported names carry the net's instance prefix ("ssd0_"): any prefix shared by all is fine
    prefixed = edited_package(package, tmp_path / "prefixed", lambda params: {
        k.replace(":ssd0_", ":deploynet3_ssd7_"): v for k, v in params.items()})
    warm, _ = train_local(retrain_config("prefixed"), manifest, runs_dir=tmp_path, callbacks=[], init=prefixed)
    assert warm.history[0]["map50"] > 0.1
    unnamed = edited_package(package, tmp_path / "unnamed", lambda params: {
        f"arg:layer{i}": v for i, v in enumerate(params.values())})
    with pytest.raises(TrainError, match=r"none of its 135 parameters is one of this tiny network's"):
        train_local(retrain_config("unnamed"), manifest, runs_dir=tmp_path, callbacks=[], init=unnamed)
    partial = edited_package(package, tmp_path / "partial", lambda params: {
        k: v for k, v in params.items() if "box" not in k and "conv9" not in k})
    with pytest.raises(TrainError, match=r"lacks \d+ of the 135 parameters of this tiny network"):
        train_local(retrain_config("partial"), manifest, runs_dir=tmp_path, callbacks=[], init=partial)
    other = dummy_package(tmp_path / "other", name="other", num_classes=2, size=96, arch="mobilenet")
    write_package(other.folder, other.name, CLASSES, 96, 96, source={})     # says no architecture
    with pytest.raises(TrainError, match=r"is \(.*\) there, \(.*\) expected for this tiny network"):
        train_local(retrain_config("shapes"), manifest, runs_dir=tmp_path, callbacks=[], init=other.folder)


# -- stopping a run from outside -------------------------------------------------------------------

class WriteStop(Callback):
    """Writes runs/<name>/STOP during epoch `epoch`, as the studio does to stop a run."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, trainer, logs):
        if trainer.epoch + 1 == self.epoch:
            (trainer.run_dir / StopRequest.FILE).touch()


def test_a_stop_file_ends_the_run_after_the_epoch_and_still_exports(tmp_path, capsys):
    manifest = write_synthetic_set(tmp_path / "data", count=4)
    trainer, package = train_local(tiny_config(name="stopped", epochs=20), manifest, runs_dir=tmp_path,
                                   callbacks=[WriteStop(2), StopRequest()])
    assert [row["epoch"] for row in trainer.history] == [1, 2]
    assert json.loads((trainer.run_dir / "state.json").read_text())["epoch"] == 2
    assert (trainer.run_dir / "model/model.json").is_file() and package.source["metrics"]["epoch"] in (1, 2)
    assert not (trainer.run_dir / "STOP").exists()
    assert "stop requested (STOP file): stopping after epoch 2" in capsys.readouterr().err


def test_the_default_callbacks_heed_a_stop_file(tmp_path):
    manifest = write_synthetic_set(tmp_path / "data", count=4)
    (tmp_path / "early").mkdir()
    (tmp_path / "early/STOP").touch()
    trainer, _ = train_local(tiny_config(name="early", epochs=20), manifest, runs_dir=tmp_path)
    assert trainer.epoch == 1 and (trainer.run_dir / "model.tar.gz").is_file()
    assert not (trainer.run_dir / "STOP").exists()
