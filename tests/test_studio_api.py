"""The studio's JSON API and its save path (docs/studio.md): labels land in the project's manifest
at once and atomically, the first of two concurrent edits wins, bad input changes nothing, and
devices are reached through the one device client."""
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest
import requests

from conftest import REPO, free_port
from control.dataset import Collector, sagemaker
from control.studio.app import create_app
from edge.demo import render_frames


@pytest.fixture(scope="module")
def source_frames(tmp_path_factory):
    """Nine synthetic frames with their true boxes in sidecars (what `labels import -f images` reads)."""
    folder = tmp_path_factory.mktemp("source")
    render_frames(folder, seeds=range(1, 4), frames_per_seed=3, size=300)
    return folder


@pytest.fixture
def studio(tmp_path, source_frames):
    """A studio app over a fresh project holding the nine frames: 7 labelled by the import, 2 not."""
    app = create_app(tmp_path / "project")
    client = app.test_client()
    answer = client.post("/api/import", json={"path": str(source_frames), "format": "images"})
    assert answer.status_code == 200, answer.json
    client.project = tmp_path / "project"
    return client


def labels_of(client, name):
    return client.get(f"/api/frames/{name}/labels").json


def save(client, name, boxes, etag):
    return client.put(f"/api/frames/{name}/labels", json={"boxes": boxes}, headers={"If-Match": etag})


def manifest_lines(project):
    return [json.loads(line) for line in (project / "labels.manifest").read_text().splitlines()]


def first_unlabelled(client):
    return client.get("/api/frames?filter=unlabelled").json["frames"][0]["name"]


def test_an_import_brings_frames_and_labels_into_the_project(studio):
    counts = studio.get("/api/project").json["counts"]
    assert counts == {"frames": 9, "labelled": 7, "unlabelled": 2, "empty": 0, "excluded": 0, "problems": 0}
    assert studio.get("/api/project").json["classes"] == ["note_2000", "note_1000"]
    assert len(manifest_lines(studio.project)) == 7


def test_a_saved_box_is_in_the_manifest_that_train_and_validate_read(studio):
    name = first_unlabelled(studio)
    doc = labels_of(studio, name)
    assert doc["state"] == "unlabelled"
    answer = save(studio, name, [{"class_id": 1, "box": [10, 20, 110, 90.5]}], doc["etag"])
    assert answer.status_code == 200
    assert answer.json["state"] == "labelled" and answer.json["etag"] != doc["etag"]
    line = next(row for row in manifest_lines(studio.project) if row["source-ref"] == f"frames/{name}")
    assert line["labels"]["annotations"] == [{"class_id": 1, "left": 10, "top": 20, "width": 100, "height": 70.5}]
    problems = sagemaker.validate(Collector(), str(studio.project / "labels.manifest"))
    assert [p for p in problems if p.severity == "error"] == []


def test_no_objects_here_is_an_empty_label_and_delete_makes_a_frame_unlabelled_again(studio):
    name = first_unlabelled(studio)
    empty = save(studio, name, [], labels_of(studio, name)["etag"]).json
    assert empty["state"] == "empty"
    assert studio.get("/api/frames?filter=empty").json["frames"][0]["name"] == name
    answer = studio.delete(f"/api/frames/{name}/labels", headers={"If-Match": empty["etag"]})
    assert answer.json["state"] == "unlabelled"
    assert all(row["source-ref"] != f"frames/{name}" for row in manifest_lines(studio.project))


def test_of_two_tabs_saving_the_same_frame_the_first_wins_and_the_second_sees_it(studio):
    name = first_unlabelled(studio)
    opened = labels_of(studio, name)["etag"]           # both tabs open the frame
    first = save(studio, name, [{"class_id": 0, "box": [1, 1, 50, 50]}], opened)
    second = save(studio, name, [{"class_id": 1, "box": [60, 60, 90, 90]}], opened)
    assert first.status_code == 200
    assert second.status_code == 409
    assert second.json["error"]["code"] == "edited_elsewhere"
    assert "first save wins" in second.json["error"]["message"]
    assert second.json["current"]["boxes"] == first.json["boxes"]
    assert labels_of(studio, name)["boxes"] == first.json["boxes"]


def test_an_edit_made_on_the_command_line_is_noticed(studio):
    name = studio.get("/api/frames?filter=labelled").json["frames"][0]["name"]
    etag = labels_of(studio, name)["etag"]
    rows = manifest_lines(studio.project)
    for row in rows:   # someone edits the manifest by hand: the frame's first box moves
        if row["source-ref"] == f"frames/{name}":
            row["labels"]["annotations"][0]["left"] += 3
    (studio.project / "labels.manifest").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert labels_of(studio, name)["etag"] != etag
    assert save(studio, name, [], etag).status_code == 409


def test_concurrent_saves_of_different_frames_are_all_kept(studio):
    frames = [f["name"] for f in studio.get("/api/frames").json["frames"]]
    errors = []

    def edit(name, k):
        for step in range(6):
            doc = labels_of(studio, name)
            answer = save(studio, name, [{"class_id": k % 2, "box": [step, step, 100 + step, 100 + step]}], doc["etag"])
            if answer.status_code != 200:
                errors.append(answer.json)

    threads = [threading.Thread(target=edit, args=(name, k)) for k, name in enumerate(frames)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    by_ref = {row["source-ref"]: row["labels"]["annotations"] for row in manifest_lines(studio.project)}
    assert len(by_ref) == len(frames)
    for k, name in enumerate(frames):
        assert by_ref[f"frames/{name}"] == [{"class_id": k % 2, "left": 5, "top": 5, "width": 100, "height": 100}]


@pytest.mark.parametrize("boxes, field", [
    ([{"class_id": 0, "box": [10, 10, 400, 50]}], "boxes[0].box"),        # beyond the 300 px image
    ([{"class_id": 0, "box": [50, 10, 40, 50]}], "boxes[0].box"),         # xmax before xmin
    ([{"class_id": 7, "box": [10, 10, 40, 50]}], "boxes[0].class_id"),    # no such class
    ([{"class_id": 0}], "boxes[0]"),
    ("box", "boxes"),
])
def test_a_bad_box_is_refused_and_changes_nothing(studio, boxes, field):
    name = first_unlabelled(studio)
    before = (studio.project / "labels.manifest").read_bytes()
    answer = save(studio, name, boxes, labels_of(studio, name)["etag"])
    assert answer.status_code == 400
    assert answer.json["error"]["field"] == field
    assert (studio.project / "labels.manifest").read_bytes() == before


def test_a_save_without_the_etag_is_refused(studio):
    name = first_unlabelled(studio)
    answer = studio.put(f"/api/frames/{name}/labels", json={"boxes": []})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "etag_required"


def test_classes_grow_at_the_end_only(studio):
    assert studio.put("/api/classes", json={"classes": ["note_2000", "note_1000", "note_500"]}).status_code == 200
    assert studio.get("/api/project").json["classes"] == ["note_2000", "note_1000", "note_500"]
    moved = studio.put("/api/classes", json={"classes": ["note_1000", "note_2000", "note_500"]})
    assert moved.status_code == 409 and moved.json["error"]["code"] == "classes_fixed"
    assert studio.put("/api/classes", json={"classes": ["note_2000", "note_1000", "note_500", "Note 500"]}) \
        .status_code == 400


def test_a_torn_frame_is_a_problem_and_excluding_invalid_frames_moves_it_out(studio, tmp_path):
    torn = cv2.imread(str(next((studio.project / "frames").glob("*.png"))))
    torn[200:] = torn[-1, 0]                       # a partially decoded capture: flat band at the bottom
    cv2.imwrite(str(tmp_path / "torn.png"), torn)
    assert studio.post("/api/import", json={"path": str(tmp_path / "torn.png"), "format": "images"}).json["added"] == 1
    problems = studio.get("/api/frames?filter=problems").json
    assert problems["total"] == 1 and "broken frame" in problems["frames"][0]["problems"][0]
    name = problems["frames"][0]["name"]
    assert studio.post("/api/frames/exclude", json={"invalid": True}).json == {"excluded": [name]}
    assert (studio.project / "excluded" / name).is_file()
    assert not (studio.project / "frames" / name).exists()
    assert studio.get("/api/project").json["counts"]["excluded"] == 1


def test_near_duplicates_are_grouped(studio, tmp_path):
    frame = next((studio.project / "frames").glob("*.png"))
    twin = cv2.imread(str(frame))
    twin[0, 0] = 0                                # one pixel changed: a near-duplicate
    cv2.imwrite(str(tmp_path / "twin.png"), twin)
    studio.post("/api/import", json={"path": str(tmp_path / "twin.png"), "format": "images"})
    group = studio.get("/api/frames?filter=duplicates").json["frames"]
    assert {f["name"] for f in group} >= {frame.name} and len({f["group"] for f in group}) == 1


def test_the_gallery_pages_and_thumbnails(studio):
    page = studio.get("/api/frames?offset=2&limit=3").json
    assert page["total"] == 9 and len(page["frames"]) == 3
    thumb = studio.get(f"/api/frames/{page['frames'][0]['name']}/thumb")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert studio.get("/api/frames?filter=nonsense").status_code == 400
    assert studio.get("/api/frames/nothing.jpg/labels").status_code == 404


def test_suggestions_come_from_a_finished_run_and_are_not_saved(studio, trained):
    _, package, _ = trained
    run = studio.project / "runs" / "earlier"
    run.mkdir(parents=True)
    (run / "studio.json").write_text(json.dumps({"options": {}, "started": 0, "pid": None}))
    (run / "result.json").write_text(json.dumps({"state": "done", "package": {
        "name": package.name, "version": package.version, "classes": package.classes, "folder": str(package.folder)}}))
    assert "run:earlier" in [m["id"] for m in studio.get("/api/models").json]
    name = first_unlabelled(studio)
    before = (studio.project / "labels.manifest").read_bytes()
    answer = studio.post(f"/api/frames/{name}/suggest", json={"model": "run:earlier", "threshold": 0.0})
    assert answer.status_code == 200, answer.json
    assert answer.json["version"] == package.version
    for box in answer.json["boxes"]:
        assert 0 <= box["box"][0] < box["box"][2] <= 300 and box["label"] in ("note_2000", "note_1000")
    assert (studio.project / "labels.manifest").read_bytes() == before
    assert labels_of(studio, name)["state"] == "unlabelled"
    assert studio.post(f"/api/frames/{name}/suggest", json={"model": "run:nothing"}).status_code == 404


def test_a_kill_9_loses_at_most_the_save_in_flight(tmp_path, source_frames):
    """A real studio process saving as fast as a client can send is killed: the manifest is
    whole, and every save that was answered is in it."""
    project, port = tmp_path / "project", free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("deeplens-ctl")), "studio", str(project), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    session = requests.Session()
    session.trust_env = False
    try:
        for _ in range(100):
            try:
                session.get(url + "/project", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        session.post(url + "/import", json={"path": str(source_frames), "format": "images"}).raise_for_status()
        names = [f["name"] for f in session.get(url + "/frames").json()["frames"]]
        acknowledged, in_flight = {}, None
        threading.Timer(1.5, proc.send_signal, (signal.SIGKILL,)).start()
        step = 0
        while proc.poll() is None:
            name = names[step % len(names)]
            left = step % 50
            try:
                etag = session.get(f"{url}/frames/{name}/labels", timeout=2).json()["etag"]
                in_flight = (name, left)
                answer = session.put(f"{url}/frames/{name}/labels", headers={"If-Match": etag}, timeout=2,
                                     json={"boxes": [{"class_id": 0, "box": [left, 1, left + 100, 101]}]})
            except requests.RequestException:
                break
            if answer.status_code == 200:
                acknowledged[name], in_flight = left, None
            step += 1
    finally:
        proc.kill()
        proc.wait()
    assert len(acknowledged) == len(names) and step > 20, "too few saves before the kill to show anything"
    rows = {row["source-ref"]: row for row in manifest_lines(project)}   # parses whole: no torn line
    for name, left in acknowledged.items():
        saved = rows[f"frames/{name}"]["labels"]["annotations"][0]["left"]
        assert saved == left or (name, saved) == in_flight


# -- devices, through the one device client -----------------------------------------------------------
def test_a_device_typed_on_the_page_is_reached_through_the_device_client(studio, edge_service, dummy_model):
    device = edge_service("--camera", "synthetic", "--token", "secret", "--model", str(dummy_model.folder))
    added = studio.post("/api/devices", json={"url": device.url, "token": "secret"})
    assert added.status_code == 201
    device_id = added.json["id"]
    listed = studio.get("/api/devices").json
    assert {"id": device_id, "url": device.url, "source": "page", "token": True}.items() <= listed[-1].items()
    assert json.loads((studio.project / "project.json").read_text())["devices"] == [device.url]
    assert "secret" not in (studio.project / "project.json").read_text()
    status = studio.get(f"/api/devices/{device_id}/status").json
    assert status["device_id"] == "testcam"
    changed = studio.put(f"/api/devices/{device_id}/threshold", json={"default": 0.55})
    assert changed.status_code == 200
    assert device.get("/threshold").json()["default"] == 0.55


def test_a_wrong_token_and_a_device_that_is_gone_say_so(studio, edge_service, dummy_model):
    device = edge_service("--camera", "synthetic", "--token", "secret", "--model", str(dummy_model.folder))
    device_id = studio.post("/api/devices", json={"url": device.url, "token": "wrong"}).json["id"]
    refused = studio.put(f"/api/devices/{device_id}/threshold", json={"default": 0.5})
    assert refused.status_code == 401 and "token is wrong" in refused.json["error"]["message"]
    device.stop()
    gone = studio.get(f"/api/devices/{device_id}/status")
    assert gone.status_code == 502 and gone.json["error"]["code"] == "device_unreachable"
    assert studio.get("/api/devices/nothing/status").status_code == 404


# -- training runs ----------------------------------------------------------------------------------------
def wait_run(studio, name, until=("done", "stopped", "failed"), timeout=120, condition=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = studio.get(f"/api/runs/{name}").json
        if run["state"] in until or (condition and condition(run)):
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {name} still {run['state']} after {timeout}s")


def test_a_run_trains_in_a_child_process_stops_on_request_and_is_evaluated(studio):
    assert studio.post("/api/runs", json={"name": "first", "minutes": 5, "arch": "tiny"}).status_code == 201
    assert studio.post("/api/runs", json={"name": "first"}).status_code == 409
    running = wait_run(studio, "first", condition=lambda run: len(run["metrics"]) >= 2)
    assert running["state"] == "running" and {"loss", "map50"} <= set(running["metrics"][0])
    assert studio.post("/api/runs/first/stop").json["state"] == "stopping"
    run = wait_run(studio, "first")
    assert run["state"] == "stopped", run["reason"]
    assert run["package"]["classes"] == ["note_2000", "note_1000"]
    assert {"map50", "per_class", "confusion", "best_threshold"} <= set(run["evaluation"])
    assert studio.get("/api/runs/first/pr.png").mimetype == "image/png"
    assert (studio.project / "runs" / "first" / "model" / "model.json").is_file()
    assert "run:first" in [m["id"] for m in studio.get("/api/models").json]

    # A run that cannot start from the earlier one fails with the trainer's reason.
    assert studio.post("/api/runs", json={"name": "second", "minutes": 1, "arch": "mobilenet", "init": "first"}) \
        .status_code == 201
    failed = wait_run(studio, "second")
    assert failed["state"] == "failed" and "'tiny' model" in failed["reason"]


def test_a_run_needs_labelled_frames_and_sane_options(tmp_path):
    client = create_app(tmp_path / "empty").test_client()
    assert client.post("/api/runs", json={"name": "x"}).json["error"]["code"] == "too_few_labels"
    assert client.post("/api/runs", json={"name": "../x"}).status_code == 400
    assert client.post("/api/runs", json={"name": "x", "arch": "huge"}).status_code == 400
    assert client.post("/api/runs", json={"name": "x", "init": "nothing"}).status_code == 400
