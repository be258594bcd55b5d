"""Frames worth labelling (edge/keep.py, /keep, `deeplens-ctl pull --worth-labelling`).

The store stays under its size limit, dropping (and counting) the oldest; it holds whole frames
only after a crash. The three reasons are seen on a real `deeplens-edge serve` with the synthetic
camera and the shipped demo model: uncertain frames (best score between keep_floor and the
threshold), count changes (the Counter's on_change), and POST /keep. A pull brings them home
pre-labelled: `labels import -f images` reads their suggested boxes.
"""
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from control.cli import main as ctl
from core.errors import NotFound, TooLarge
from edge.keep import MB, Keeper, KeepStore, suggestions
from edge.threshold import Threshold
from edge_service import EdgeService
from shims.camera import Frame

DEMO_MODEL = Path(__file__).resolve().parent.parent / "edge" / "demo_model"
TOKEN = "keep-t0ken"
INTERVAL_S = 0.5


def noise_frame(seq, seed=None, size=(120, 160)):
    """A frame unlike any other (random texture), so near-duplicate checks let it through."""
    rng = np.random.default_rng(seq if seed is None else seed)
    return Frame(seq, 1_700_000_000 + seq, rng.integers(0, 255, (*size, 3), dtype=np.uint8))


class FakeDetector:
    version, classes = "v1", ["cat", "dog"]


def det(label, score, box=(0.1, 0.1, 0.5, 0.5)):
    return {"class_id": FakeDetector.classes.index(label), "label": label, "score": score, "box": list(box)}


def files(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def on_disk(folder):
    return sum(p.stat().st_size for p in Path(folder).iterdir())


# -- the store ----------------------------------------------------------------------------------
def test_the_store_never_exceeds_its_limit_and_counts_what_it_drops(tmp_path):
    data = b"x" * 30_000
    store = KeepStore(tmp_path / "keep", limit=100_000)  # three frames and their sidecars fit
    for i in range(10):
        store.add(data, {"seq": i, "reason": "operator", "truth": []})
        assert store.bytes == on_disk(tmp_path / "keep") <= 100_000
    names = [e["name"] for e in store.entries()]
    assert names == ["keep_000007", "keep_000008", "keep_000009"]  # the newest stay
    assert store.stats()["dropped"] == 7
    assert files(tmp_path / "keep") == sorted(f"{n}.{ext}" for n in names for ext in ("jpg", "json"))
    with pytest.raises(TooLarge):
        store.add(b"x" * 200_000, {"seq": 10, "truth": []})
    assert len(store.entries()) == 3


def test_a_restart_finds_whole_frames_only_and_numbering_goes_on(tmp_path):
    folder = tmp_path / "keep"
    store = KeepStore(folder, limit=MB)
    for i in range(3):
        store.add(b"jpeg" * 100, {"seq": i, "reason": "uncertain", "truth": []})
    # What a crash can leave: a temporary file, a frame whose sidecar was never written, a
    # sidecar whose frame a cut delete removed.
    (folder / ".keep_000003.jpg.abc123.tmp").write_bytes(b"half")
    (folder / "keep_000004.jpg").write_bytes(b"no sidecar")
    (folder / "keep_000001.jpg").unlink()
    again = KeepStore(folder, limit=MB)
    assert [e["name"] for e in again.entries()] == ["keep_000000", "keep_000002"]
    assert files(folder) == ["keep_000000.jpg", "keep_000000.json", "keep_000002.jpg", "keep_000002.json"]
    assert again.add(b"new", {"seq": 9, "truth": []})["name"] == "keep_000003"
    assert again.bytes == on_disk(folder)


def test_a_lower_limit_at_start_drops_the_oldest(tmp_path):
    store = KeepStore(tmp_path / "keep", limit=MB)
    for i in range(5):
        store.add(b"x" * 20_000, {"seq": i, "truth": []})
    smaller = KeepStore(tmp_path / "keep", limit=50_000)
    assert [e["name"] for e in smaller.entries()] == ["keep_000003", "keep_000004"]
    assert smaller.stats()["dropped"] == 3


@pytest.mark.parametrize("name", ["../threshold", "..", "keep_1", "keep_000000/../x", "/etc/passwd", "keep_000000.jpg",
                                  "keep_999999", ""])
def test_bad_names_are_not_found(tmp_path, name):
    (tmp_path / "threshold.jpg").write_bytes(b"secret")
    store = KeepStore(tmp_path / "keep", limit=MB)
    store.add(b"frame", {"seq": 0, "truth": []})
    with pytest.raises(NotFound):
        store.read(name)
    with pytest.raises(NotFound):
        store.delete(name)
    assert store.read("keep_000000") == b"frame"


# -- which frames ---------------------------------------------------------------------------------
@pytest.fixture
def keeper(tmp_path):
    threshold = Threshold(tmp_path, 0.5)
    threshold.update({"per_class": {"dog": 0.25}})
    made = Keeper(KeepStore(tmp_path / "keep", 10 * MB), threshold, "cam1", floor=0.2, interval_s=0, dedup_bits=10)
    yield made.start()
    made.stop()


def wait_kept(keeper, n, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(keeper.store.entries()) < n:
        time.sleep(0.02)
    time.sleep(0.1)  # anything beyond `n` would have arrived by now
    return keeper.store.entries()


def test_uncertain_means_the_best_score_lies_between_the_floor_and_its_class_threshold(keeper):
    cases = [([det("cat", 0.3)], True),                    # 0.2 <= 0.3 < 0.5
             ([det("cat", 0.1)], False),                   # below the floor
             ([det("cat", 0.7)], False),                   # sure
             ([det("dog", 0.3)], False),                   # dog's threshold is 0.25: sure
             ([det("cat", 0.45), det("dog", 0.3)], True),  # the best decides
             ([det("cat", 0.6), det("cat", 0.3)], False),
             ([], False)]
    for seq, (detections, _) in enumerate(cases):
        keeper.observe(noise_frame(seq), FakeDetector, detections, [])
    kept = wait_kept(keeper, 2)
    assert [e["seq"] for e in kept] == [seq for seq, (_, uncertain) in enumerate(cases) if uncertain]
    assert {e["reason"] for e in kept} == {"uncertain"}
    sidecar = json.loads(keeper.store.read(kept[1]["name"], "json"))
    # Suggested labels: pixels, best first, each with its score and whether it passed the threshold.
    assert sidecar["truth"] == [
        {"class_id": 0, "label": "cat", "box": [16.0, 12.0, 80.0, 60.0], "score": 0.45, "passed": False},
        {"class_id": 1, "label": "dog", "box": [16.0, 12.0, 80.0, 60.0], "score": 0.3, "passed": True}]
    assert sidecar["width"] == 160 and sidecar["height"] == 120 and sidecar["device"] == "cam1"
    assert sidecar["model_version"] == "v1" and len(sidecar["dhash"]) == 64


def test_the_rate_limit_holds_back_each_reason_on_its_own(keeper):
    keeper.interval_s = 60
    for seq in range(5):
        keeper.observe(noise_frame(seq), FakeDetector, [det("cat", 0.3)], [])
    keeper.count_changed(noise_frame(10), [det("cat", 0.9)])
    keeper.count_changed(noise_frame(11), [det("cat", 0.9)])
    kept = wait_kept(keeper, 2)
    assert [(e["seq"], e["reason"]) for e in kept] == [(0, "uncertain"), (10, "count_changed")]
    assert keeper.stats()["skipped"]["rate_limited"] == 5


def test_near_duplicates_of_the_last_kept_frame_are_skipped_but_marks_never(keeper):
    frame = noise_frame(1)
    same = Frame(2, frame.ts + 1, frame.image.copy())
    keeper.observe(frame, FakeDetector, [det("cat", 0.3)], [])
    wait_kept(keeper, 1)
    keeper.observe(same, FakeDetector, [det("cat", 0.3)], [])
    time.sleep(0.3)
    assert len(keeper.store.entries()) == 1 and keeper.stats()["skipped"]["duplicate"] == 1

    class Latest:
        frame, detections, model_version = same, [], "v1"
    assert keeper.mark(Latest)["reason"] == "operator"
    assert len(keeper.store.entries()) == 2


def test_the_count_change_callback_keeps_the_frame_with_its_detections(keeper):
    frame = noise_frame(5)
    detections = [det("cat", 0.8), det("dog", 0.21), det("cat", 0.05)]
    keeper.observe(frame, FakeDetector, detections, detections[:1])  # runs before the counter's callback
    keeper.count_changed(frame, detections[:1])
    kept = wait_kept(keeper, 1)
    assert [e["reason"] for e in kept] == ["count_changed"]
    truth = json.loads(keeper.store.read(kept[0]["name"], "json"))["truth"]
    assert [(t["label"], t["score"]) for t in truth] == [("cat", 0.8), ("dog", 0.21)]  # not below the floor


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path):
    stuck = Keeper(KeepStore(tmp_path / "keep", MB), Threshold(tmp_path, 0.5), "cam1", interval_s=0, queue_size=2)
    started = time.perf_counter()
    for seq in range(10):  # the worker is not started: nothing leaves the queue
        stuck.observe(noise_frame(seq), FakeDetector, [det("cat", 0.3)], [])
    assert time.perf_counter() - started < 0.05
    assert stuck.stats()["skipped"]["queue_full"] == 8 and stuck.stats()["queued"] == 2


def test_suggestions_clip_boxes_to_the_frame_and_skip_empty_ones(tmp_path):
    threshold = Threshold(tmp_path, 0.5)
    found = suggestions([det("cat", 0.9, (-0.1, 0.5, 0.5, 1.2)), det("dog", 0.9, (0.5, 0.5, 0.5, 0.7))],
                        200, 100, threshold, 0.2)
    assert found == [{"class_id": 0, "label": "cat", "box": [0.0, 50.0, 100.0, 100.0], "score": 0.9, "passed": True}]


# -- on a real service ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """The demo model on the synthetic camera, uncertain from 0.05 up to its threshold 0.5."""
    folder = tmp_path_factory.mktemp("keep-service")
    service = EdgeService(folder, "--camera", "synthetic:1?size=640x480", "--broker", "none",
                          "--artifacts", str(folder / "artifacts"), "--model", str(DEMO_MODEL), "--token", TOKEN,
                          "--threshold", "0.5", "--keep-floor", "0.05", "--keep-interval-s", str(INTERVAL_S))
    service.start()
    yield service
    service.stop()


def wait_keep(service, predicate, timeout=40):
    return service.wait_status(lambda doc: predicate(doc["keep"]), timeout=timeout)["keep"]


def test_the_service_keeps_uncertain_and_count_change_frames_at_a_bounded_rate(device):
    wait_keep(device, lambda keep: keep["kept"]["uncertain"] >= 2 and keep["kept"]["count_changed"] >= 2)
    listing = device.get("/keep").json()
    assert listing["enabled"] and listing["device"] == "testcam"
    assert listing["bytes"] <= listing["limit_bytes"] == 200 * MB
    by_reason = {}
    for entry in listing["frames"]:
        by_reason.setdefault(entry["reason"], []).append(entry)
    for reason in ("uncertain", "count_changed"):
        times = [e["timestamp"] for e in by_reason[reason]]
        assert all(b - a >= INTERVAL_S - 0.1 for a, b in zip(times, times[1:])), (reason, times)
    uncertain = device.get(f"/keep/{by_reason['uncertain'][0]['name']}.json").json()
    best = uncertain["truth"][0]
    assert 0.05 <= best["score"] < 0.5 and not best["passed"]
    changed = device.get(f"/keep/{by_reason['count_changed'][0]['name']}.json").json()
    assert changed["reason"] == "count_changed" and changed["model_version"]
    image = cv2.imdecode(np.frombuffer(device.get(f"/keep/{changed['name']}").content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (changed["height"], changed["width"], 3) == (480, 640, 3)


def test_post_keep_marks_the_latest_frame_and_needs_the_token(device):
    import requests
    anonymous = requests.post(device.url + "/keep", timeout=10)
    assert anonymous.status_code == 401
    response = device.session.post(device.url + "/keep", timeout=10)
    assert response.status_code == 201, response.text
    entry = response.json()
    assert entry["reason"] == "operator" and response.headers["Location"] == f"/keep/{entry['name']}"
    assert entry["name"] in [e["name"] for e in device.get("/keep").json()["frames"]]
    jpeg = device.get(f"/keep/{entry['name']}.jpg")
    assert jpeg.status_code == 200 and jpeg.headers["Content-Type"] == "image/jpeg"
    assert jpeg.content == device.get(f"/keep/{entry['name']}").content
    assert requests.delete(f"{device.url}/keep/{entry['name']}", timeout=10).status_code == 401
    assert device.session.delete(f"{device.url}/keep/{entry['name']}", timeout=10).json() == {"deleted": entry["name"]}
    assert device.get(f"/keep/{entry['name']}").status_code == 404
    assert device.session.delete(f"{device.url}/keep/{entry['name']}", timeout=10).status_code == 404


@pytest.mark.parametrize("path", ["/keep/..%2f..%2fthreshold.json", "/keep/..%2Fthreshold", "/keep/keep_1",
                                  "/keep/%2e%2e", "/keep/keep_000000.png", "/keep/keep_999999.json",
                                  "/keep/.keep_000000.jpg.x.tmp"])
def test_bad_names_answer_404_over_http(device, path):
    response = device.get(path)
    assert response.status_code == 404 and response.json()["error"]["code"] in ("unknown_frame", "not_found")
    assert device.session.delete(device.url + path, timeout=10).status_code in (404, 405)


def test_pull_worth_labelling_brings_them_home_pre_labelled(device, tmp_path):
    wait_keep(device, lambda keep: keep["count"] >= 3)
    folder = tmp_path / "frames"
    first = CliRunner().invoke(ctl, ["pull", "--worth-labelling", device.url, "-o", str(folder), "-n", "3", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1])["new"] == 3
    assert files(folder) == [f"frame_{i:06d}.{ext}" for i in range(3) for ext in ("jpg", "json")]
    listing = device.get("/keep").json()
    again = CliRunner().invoke(ctl, ["pull", "--worth-labelling", device.url, "-o", str(folder), "--json"])
    assert again.exit_code == 0, again.output
    result = json.loads(again.stdout.strip().splitlines()[-1])
    assert result["fetched_before"] == 3 and result["kept"] == 3 + result["new"] >= len(listing["frames"]) - result["gone"]

    sidecars = [json.loads(p.read_text()) for p in sorted(folder.glob("frame_*.json"))]
    assert len({(s["device_id"], s["kept_as"]) for s in sidecars}) == len(sidecars)  # each once
    for i, sidecar in enumerate(sidecars):
        assert sidecar["file"] == f"frame_{i:06d}.jpg" and sidecar["device"] == device.url
        assert sidecar["device_id"] == "testcam" and sidecar["kept_as"].startswith("keep_")
        device_side = device.get(f"/keep/{sidecar['kept_as']}.json")
        if device_side.ok:
            assert sidecar["truth"] == device_side.json()["truth"]

    manifest = tmp_path / "data.manifest"
    imported = CliRunner().invoke(ctl, ["labels", "import", "-f", "images", str(folder), "-o", str(manifest)])
    assert imported.exit_code == 0, imported.output
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(lines) == len(sidecars)
    assert [len(line["labels"]["annotations"]) for line in lines] == [len(s["truth"]) for s in sidecars]
    assert sum(len(s["truth"]) for s in sidecars) > 0  # the boxes arrived
    classes = set(lines[0]["labels-metadata"]["class-map"].values())
    assert classes <= {"note_1000", "note_2000"}


def test_the_store_stays_under_a_small_limit_on_the_service(tmp_path):
    service = EdgeService(tmp_path, "--camera", "synthetic:2?size=640x480", "--broker", "none", "--token", TOKEN,
                          "--artifacts", str(tmp_path / "artifacts"), "--keep-mb", "0.25").start()
    service.wait_status(lambda doc: doc["camera"]["frames"] > 0)
    for _ in range(8):  # capture-only: marks come from the loop's latest frame
        assert service.session.post(service.url + "/keep", timeout=10).status_code == 201
    keep = service.get("/status").json()["keep"]
    assert keep["bytes"] <= keep["limit_bytes"] == int(0.25 * MB)
    assert keep["dropped"] == 8 - keep["count"] > 0
    assert on_disk(tmp_path / "state" / "keep") <= keep["limit_bytes"]
    service.stop()


def test_keep_mb_0_turns_it_off(tmp_path):
    service = EdgeService(tmp_path, "--camera", "synthetic:2?size=320x240", "--broker", "none", "--token", TOKEN,
                          "--artifacts", str(tmp_path / "artifacts"), "--keep-mb", "0").start()
    assert service.get("/keep").json() == {"device": "testcam", "enabled": False, "count": 0, "bytes": 0,
                                           "limit_bytes": 0, "dropped": 0, "frames": []}
    assert service.get("/status").json()["keep"]["enabled"] is False
    refused = service.session.post(service.url + "/keep", timeout=10)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "keep_off"
    result = CliRunner().invoke(ctl, ["pull", "--worth-labelling", service.url, "-o", str(tmp_path / "frames")])
    assert result.exit_code == 1 and "keeps no frames worth labelling" in result.output
    assert not (tmp_path / "state" / "keep").exists()
    service.stop()
