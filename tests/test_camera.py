"""shims.camera: camera SPECs, the synthetic scene, file sources, fault injection, FrameGrabber."""
import http.server
import shutil
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from shims.camera import CLASSES, FrameGrabber, SyntheticCamera, parse_spec, source_from_spec
from core.errors import CameraError

SMALL = "size=480x270"


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s")
        time.sleep(0.02)


# --- SPEC strings ---------------------------------------------------------------------------

def test_spec_kinds_targets_and_options():
    assert parse_spec("synthetic").kind == "synthetic"
    spec = parse_spec("synthetic:7?size=640x360&fps=12.5&faults=band:0.3,black:0.1,freeze:0.1,drop:0.1")
    assert (spec.target, spec.size, spec.fps) == ("7", (640, 360), 12.5)
    assert spec.faults == {"band": 0.3, "black": 0.1, "freeze": 0.1, "drop": 0.1}
    assert parse_spec("folder:/data/frames").target == "/data/frames"
    assert parse_spec("webcam:1").target == "1"
    assert parse_spec("video:clip.avi?fps=10").fps == 10


def test_a_url_keeps_its_own_query_and_gives_up_only_ours():
    assert parse_spec("url:http://cam/video?action=stream").target == "http://cam/video?action=stream"
    spec = parse_spec("url:rtsp://cam:554/live?size=640x480")
    assert (spec.target, spec.size) == ("rtsp://cam:554/live", (640, 480))


@pytest.mark.parametrize("spec, names", [
    ("usb:0", "'usb'"),
    ("synthetic:seven", "seed 'seven'"),
    ("webcam:front", "webcam index 'front'"),
    ("folder:", "needs a path"),
    ("url:", "needs a URL"),
    ("synthetic?zoom=2", "option 'zoom'"),
    ("synthetic?size=640", "size '640'"),
    ("synthetic?fps=0", "fps '0'"),
    ("synthetic?faults=smear:0.1", "fault 'smear'"),
    ("synthetic?faults=band:2", "fault 'band'"),
    ("synthetic?faults=band:0.6,black:0.6", "more than 1"),
    ("syntheticX", "unknown source 'syntheticX'"),
])
def test_a_malformed_spec_names_the_bad_part(spec, names):
    with pytest.raises(CameraError, match=names):
        parse_spec(spec)


# --- the synthetic scene --------------------------------------------------------------------

def test_synthetic_frames_are_deterministic_from_seed_and_index():
    one, two, other = SyntheticCamera(3, (480, 270)), SyntheticCamera(3, (480, 270)), SyntheticCamera(4, (480, 270))
    for index in (0, 17, 500):
        image, truth = one.render(index)
        again, same_truth = two.render(index)
        assert np.array_equal(image, again) and truth == same_truth
        assert not np.array_equal(image, other.render(index)[0])


def test_synthetic_frames_are_bgr_1080p_by_default_and_never_repeat():
    with source_from_spec("synthetic") as camera:
        first, second = camera.read(), camera.read()
    assert first.image.shape == (1080, 1920, 3) and first.image.dtype == np.uint8
    assert second.seq == first.seq + 1 and second.ts >= first.ts
    assert not np.array_equal(first.image, second.image)


@pytest.mark.parametrize("seed", range(4))
def test_truth_boxes_are_the_tight_boxes_of_the_visible_notes(seed):
    camera = SyntheticCamera(seed, (640, 360), objects=1)  # one note: nothing overlaps it
    seen = 0
    for index in range(0, 800, 15):
        image, truth = camera.render(index)
        diff = cv2.absdiff(image, camera.table)
        changed = (diff[..., 0] > 25) | (diff[..., 1] > 25) | (diff[..., 2] > 25)
        for obj in truth:
            xmin, ymin, xmax, ymax = obj["box"]
            assert 0 <= xmin < xmax <= 640 and 0 <= ymin < ymax <= 360
            assert obj["label"] == CLASSES[obj["class_id"]]
            inside = changed[ymin:ymax, xmin:xmax].copy()
            # A note tilted by up to 40 degrees fills over 40% of its box and touches all four
            # sides of it; all the rest of the frame is table.
            assert inside.mean() > 0.4
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            changed[ymin:ymax, xmin:xmax] = False
            assert not changed.any()
            seen += 1
    assert seen > 20


def test_notes_enter_and_leave_the_frame():
    camera = SyntheticCamera(0, (480, 270))
    counts = [len(camera.render(index)[1]) for index in range(0, 800, 4)]
    assert max(counts) >= 2 and min(counts) < max(counts)
    rises = sum(b > a for a, b in zip(counts, counts[1:]))
    falls = sum(b < a for a, b in zip(counts, counts[1:]))
    assert rises >= 2 and falls >= 2


def test_read_keeps_the_truth_of_the_last_frame():
    camera = SyntheticCamera(1, (480, 270))
    frame = camera.read()
    assert frame.truth == camera.last_truth() == camera.render(0)[1]


# --- file sources ---------------------------------------------------------------------------

def write_images(folder, colours, size=(64, 48)):
    folder.mkdir(exist_ok=True)
    for index, colour in enumerate(colours):
        cv2.imwrite(str(folder / f"frame{index:02d}.png"), np.full((size[1], size[0], 3), colour, np.uint8))


def test_folder_cycles_through_its_images_in_name_order(tmp_path):
    write_images(tmp_path / "frames", [10, 20, 30])
    (tmp_path / "frames" / "notes.txt").write_text("not an image")
    with source_from_spec(f"folder:{tmp_path / 'frames'}") as camera:
        frames = [camera.read() for _ in range(5)]
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 20, 30, 10, 20]
    assert frames[0].image.shape == (48, 64, 3) and frames[0].truth is None


def test_folder_reads_its_sub_folders_too(tmp_path):
    write_images(tmp_path / "frames", [10])
    write_images(tmp_path / "frames" / "b-side", [20, 30])
    with source_from_spec(f"folder:{tmp_path / 'frames'}") as camera:
        frames = [camera.read() for _ in range(3)]
    assert [int(f.image[0, 0, 0]) for f in frames] == [20, 30, 10]  # path order: b-side/frame00 < frame00


def test_a_missing_webcam_says_so_once_without_opencv_noise():
    """OpenCV's backends print warnings for every failed open; the error names the camera once."""
    script = ("from shims.camera import source_from_spec\n"
              "for _ in range(3):\n"
              "    try:\n        source_from_spec('webcam:97').open()\n"
              "    except Exception as exc:\n        print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["CameraError cannot open 97"] * 3
    assert "WARN" not in done.stderr, done.stderr


def test_folder_frames_take_the_size_option(tmp_path):
    write_images(tmp_path / "frames", [50])
    with source_from_spec(f"folder:{tmp_path / 'frames'}?size=32x16") as camera:
        assert camera.read().image.shape == (16, 32, 3)


def test_an_empty_or_missing_folder_cannot_be_opened(tmp_path):
    with pytest.raises(CameraError, match="no images"):
        source_from_spec(f"folder:{tmp_path}").open()
    with pytest.raises(CameraError, match="missing"):
        source_from_spec(f"folder:{tmp_path / 'missing'}").open()


def test_video_loops_at_its_own_rate(tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for level in (0, 60, 120, 180):
        writer.write(np.full((48, 64, 3), level, np.uint8))
    writer.release()
    with source_from_spec(f"video:{path}") as camera:
        assert camera.fps == 10
        levels = [int(camera.read().image.mean()) for _ in range(6)]
    assert [round(level / 60) for level in levels] == [0, 1, 2, 3, 0, 1]  # MJPEG is lossy


def test_a_missing_video_cannot_be_opened(tmp_path):
    with pytest.raises(CameraError, match="clip.avi"):
        source_from_spec(f"video:{tmp_path / 'clip.avi'}").open()


class MjpegServer(http.server.ThreadingHTTPServer):
    """A loopback MJPEG camera (multipart/x-mixed-replace, as IP cameras serve) that ends each
    stream after `frames_per_client` frames, like a camera that drops its clients."""

    def __init__(self, frames_per_client):
        jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))[1].tobytes()
        part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(jpeg), jpeg)

        class Stream(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for _ in range(frames_per_client):
                    self.wfile.write(part)
                    time.sleep(0.01)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Stream)
        self.url = f"http://127.0.0.1:{self.server_port}/stream.mjpg"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_url_reads_an_mjpeg_stream_and_reconnects_when_it_ends():
    server = MjpegServer(frames_per_client=10)
    try:
        with FrameGrabber(f"url:{server.url}?size=32x24", failures_to_reconnect=2, backoff=(0.05, 0.1)) as grabber:
            wait_until(lambda: grabber.state()["frames"] >= 25)  # three streams at least
            assert grabber.latest().image.shape == (24, 32, 3)
            assert grabber.state()["failures"] >= 2
    finally:
        server.shutdown()
        server.server_close()


# --- fault injection ------------------------------------------------------------------------

def test_faults_are_seeded_and_come_in_the_asked_proportions():
    def faults(spec):
        with source_from_spec(spec) as camera:
            return [getattr(camera.read(), "fault", "drop") for _ in range(400)]

    spec = f"synthetic:9?{SMALL}&faults=band:0.2,black:0.1,freeze:0.1,drop:0.1"
    drawn = faults(spec)
    assert drawn == faults(spec)
    for fault, share in (("band", 0.2), ("black", 0.1), ("freeze", 0.1), ("drop", 0.1), (None, 0.5)):
        assert abs(drawn.count(fault) / 400 - share) < 0.06, fault


def test_a_band_replaces_the_bottom_of_the_frame_with_one_colour():
    with source_from_spec(f"synthetic:4?{SMALL}&faults=band:1") as camera:
        for _ in range(10):
            image = camera.read().image
            flat_rows = np.flatnonzero((image == image[-1, 0]).all(axis=(1, 2)))
            assert 0.1 * 270 - 1 <= len(flat_rows) <= 0.6 * 270 + 1
            assert flat_rows[-1] == 269 and np.all(np.diff(flat_rows) == 1)


def test_a_frozen_frame_repeats_the_previous_image_under_a_new_seq():
    with source_from_spec(f"synthetic:4?{SMALL}&faults=freeze:1") as camera:
        first, second = camera.read(), camera.read()
    assert second.seq > first.seq and np.array_equal(first.image, second.image)


# --- FrameGrabber ---------------------------------------------------------------------------

def test_grabber_keeps_the_latest_frame_at_the_asked_pace():
    with FrameGrabber(f"synthetic:1?{SMALL}&fps=50") as grabber:
        first = grabber.wait_next(-1, timeout=5)
        second = grabber.wait_next(first.seq, timeout=5)
        assert second.seq > first.seq and second.truth is not None
        wait_until(lambda: grabber.state()["frames"] >= 20)
        state = grabber.state()
        assert grabber.latest().seq >= second.seq
    assert state["source"] == f"synthetic:1?{SMALL}&fps=50"
    assert state["connected"] and state["error"] is None and state["failures"] == 0
    assert 25 <= state["fps"] <= 60


def test_grabber_stops_promptly_and_wait_next_times_out():
    grabber = FrameGrabber(f"synthetic:1?{SMALL}&fps=2").start()
    frame = grabber.wait_next(-1, timeout=5)
    assert grabber.wait_next(frame.seq + 100, timeout=0.1) is None
    started = time.monotonic()
    grabber.stop()
    assert time.monotonic() - started < 0.5
    assert not grabber.state()["connected"]


def test_grabber_reports_a_vanished_folder_and_reconnects_when_it_is_back(tmp_path):
    frames = tmp_path / "frames"
    write_images(frames, [10, 20])
    with FrameGrabber(f"folder:{frames}?fps=50", backoff=(0.1, 0.3)) as grabber:
        wait_until(lambda: grabber.state()["frames"] >= 3)
        shutil.rmtree(frames)
        wait_until(lambda: not grabber.state()["connected"])
        state = grabber.state()
        assert state["failures"] >= 1 and "frames" in state["error"]
        last_seq = grabber.latest().seq
        time.sleep(0.5)  # it keeps retrying, and does not die, while the folder is gone
        assert grabber.state()["failures"] > state["failures"] and not grabber.state()["connected"]
        write_images(frames, [90])
        fresh = grabber.wait_next(last_seq, timeout=5)
        assert fresh is not None and int(fresh.image[0, 0, 0]) == 90
        assert grabber.state()["connected"] and grabber.state()["error"] is None


def test_grabber_reconnects_after_reads_keep_failing():
    with FrameGrabber(f"synthetic:2?{SMALL}&fps=100&faults=drop:0.5", failures_to_reconnect=3,
                      backoff=(0.05, 0.05)) as grabber:
        wait_until(lambda: grabber.state()["frames"] >= 20)
    assert grabber.state()["failures"] >= 3
