"""deeplens-ctl pull against a real `deeplens-edge serve` on the synthetic camera.

The camera injects broken frames (a flat band at the bottom) a third of the time; none may
reach the folder. A pull that is killed leaves whole frames only and carries on when run again.
"""
import json
import signal
import subprocess
import sys
import time

import cv2
import pytest
from click.testing import CliRunner

from conftest import free_port
from control.cli_dataset import pull
from core.quality import flat_band_rows
from control.dataset.pull import PullError, Puller
from edge_service import EdgeService


@pytest.fixture
def device(tmp_path, artifacts):
    service = EdgeService(tmp_path, "--camera", "synthetic:3?faults=band:0.3&size=640x480", "--broker", "none")
    service.start()
    yield service
    service.stop()


def frames_in(folder):
    return sorted(p.name for p in folder.iterdir())


def assert_whole_clean_frames(folder, count):
    names = frames_in(folder)
    assert names == sorted([f"frame_{i:06d}.jpg" for i in range(count)] + [f"frame_{i:06d}.json" for i in range(count)])
    for i in range(count):
        meta = json.loads((folder / f"frame_{i:06d}.json").read_text())
        pixels = cv2.imread(str(folder / meta["file"]))
        assert pixels.shape == (300, 300, 3)           # the device's square crop and resize
        assert flat_band_rows(pixels) == 0
        assert isinstance(meta["seq"], int) and meta["device"].startswith("http://127.0.0.1:") and meta["time"]


def test_pull_collects_n_clean_frames_with_sidecars(device, tmp_path):
    result = CliRunner().invoke(pull, [device.url, "-n", "6", "--interval-ms", "50", "-o", str(tmp_path / "frames"),
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["kept"] == 6
    assert_whole_clean_frames(tmp_path / "frames", 6)
    seqs = [json.loads((tmp_path / "frames" / f"frame_{i:06d}.json").read_text())["seq"] for i in range(6)]
    assert seqs == sorted(seqs)


def test_pull_resumes_after_being_killed(device, tmp_path):
    folder = tmp_path / "frames"
    command = [sys.executable, "-c", "from control.cli_dataset import pull; pull()",
               device.url, "-n", "50", "--interval-ms", "100", "-o", str(folder)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(folder.glob("frame_*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = len(list(folder.glob("frame_*.json")))
    assert 3 <= kept < 50
    result = CliRunner().invoke(pull, [device.url, "-n", str(kept + 3), "--interval-ms", "50", "-o", str(folder)])
    assert result.exit_code == 0, result.output
    assert_whole_clean_frames(folder, kept + 3)


def test_an_unreachable_device_is_retried_then_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(pull, [url, "-n", "2", "--retries", "2", "-o", str(tmp_path / "frames")])
    assert result.exit_code == 1
    assert f"cannot reach {url}: ConnectionError" in result.output
    assert "(after 3 tries) (0 frames in" in result.output
    assert "run again to resume" in result.output


def test_the_device_refusing_an_option_stops_at_once_with_its_message(device, tmp_path):
    with pytest.raises(PullError, match=r"/capture answered 400: .*size"):
        Puller(device.url, tmp_path / "frames", size=5000).run(count=1)


def test_near_duplicates_of_kept_frames_are_skipped(device, tmp_path):
    puller = Puller(device.url, tmp_path / "frames", dedup_threshold=256, max_skips=3)
    with pytest.raises(PullError, match="near-duplicates of kept ones"):
        puller.run(count=5, interval=0)
    assert puller.kept == 1


def test_frames_from_a_synthetic_camera_come_labelled(device, tmp_path):
    """The synthetic camera's true boxes travel in the sidecars and become the manifest's labels."""
    from control.cli_dataset import labels
    frames, manifest = tmp_path / "frames", tmp_path / "auto.manifest"
    assert CliRunner().invoke(pull, [device.url, "-n", "4", "--interval-ms", "300", "-o", str(frames)]).exit_code == 0
    result = CliRunner().invoke(labels, ["import", "-f", "images", str(frames), "-o", str(manifest)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    truth = {json.loads(p.read_text())["file"]: json.loads(p.read_text())["truth"] for p in frames.glob("*.json")}
    assert len(lines) == 4 and sum(len(t) for t in truth.values()) > 0
    for line in lines:
        label = next(v for k, v in line.items() if isinstance(v, dict) and "annotations" in v)
        expected = truth[line["source-ref"].rsplit("/", 1)[-1]]
        got = [(a["left"], a["top"], a["left"] + a["width"], a["top"] + a["height"]) for a in label["annotations"]]
        assert len(got) == len(expected)
        for (x0, y0, x1, y1), obj in zip(got, expected):
            assert max(abs(a - b) for a, b in zip((x0, y0, x1, y1), obj["box"])) <= 1.0
