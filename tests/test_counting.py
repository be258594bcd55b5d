"""Counting: the median stabiliser (no flicker, changes and zeros announced), values and totals,
the retained counts topic on a real mosquitto, and a real `deeplens-edge serve` counting the
synthetic camera's notes per zone against the truth the camera knows."""
import json
import time
import types

import pytest
from jsonschema import validate

from core.errors import InvalidInput, ModelError
from core.package import load_package, write_package
from core.topics import event_schema
from edge.config import load
from edge.counting import Counter, ZoneStore, parse_values
from edge.demo import SHIPPED_MODEL
from edge.errors import ConfigError
from shims.camera import SyntheticCamera

CLASSES = ["note_2000", "note_1000"]
VALUES = {"note_2000": 2000, "note_1000": 1000}
HALVES = [{"name": "left", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]},
          {"name": "right", "points": [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]}]


def detector(version="v1", classes=CLASSES, values=None):
    package = types.SimpleNamespace(values=values or {})
    return types.SimpleNamespace(version=version, classes=list(classes), name="m", package=package)


def note(label, x=0.25, y=0.5):
    return {"class_id": CLASSES.index(label) if label in CLASSES else 0, "label": label, "score": 0.9,
            "box": [x - 0.05, y - 0.05, x + 0.05, y + 0.05]}


class Feed:
    """A Counter fed frame after frame; `docs` are what it published."""

    def __init__(self, window=5, values=None, zones=None, zones_only=False, tmp_path=None):
        self.docs = []
        store = ZoneStore(tmp_path, zones or [], zones_only) if tmp_path else None
        self.counter = Counter(window, values, store, self.docs.append)
        self.seq = 0

    def frames(self, kept, n=1, det=None):
        det = det or detector()
        for _ in range(n):
            self.counter.observe(types.SimpleNamespace(seq=self.seq, ts=1000.0 + self.seq), det, kept, kept)
            self.seq += 1
        return self.docs[-1]


# -- the stabiliser ------------------------------------------------------------------------------
def test_counting_starts_with_every_class_of_the_model_at_zero():
    feed = Feed()
    doc = feed.frames([note("note_1000")])
    assert feed.docs == [doc]  # one frame changes no median of 5
    assert doc["counts"] == {"note_2000": 0, "note_1000": 0} and doc["model_version"] == "v1"
    assert doc["total"] is None and doc["objects"] == 0 and doc["seq"] == 0 and doc["ts"] == 1000.0


def test_one_missed_frame_does_not_make_a_count_flicker():
    feed = Feed()
    feed.frames([note("note_1000")], 5)
    published = len(feed.docs)
    for _ in range(4):
        feed.frames([])  # missed
        feed.frames([note("note_1000")], 2)
        feed.frames([note("note_1000"), note("note_2000")])  # a phantom
        feed.frames([note("note_1000")], 2)
    assert len(feed.docs) == published and feed.docs[-1]["counts"] == {"note_2000": 0, "note_1000": 1}


@pytest.mark.parametrize("window", [1, 3, 5, 7])
def test_a_real_change_is_published_after_half_a_window(window):
    feed = Feed(window)
    feed.frames([], window)
    before = len(feed.docs)
    for k in range(window // 2):
        feed.frames([note("note_2000"), note("note_2000", 0.7)])
        assert len(feed.docs) == before, f"published after {k + 1} frames"
    doc = feed.frames([note("note_2000"), note("note_2000", 0.7)])
    assert len(feed.docs) == before + 1 and doc["counts"]["note_2000"] == 2 and doc["seq"] == feed.seq - 1


def test_a_drop_to_zero_is_announced():
    feed = Feed(values=VALUES)
    feed.frames([note("note_2000"), note("note_1000")], 5)
    assert feed.docs[-1]["total"] == 3000
    feed.frames([], 3)
    assert feed.docs[-1]["counts"] == {"note_2000": 0, "note_1000": 0}
    assert feed.docs[-1]["total"] == 0 and feed.docs[-1]["objects"] == 0


def test_a_new_model_restarts_from_its_own_classes_at_zero():
    feed = Feed()
    feed.frames([note("note_1000")], 5)
    doc = feed.frames([note("a")], 1, detector("v2", ["a", "b", "c"]))
    assert doc["model_version"] == "v2" and doc["counts"] == {"a": 0, "b": 0, "c": 0}
    assert feed.frames([note("a")], 2, detector("v2", ["a", "b", "c"]))["counts"]["a"] == 1
    assert feed.counter.snapshot() is feed.docs[-1]


def test_values_from_the_model_and_the_setting_make_the_total():
    """The setting wins over the model's values; a class the model lacks is reported and ignored;
    classes without a value are left out of the total, and said so in /status."""
    feed = Feed(values={"note_2000": "5000", "note_500": 500})
    det = detector(classes=["note_2000", "note_1000", "coin"], values={"note_2000": 2000, "note_1000": 1000})
    doc = feed.frames([note("note_2000"), note("note_1000"), note("note_1000"), note("coin")], 3, det)
    assert doc["total"] == 7000 and doc["objects"] == 4
    status = feed.counter.status()
    assert status["values"] == {"note_2000": 5000, "note_1000": 1000} and status["unvalued"] == ["coin"]
    assert len(status["problems"]) == 1 and "class_values names 'note_500'" in status["problems"][0]
    assert "which the model m v1 does not have: ignored" in status["problems"][0]


def test_without_values_there_is_no_total():
    feed = Feed()
    assert feed.frames([note("note_2000")], 3)["total"] is None
    assert feed.counter.status()["unvalued"] == [] and feed.counter.status()["values"] == {}


def test_zones_count_the_detections_whose_centre_they_hold(tmp_path):
    feed = Feed(values=VALUES, zones=HALVES, tmp_path=tmp_path)
    doc = feed.frames([note("note_2000", 0.2), note("note_1000", 0.7), note("note_1000", 0.8)], 3)
    assert doc["zones"] == {"left": {"note_2000": 1, "note_1000": 0}, "right": {"note_2000": 0, "note_1000": 2}}
    assert doc["zone_objects"] == {"left": 1, "right": 2} and doc["zone_totals"] == {"left": 2000, "right": 2000}
    raw = feed.counter.raw()
    assert raw["counts"] == {"note_2000": 1, "note_1000": 2} and raw["total"] == 4000 and raw["seq"] == 2


def test_zones_only_leaves_out_what_lies_outside_every_zone(tmp_path):
    tray = [{"name": "tray", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}]
    feed = Feed(zones=tray, zones_only=True, tmp_path=tmp_path)
    doc = feed.frames([note("note_2000", 0.2), note("note_1000", 0.7)], 3)
    assert doc["counts"] == {"note_2000": 1, "note_1000": 0}
    feed.counter.update_zones({"zones_only": False})  # what is counted changes: class counts start again
    assert feed.docs[-1]["counts"] == {"note_2000": 0, "note_1000": 0} and feed.docs[-1]["seq"] is None
    assert feed.frames([note("note_2000", 0.2), note("note_1000", 0.7)], 3)["counts"] == {"note_2000": 1,
                                                                                        "note_1000": 1}


def test_a_zone_change_restarts_the_zone_counts_only(tmp_path):
    feed = Feed(zones=HALVES[:1], tmp_path=tmp_path)
    feed.frames([note("note_2000", 0.2)], 5)
    feed.counter.update_zones({"zones": HALVES})
    doc = feed.docs[-1]
    assert doc["counts"]["note_2000"] == 1 and doc["zones"]["left"] == {"note_2000": 0, "note_1000": 0}
    assert feed.frames([note("note_2000", 0.2)], 3)["zones"]["left"]["note_2000"] == 1
    with pytest.raises(InvalidInput):
        feed.counter.update_zones({"zones": [{"name": "bad", "points": [[0, 0], [1, 1]]}]})
    assert [z["name"] for z in feed.counter.zones_json()["zones"]] == ["left", "right"]


def test_subscribers_hear_of_count_changes_and_of_layout_changes(tmp_path):
    feed = Feed(zones=HALVES[:1], values=VALUES, tmp_path=tmp_path)
    changes, layouts = [], []
    feed.counter.on_change.append(lambda frame, kept: changes.append((frame.seq, len(kept))))
    feed.counter.on_change.insert(0, lambda frame, kept: 1 / 0)  # a failing subscriber stops nothing
    feed.counter.on_layout.append(lambda *layout: layouts.append(layout))
    feed.frames([note("note_2000")], 5)
    assert changes == [(2, 1)]  # the frame whose stabilised count changed, with its detections
    assert layouts == [(CLASSES, ["left"], True)]
    feed.counter.update_zones({"zones": HALVES})
    feed.frames([note("note_2000")], 1, detector("v2"))  # same classes, same zones: no new layout
    assert layouts == [(CLASSES, ["left"], True), (CLASSES, ["left", "right"], True)]
    feed.frames([], 1, detector("v3", ["x"]))
    assert layouts[-1] == (["x"], ["left", "right"], False)


def test_the_window_is_odd():
    with pytest.raises(ValueError, match="odd"):
        Counter(4)


# -- settings and model metadata -----------------------------------------------------------------
def test_class_values_come_as_text_json_or_a_mapping_in_the_config_file(tmp_path):
    text = load(env={}, overrides={"class_values": "2000 RUB=2000, 1000 RUB=1000.5"}).class_values
    assert parse_values(text) == {"2000 RUB": 2000, "1000 RUB": 1000.5}
    assert load(env={"DEEPLENS_CLASS_VALUES": '{"a": 1}'}).class_values == {"a": 1}
    config_file = tmp_path / "edge.yaml"
    config_file.write_text("class_values:\n  note_2000: 2000\ncount_window: 7\nzones_only: true\nzones:\n"
                           "  - name: tray\n    points: [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]\n")
    config = load(config_file, env={})
    assert (config.class_values, config.count_window, config.zones_only) == ({"note_2000": 2000}, 7, True)
    assert config.zones[0]["name"] == "tray"


@pytest.mark.parametrize("overrides, message", [
    ({"class_values": "2000"}, "'class_values' must be a mapping"),
    ({"class_values": "a=lots"}, "class_values.a must be a number"),
    ({"class_values": "a=nan"}, "class_values.a must be a finite number"),
    ({"count_window": 4}, "'count_window' must be an odd number from 1 to 99"),
    ({"zones": '[{"name": "a", "points": [[0, 0], [1, 1], [1, 0], [0, 1]]}]'}, "crosses or touches itself"),
    ({"zones": "tray"}, "'zones' must be a list"),
])
def test_bad_counting_settings_stop_the_start_naming_the_setting(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(env={}, overrides=overrides)


def test_model_json_may_carry_values_for_its_own_classes(tmp_path, dummy_model):
    import shutil
    folder = tmp_path / "pkg"
    shutil.copytree(dummy_model.folder, folder)
    meta = json.loads((folder / "model.json").read_text())
    classes = meta["classes"]
    (folder / "model.json").write_text(json.dumps({**meta, "values": {classes[0]: 5}}))
    assert load_package(folder).values == {classes[0]: 5}
    assert load_package(folder).to_json()["values"] == {classes[0]: 5}
    for values, message in (({"nope": 5}, "names 'nope', which is not in 'classes'"),
                            ({classes[0]: "5"}, "must be a finite number"), ([5], "must map class names")):
        (folder / "model.json").write_text(json.dumps({**meta, "values": values}))
        with pytest.raises(ModelError, match=message):
            load_package(folder)
    package = write_package(folder, meta["name"], classes, 300, 300, values={classes[1]: 2.5})
    assert load_package(folder).values == {classes[1]: 2.5} == package.values


# -- MQTT ------------------------------------------------------------------------------------------
def test_counts_are_retained_and_a_late_subscriber_gets_the_last_one(mosquitto, publishers, subscriber):
    publisher = publishers(mosquitto.address)
    counter = Counter(3, VALUES, None, publisher.publish_counts)
    topic = "deeplens/cam1/counts"
    live = subscriber(mosquitto.address, topic)
    det, seen = detector(), []
    for seq, kept in enumerate([[note("note_2000")]] * 3 + [[]] * 3):
        changes = counter.changes
        counter.observe(types.SimpleNamespace(seq=seq, ts=float(seq)), det, kept, kept)
        if counter.changes > changes:  # only the latest document waits: take each before the next
            seen.append(live.next(topic)[0])
    assert [d["counts"]["note_2000"] for d in seen] == [0, 1, 0]  # the start, the note, and zero announced
    assert [d["total"] for d in seen] == [0, 2000, 0] and [d["seq"] for d in seen] == [0, 1, 4]
    counter.observe(types.SimpleNamespace(seq=6, ts=6.0), detector("v2"), [], [])  # pending ones are replaced:
    counter.observe(types.SimpleNamespace(seq=7, ts=7.0), detector("v3"), [], [])  # v2's may never go out
    assert live.next(topic, where=lambda d: d["model_version"] == "v3")[0] == counter.snapshot()
    late = subscriber(mosquitto.address, topic)
    doc, retained = late.next(topic)
    assert retained and doc == counter.snapshot() and doc["counts"] == {"note_2000": 0, "note_1000": 0}


# -- a real service on the synthetic camera -------------------------------------------------------
def truth(camera, seq, region, zones):
    """{counts, zones} the camera's own truth gives for frame `seq`: the notes at least half inside
    the region the model sees, each in the zone that holds the centre of its part in view."""
    _, boxes = camera.render(seq)
    width, height = camera.size
    counts = dict.fromkeys(CLASSES, 0)
    per_zone = {z.name: dict.fromkeys(CLASSES, 0) for z in zones}
    x, y, w, h = region
    for obj in boxes:
        x0, y0, x1, y1 = obj["box"][0] / width, obj["box"][1] / height, obj["box"][2] / width, obj["box"][3] / height
        cx0, cy0, cx1, cy1 = max(x0, x), max(y0, y), min(x1, x + w), min(y1, y + h)
        if cx1 > cx0 and cy1 > cy0 and (cx1 - cx0) * (cy1 - cy0) >= 0.5 * (x1 - x0) * (y1 - y0):
            counts[obj["label"]] += 1
            for zone in zones:
                if zone.contains((cx0 + cx1) / 2, (cy0 + cy1) / 2):
                    per_zone[zone.name][obj["label"]] += 1
    return {"counts": counts, "zones": per_zone}


def test_a_service_counts_the_synthetic_cameras_notes_per_zone_with_their_total(edge_service, tmp_path, mosquitto,
                                                                                 subscriber):
    """The demo model on synthetic camera 6 (one it was not trained on), zones from the config
    file, values from the flag; GET /counts, the retained topic and /status agree, and the counts
    match the camera's truth on most frames (loosely: the model misses notes that overlap)."""
    config_file = tmp_path / "edge.yaml"
    config_file.write_text("zones:\n"
                           "  - {name: left, points: [[0.21875, 0], [0.5, 0], [0.5, 1], [0.21875, 1]]}\n"
                           "  - {name: right, points: [[0.5, 0], [0.78125, 0], [0.78125, 1], [0.5, 1]]}\n")
    service = edge_service("-c", str(config_file), "--camera", "synthetic:6", "--frame-size", "640x360",
                           "--broker", mosquitto.address, "--model", str(SHIPPED_MODEL), "--threshold", "0.3",
                           "--class-values", "note_2000=2000,note_1000=1000,note_5000=5000",
                           "--artifacts", str(tmp_path / "artifacts"))
    status = service.wait_status(lambda doc: doc["frames_processed"] > 20)
    region = status["crop"]["region"]
    zones = ZoneStore(tmp_path / "unused", [json.loads(json.dumps(z)) for z in load(config_file, env={}).zones]).zones
    camera = SyntheticCamera(6, (640, 360))
    matches, zone_matches, samples = 0, 0, 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        doc = service.get("/counts").json()
        raw = doc["raw"]
        assert doc["total"] == 2000 * doc["counts"]["note_2000"] + 1000 * doc["counts"]["note_1000"]
        assert sum(z[c] for z in raw["zones"].values() for c in CLASSES) == raw["objects"]  # the halves tile it
        recent = [truth(camera, seq, region, zones) for seq in range(max(0, raw["seq"] - 4), raw["seq"] + 1)]
        matches += any(doc["counts"] == t["counts"] for t in recent)
        zone_matches += any(doc["zones"] == t["zones"] for t in recent)
        samples += 1
        time.sleep(0.1)
    assert samples >= 20
    assert matches >= 0.6 * samples and zone_matches >= 0.5 * samples, (matches, zone_matches, samples)
    status = service.get("/status").json()["counts"]
    assert status["zones"] == ["left", "right"] and status["values"] == {"note_2000": 2000, "note_1000": 1000}
    assert "class_values names 'note_5000'" in status["problems"][0] and status["window"] == 5
    late = subscriber(mosquitto.address, "deeplens/testcam/counts")
    published, retained = late.next("deeplens/testcam/counts")
    assert retained and published["model_version"] == load_package(SHIPPED_MODEL).version
    assert set(published["zones"]) == {"left", "right"} and set(published["counts"]) == set(CLASSES)
    events = subscriber(mosquitto.address, "deeplens/testcam/detections")
    event, _ = events.next("deeplens/testcam/detections")
    validate(event, event_schema())
    assert event["total"] == sum({"note_2000": 2000, "note_1000": 1000}[d["label"]] for d in event["detections"])
