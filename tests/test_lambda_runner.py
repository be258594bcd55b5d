"""`deeplens-edge run-lambda`: DeepLens Lambdas run unmodified, their messages reach mosquitto."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
from edge import config as config_mod
from edge.lambda_runner import ResultsDrain, run_lambda

LAMBDAS = REPO / "tests" / "lambdas"
DEEPLENS_EDGE = str(Path(sys.executable).with_name("deeplens-edge"))


def wait_for(predicate, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc is None or proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def stop(proc):
    """SIGTERM, as systemd or Greengrass stop a Lambda: it must exit 0, and soon."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    return stderr


def test_results_drain_keeps_the_latest_jpeg_and_never_blocks_the_writer(tmp_path):
    fifo = tmp_path / "results.mjpeg"
    os.mkfifo(fifo)
    drain = ResultsDrain(str(fifo))
    drain.start()
    frames = [cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))[1].tobytes() for value in (40, 200)]
    stream = frames[0] * 3 + frames[1]
    with open(fifo, "wb") as writer:  # returns at once: the drain has the FIFO open for reading
        for start in range(0, len(stream), 333):  # odd chunks split the markers across reads
            writer.write(stream[start:start + 333])
            writer.flush()
        wait_for(lambda: drain.latest() == frames[1], timeout=5)
        drain.stop()
    drain.join(5)
    assert not drain.is_alive()
    assert cv2.imdecode(np.frombuffer(drain.latest(), np.uint8), cv2.IMREAD_COLOR)[0, 0, 0] > 150


def test_handler_lambda_gets_the_settings_and_stops_on_sigterm(tmp_path):
    out = tmp_path / "calls.jsonl"
    proc = subprocess.Popen([DEEPLENS_EDGE, "run-lambda", str(LAMBDAS / "handler_lambda.py"), "--broker", "none",
                             "--camera", "synthetic:7", "--frame-size", "640x360", "--artifacts", str(tmp_path),
                             "--thing-name", "deeplens_t1"],
                            env={**os.environ, "LAMBDA_TEST_OUT": str(out)}, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 3, timeout=30, proc=proc)
    finally:
        stop(proc)
    first = json.loads(out.read_text().splitlines()[0])
    assert first == {"event": {}, "context": None, "DEEPLENS_CAMERA": "synthetic:7", "DEEPLENS_FRAME_SIZE": "640x360",
                     "DEEPLENS_ARTIFACTS": str(tmp_path), "DEEPLENS_BROKER": "", "AWS_IOT_THING_NAME": "deeplens_t1"}


def in_process_config(tmp_path):
    return config_mod.load(env={}, overrides={"broker": "none", "artifacts": str(tmp_path)})


def test_a_failing_lambda_returns_1_with_its_traceback(tmp_path, caplog):
    assert run_lambda(LAMBDAS / "failing_lambda.py", in_process_config(tmp_path)) == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "the Lambda failed"]
    assert record.exc_info[0] is FileNotFoundError
    assert "no model named deploy_ssd_missing" in caplog.text
    assert "DEEPLENS_ARTIFACTS" not in os.environ  # the settings were the Lambda's only


def test_a_handler_without_arguments_is_called_without_any(tmp_path, caplog):
    assert run_lambda(LAMBDAS / "no_arguments_lambda.py", in_process_config(tmp_path)) == 0
    assert "the Lambda failed" not in caplog.text


def test_an_unknown_handler_returns_1(tmp_path, caplog):
    assert run_lambda(LAMBDAS / "handler_lambda.py", in_process_config(tmp_path), handler="nope") == 1
    assert "the Lambda has no such handler" in caplog.text


def mosquitto_sub(address, topic, *args):
    host, _, port = address.rpartition(":")
    return ["mosquitto_sub", "-h", host, "-p", port, "-q", "1", "-t", topic, "-i", "lambda-test", "-c", *args]


@pytest.mark.mosquitto
def test_the_typical_deeplens_lambda_runs_unmodified(mosquitto, dummy_model, tmp_path):
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    shutil.copy(dummy_model.symbol_path, artifacts / "deploy_ssd_banknotes-symbol.json")
    shutil.copy(dummy_model.params_path, artifacts / "deploy_ssd_banknotes-0000.params")
    topic = "$aws/things/deeplens_lambda_test/infer"
    subprocess.run(mosquitto_sub(mosquitto.address, topic, "-E"), check=True, timeout=10)  # a persistent session
    proc = subprocess.Popen([DEEPLENS_EDGE, "run-lambda", str(LAMBDAS / "object_detection_lambda.py"),
                             "--broker", mosquitto.address, "--artifacts", str(artifacts), "--camera", "synthetic",
                             "--frame-size", "640x360", "--thing-name", "deeplens_lambda_test"],
                            stderr=subprocess.PIPE, text=True)
    try:
        got = subprocess.run(mosquitto_sub(mosquitto.address, topic, "-C", "6", "-W", "90"),
                             capture_output=True, text=True, timeout=100).stdout.splitlines()
    finally:
        stderr = stop(proc)
    assert got[:2] == ["Loading object detection model", "Object detection model loaded"], (got, stderr[-3000:])
    for payload in map(json.loads, got[2:]):
        assert set(payload) <= {"banknote", "coin"}
        assert all(0.25 < prob <= 1 for prob in payload.values())
