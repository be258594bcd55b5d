"""The edge service as a whole: status, threshold, live view, and how it copes with faults."""
import json
import shutil
import time

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import requests

from conftest import free_port

SMALL = ("--frame-size", "640x360")


def test_status_reports_what_the_device_is_doing(edge_service, dummy_model):
    service = edge_service(*SMALL, "--broker", "none", "--model", str(dummy_model.folder))
    doc = service.wait_status(lambda s: s["frames_processed"] >= 5)
    assert doc["device_id"] == "testcam"
    assert doc["model"]["name"] == "dummy" and doc["model"]["version"] == dummy_model.version
    assert doc["camera"]["connected"] is True
    assert doc["fps"] > 0 and doc["inference_ms"]["p50"] > 0
    assert doc["work_ms"]["p50"] >= doc["stage_ms"]["infer"]["p50"]  # the loop's whole time per frame, grab aside
    assert doc["mqtt"]["broker"] is None
    assert doc["uptime_s"] >= 0
    assert service.get("/health").json() == {"status": "ok"}
    metrics = service.get("/metrics").text
    assert "deeplens_frames_processed_total" in metrics and 'stage="infer"' in metrics


def test_live_view_streams_annotated_jpegs(edge_service, dummy_model):
    service = edge_service(*SMALL, "--broker", "none", "--model", str(dummy_model.folder))
    service.wait_status(lambda s: s["frames_processed"] >= 1)
    with service.get("/stream", stream=True, params={"size": 320}) as response:
        assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        chunk = b""
        for piece in response.iter_content(4096):
            chunk += piece
            if chunk.count(b"\xff\xd9") >= 2:
                break
    start = chunk.index(b"\xff\xd8")
    image = cv2.imdecode(np.frombuffer(chunk[start:chunk.index(b"\xff\xd9") + 2], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (180, 320, 3)


def test_threshold_is_validated_applied_and_survives_a_restart(edge_service, dummy_model, tmp_path):
    args = (*SMALL, "--broker", "none", "--model", str(dummy_model.folder), "--token", "tok")
    service = edge_service(*args)
    assert service.get("/threshold").json() == {"default": 0.4, "per_class": {}}
    refused = requests.put(service.url + "/threshold", json={"default": 0.5})  # no token: no change
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
    response = service.put("/threshold", json={"default": 1.5})
    assert response.status_code == 400 and response.json()["error"]["field"] == "default"
    response = service.put("/threshold", json={"default": 0.5, "per_class": {"class1": "high"}})
    assert response.status_code == 400 and response.json()["error"]["field"] == "per_class.class1"
    assert service.put("/threshold", data="not json").status_code == 400
    assert service.put("/threshold", json={"default": 0.7, "per_class": {"class1": 0.9}}).status_code == 200
    assert service.get("/status").json()["threshold"] == {"default": 0.7, "per_class": {"class1": 0.9}}
    service.stop()
    restarted = edge_service(*args)
    assert restarted.get("/threshold").json() == {"default": 0.7, "per_class": {"class1": 0.9}}


def test_missing_model_runs_capture_only_and_says_why(edge_service, tmp_path):
    empty = tmp_path / "no-models"
    empty.mkdir()
    service = edge_service(*SMALL, "--broker", "none", "--artifacts", str(empty))
    doc = service.wait_status(lambda s: s["camera"]["frames"] > 0)
    assert doc["model"] is None and "no model package" in doc["model_error"]
    assert service.get("/capture").status_code == 200


def test_broken_model_runs_capture_only_and_names_the_file(edge_service, dummy_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(dummy_model.folder, broken)
    (broken / "dummy-0000.params").write_bytes(b"truncated")
    service = edge_service(*SMALL, "--broker", "none", "--model", str(broken))
    doc = service.get("/status").json()
    assert doc["model"] is None and "dummy-0000.params" in doc["model_error"]
    assert service.get("/capture").status_code == 200


def test_camera_that_disappears_is_reported_and_reconnected(edge_service, tmp_path):
    stills = tmp_path / "stills"
    stills.mkdir()
    cv2.imwrite(str(stills / "a.png"), np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8))
    service = edge_service("--broker", "none", "--camera", f"folder:{stills}", "--capture-deadline", "0.5")
    service.wait_status(lambda s: s["camera"]["connected"])
    moved = tmp_path / "moved"
    stills.rename(moved)
    service.wait_status(lambda s: not s["camera"]["connected"])
    assert service.get("/capture").status_code == 503
    assert service.get("/health").status_code == 200
    moved.rename(stills)
    service.wait_status(lambda s: s["camera"]["connected"], timeout=20)
    assert service.get("/capture").status_code == 200


def test_unknown_paths_and_methods_answer_json_errors(edge_service):
    service = edge_service(*SMALL, "--broker", "none")
    response = service.get("/nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = service.put("/status")
    assert response.status_code == 405 and "message" in response.json()["error"]


def test_bad_configuration_is_refused_at_start_naming_key_and_source(tmp_path):
    import subprocess
    import sys
    config = tmp_path / "edge.yaml"
    config.write_text("port: 8080\nthreshhold: 0.5\n")
    result = subprocess.run([sys.executable, "-m", "edge.cli", "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{config}:2: unknown setting 'threshhold'; did you mean 'threshold'?" in result.stderr
    result = subprocess.run([sys.executable, "-m", "edge.cli", "serve", "--broker", "nowhere"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "option --broker: 'broker' must be HOST:PORT" in result.stderr


def test_demo_runs_with_nothing_set_up(tmp_path):
    """`deeplens-edge demo` (what `make demo` runs) makes its model and token and says where to look."""
    import subprocess
    import sys

    import requests

    from conftest import free_port, wait_for_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "demo", "--port", str(port), "--broker", "none",
                             "--frame-size", "640x360"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, timeout=60)
        printed = "".join(proc.stdout.readline() for _ in range(7))
        token = (tmp_path / "demo-state" / "demo-token").read_text().strip()
        assert f"page        http://127.0.0.1:{port}/   (live view, status, threshold, models)" in printed
        assert f"export DEEPLENS_TOKEN={token}" in printed and len(token) >= 16
        status = requests.get(f"http://127.0.0.1:{port}/status", timeout=10).json()
        assert status["model"]["name"] == "demo" and (tmp_path / "demo-artifacts" / "demo" / "model.json").is_file()
    finally:
        proc.terminate()
        proc.wait(15)
