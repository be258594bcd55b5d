"""awscam: getLastFrame and Model, as DeepLens Lambda code calls them."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

import awscam
import mo
from core.errors import ModelError

# An inference Lambda written the way the AWS samples are; it runs unmodified in a fresh
# interpreter, as deeplens-edge run-lambda runs one, and prints what it saw.
SAMPLE_LAMBDA = """
import json, os
import awscam
import cv2
import mo

input_w, input_h = 300, 300
model_path = os.path.join(os.environ["DEEPLENS_ARTIFACTS"], "dummy.xml")
if not os.path.isfile(model_path):
    error, model_path = mo.optimize("dummy", input_w, input_h)
    if error:
        raise Exception("Failed to optimize the model")
model = awscam.Model(model_path, {"GPU": 1})
ret, frame = awscam.getLastFrame()
if not ret:
    raise Exception("Failed to get frame from the stream")
frame_resize = cv2.resize(frame, (input_w, input_h))
parsed = model.parseResult("ssd", model.doInference(frame_resize))["ssd"]
ret2, frame2 = awscam.getLastFrame()
print(json.dumps({"shape": frame.shape, "dtype": str(frame.dtype), "detections": parsed[:5],
                  "second_is_a_copy": ret2 and frame2 is not frame}))
"""


def run_python(code, **env):
    """Run `code` in a fresh interpreter with DEEPLENS_* settings; return its JSON output."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_deeplens_sample_lambda_runs_unmodified(artifacts, dummy_model):
    for path in (dummy_model.symbol_path, dummy_model.params_path):
        shutil.copy(path, artifacts / path.name)
    seen = run_python(SAMPLE_LAMBDA, DEEPLENS_ARTIFACTS=str(artifacts),
                      DEEPLENS_CAMERA="synthetic:3", DEEPLENS_FRAME_SIZE="640x360")
    assert seen["shape"] == [360, 640, 3] and seen["dtype"] == "uint8"
    assert seen["detections"] and seen["second_is_a_copy"]
    assert (artifacts / "dummy.xml").is_file()


def test_get_last_frame_is_a_1080p_bgr_frame_by_default():
    seen = run_python("""
        import json, awscam
        ret, frame = awscam.getLastFrame()
        print(json.dumps([ret, frame.shape, str(frame.dtype)]))
    """)
    assert seen == [True, [1080, 1920, 3], "uint8"]


def test_get_last_frame_is_false_when_the_camera_gives_nothing(tmp_path):
    seen = run_python("""
        import json, awscam
        awscam.FIRST_FRAME_TIMEOUT = 1.0
        print(json.dumps(awscam.getLastFrame()))
    """, DEEPLENS_CAMERA=f"folder:{tmp_path / 'no-such-folder'}")
    assert seen == [False, None]


def test_get_last_frame_reads_a_folder_camera_at_its_native_size(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((120, 160, 3), 77, np.uint8))
    seen = run_python("""
        import json, awscam
        ret, frame = awscam.getLastFrame()
        print(json.dumps([ret, frame.shape, int(frame[0, 0, 0])]))
    """, DEEPLENS_CAMERA=f"folder:{tmp_path}")
    assert seen == [True, [120, 160, 3], 77]


# --- Model ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def frame():
    from shims.camera import SyntheticCamera
    return SyntheticCamera(0, (300, 300)).render(40)[0]


@pytest.fixture(scope="module")
def package_model(dummy_model):
    return awscam.Model(str(dummy_model.folder), {"GPU": 1})


def test_ssd_results_are_pixel_boxes_of_the_input_best_first(package_model, frame):
    raw = package_model.doInference(frame)
    assert all(isinstance(value, np.ndarray) for value in raw.values())
    detections = package_model.parseResult("ssd", raw)["ssd"]
    assert detections
    probs = [d["prob"] for d in detections]
    assert probs == sorted(probs, reverse=True) and 0 < probs[-1] <= probs[0] <= 1
    for d in detections:
        assert set(d) == {"label", "prob", "xmin", "ymin", "xmax", "ymax"}
        assert d["label"] in (0, 1)  # class_id of model.json; suppressed rows (-1) are gone
        assert 0 <= d["xmin"] <= d["xmax"] <= 300 and 0 <= d["ymin"] <= d["ymax"] <= 300


def test_a_full_frame_is_resized_to_the_input(package_model, frame):
    big = cv2.resize(frame, (1920, 1080))
    detections = package_model.parseResult("ssd", package_model.doInference(big))["ssd"]
    assert all(d["xmax"] <= 300 and d["ymax"] <= 300 for d in detections)


def test_the_same_model_loads_from_its_xml_symbol_or_folder(dummy_model, artifacts, package_model, frame):
    for path in (dummy_model.symbol_path, dummy_model.params_path):
        shutil.copy(path, artifacts / path.name)
    status, xml_path = mo.optimize("dummy", 300, 300)
    assert status == 0
    expected = package_model.parseResult("ssd", package_model.doInference(frame))
    for source in (xml_path, str(dummy_model.symbol_path)):
        model = awscam.Model(source, {"GPU": 0}, awscam.Runtime.DLDT)
        assert model.parseResult("ssd", model.doInference(frame)) == expected


def test_classification_lists_every_class_best_first(package_model):
    raw = {"softmax": np.array([[0.1, 0.7, 0.2]], np.float32)}
    top = package_model.parseResult("classification", raw)["classification"]
    assert [t["label"] for t in top] == [1, 2, 0]
    assert top[0]["prob"] == pytest.approx(0.7)


def test_an_unknown_model_type_is_a_value_error(package_model, frame):
    with pytest.raises(ValueError, match="segmentation"):
        package_model.parseResult("segmentation", package_model.doInference(frame))


def test_the_neo_runtime_keys_outputs_by_ordinal_and_parses_nothing(dummy_model, frame):
    model = awscam.Model(str(dummy_model.folder), {"GPU": 1}, runtime=awscam.Runtime.NEO)
    raw = model.doInference(frame)
    assert list(raw) == [0]
    assert model.parseResult("ssd", raw) is raw


@pytest.mark.parametrize("name, names", [
    ("missing.xml", "missing.xml: not found"),
    ("model.onnx", "expected the .xml"),
    ("lone-symbol.json", "input size unknown"),
])
def test_a_model_that_cannot_be_loaded_names_the_file(tmp_path, name, names):
    path = tmp_path / name
    if name != "missing.xml":
        path.write_text("{}")
    with pytest.raises(ModelError, match=names):
        awscam.Model(str(path), {"GPU": 1})
