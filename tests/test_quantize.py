"""int8 packages (`deeplens-ctl model quantize`, `train --int8`): the variant of an fp32 package
that the device runtime runs like any other package, about twice as fast."""
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from control.cli import main
from control.train.data import load_image, read_manifest
from core.detector import Detector
from core.errors import ModelError
from core.package import load_package
from core.quantize import quantize_package

from test_train import write_synthetic_set


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def quantized(trained, tmp_path_factory):
    """(fp32 package, int8 package, agreement, calibration frames) of the session's trained tiny model."""
    _, fp32, manifest = trained
    frames = [load_image(sample.path) for sample in read_manifest(manifest)[0]]
    int8, agreement = quantize_package(fp32, frames, tmp_path_factory.mktemp("int8") / "model")
    return fp32, int8, agreement, frames


def test_an_int8_package_is_a_package_of_its_own(quantized):
    fp32, int8, _, _ = quantized
    meta = json.loads((int8.folder / "model.json").read_text())
    assert meta["precision"] == "int8" and load_package(fp32.folder).precision == "fp32"
    assert int8.version != fp32.version and meta["classes"] == fp32.classes
    assert meta["source"]["quantized_from"]["version"] == fp32.version
    assert meta["source"]["calibration"] == {"frames": 16, "mode": "naive", "crop": "center"}


def test_int8_detections_match_fp32(quantized):
    fp32, int8, agreement, frames = quantized
    assert agreement["same_detections"] == agreement["frames"] == 16 and agreement["max_score_difference"] < 0.05
    a, b = Detector.open(fp32.folder), Detector.open(int8.folder)
    assert b.model.precision == "int8"
    for frame in frames[:4]:
        ours, theirs = a.detect(frame)[0][0], b.detect(frame)[0][0]    # the best box of each
        assert ours["class_id"] == theirs["class_id"] and abs(ours["score"] - theirs["score"]) < 0.05
        assert np.allclose(ours["box"], theirs["box"], atol=0.03)


def test_model_json_must_tell_the_graphs_precision(quantized, tmp_path):
    _, int8, _, _ = quantized
    folder = shutil.copytree(int8.folder, tmp_path / "lying")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(dict(meta, precision="fp32")))
    with pytest.raises(ModelError, match=r"model.json: field 'precision' says fp32 but the graph is int8"):
        Detector.open(folder)
    (folder / "model.json").write_text(json.dumps(dict(meta, precision="fp16")))
    with pytest.raises(ModelError, match=r"field 'precision' must be one of fp32, int8, got 'fp16'"):
        load_package(folder)


def test_only_fp32_packages_with_frames_are_quantized(quantized, tmp_path):
    fp32, int8, _, frames = quantized
    with pytest.raises(ModelError, match="is already int8: quantize its fp32 package"):
        quantize_package(int8, frames, tmp_path / "again")
    with pytest.raises(ModelError, match="no calibration frames"):
        quantize_package(fp32, [], tmp_path / "none")


def test_model_quantize_calibrates_on_a_manifest_or_a_folder(trained, tmp_path):
    _, package, manifest = trained
    result = run("model", "quantize", package.folder, "--calib", manifest, "--frames", 8, "-o", tmp_path / "q",
                 "--json")
    summary = json.loads(result.stdout)
    assert summary["frames"] == 8 and summary["quantized_from"] == package.version
    assert load_package(tmp_path / "q").precision == "int8"
    result = run("model", "quantize", package.folder, "--calib", manifest.parent)
    assert f"package: {package.folder}-int8" in result.stdout and "frames: 16" in result.stdout
    assert load_package(f"{package.folder}-int8").precision == "int8"


def test_train_int8_exports_both_packages(tmp_path):
    manifest = write_synthetic_set(tmp_path / "data", count=4)
    result = run("train", manifest, "--arch", "tiny", "--size", 96, "--epochs", 1, "--batch-size", 4,
                 "--runs-dir", tmp_path / "runs", "--name", "q", "--int8", "--json")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["int8_package"] == str(tmp_path / "runs/q/model-int8")
    assert load_package(summary["int8_package"]).source["quantized_from"]["version"] == summary["version"]
    assert summary["int8_agreement"]["frames"] == 4
    result = run("evaluate", summary["int8_package"], manifest, "--json")
    assert 0 <= json.loads(result.stdout)["map50"] <= 1


def test_the_device_serves_an_int8_package(quantized, tmp_path, mosquitto):
    from test_models_api import start_service, tgz, upload
    from test_swap import activate_and_settle
    from mqtt_subscriber import Subscriber
    _, int8, _, _ = quantized
    service = start_service(tmp_path, "--broker", mosquitto.address, "--camera", "synthetic?fps=12",
                            "--threshold", "0.05", "--health-frames", "4")
    assert upload(service, tgz(int8)).status_code == 201
    listed = {v["version"]: v for v in service.get("/models").json()["versions"]}
    assert listed[int8.version]["precision"] == "int8"
    sub = Subscriber(mosquitto.address, "deeplens/testcam/detections")
    try:
        status = activate_and_settle(service, int8.version)
        assert status["models"]["swap"]["state"] == "confirmed"
        while (event := sub.payload())["model_version"] != int8.version:
            pass
    finally:
        sub.close()
    assert event["detections"] and service.get("/status").json()["inference_errors"] == 0
