"""The studio's JSON API (docs/studio.md): project and labels, suggestions, jobs and runs, devices.

Routes parse and answer; the work is in project.py, suggest.py, training.py, devices.py and
jobs.py, whose domain errors become HTTP in one place (core.httperrors, installed by app.py).
"""
from flask import Blueprint, Response, current_app, jsonify, request, send_file

from core.errors import InvalidInput
from core.jsonlimits import parse_json

from ..dataset.pull import Puller
from ..swap import swap

MAX_JSON_BYTES = 256 * 1024
DEPLOY_WAIT_S = 30  # for the health gate, then for first detections (a weak model may find nothing)
blueprint = Blueprint("api", __name__, url_prefix="/api")


def studio():
    return current_app.extensions["studio"]


def body(*required):
    doc = parse_json(request.get_data(cache=False) or b"{}", MAX_JSON_BYTES, 8)
    if not isinstance(doc, dict):
        raise InvalidInput("the body must be a JSON object")
    missing = [k for k in required if k not in doc]
    if missing:
        raise InvalidInput(f"the body lacks {missing[0]!r}", field=missing[0])
    return doc


def number(name, default, low, high, kind=int):
    raw = request.args.get(name)
    try:
        value = default if raw is None else kind(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, got {raw!r}", field=name) from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, got {value}", field=name)
    return value


# -- project and frames ---------------------------------------------------------------------------
@blueprint.get("/project")
def project():
    p = studio().project
    return jsonify({"folder": str(p.folder), "classes": p.classes, "counts": p.counts()})


@blueprint.put("/classes")
def classes():
    return jsonify({"classes": studio().project.set_classes(body("classes")["classes"])})


@blueprint.get("/frames")
def frames():
    return jsonify(studio().project.listing(request.args.get("filter", "all"), number("offset", 0, 0, 10 ** 9),
                                            number("limit", 200, 1, 5000)))


@blueprint.get("/frames/<name>/image")
def image(name):
    return send_file(studio().project.image_path(name), max_age=3600)


@blueprint.get("/frames/<name>/thumb")
def thumb(name):
    return send_file(studio().project.thumbnail(name), mimetype="image/jpeg", max_age=3600)


@blueprint.get("/frames/<name>/labels")
def get_labels(name):
    return jsonify(studio().project.labels(name))


def _if_match():
    etag = request.headers.get("If-Match", "").strip().strip('"')
    if not etag:
        raise InvalidInput("send the labels' etag as If-Match (from GET .../labels)", "etag_required", "If-Match")
    return etag


@blueprint.put("/frames/<name>/labels")
def put_labels(name):
    return jsonify(studio().project.save(name, body("boxes")["boxes"], _if_match()))


@blueprint.delete("/frames/<name>/labels")
def delete_labels(name):
    return jsonify(studio().project.save(name, None, _if_match()))


@blueprint.post("/frames/exclude")
def exclude():
    doc, p = body(), studio().project
    if doc.get("invalid"):
        return jsonify({"excluded": p.exclude_invalid()})
    names = doc.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidInput("send {names: [frame names]} or {invalid: true}", field="names")
    return jsonify({"excluded": p.exclude(names)})


@blueprint.post("/import")
def import_labels():
    doc = body("path", "format")
    return jsonify(studio().project.import_labels(str(doc["path"]), str(doc["format"])))


# -- suggestions ------------------------------------------------------------------------------------
@blueprint.get("/models")
def models():
    return jsonify(studio().suggestions.models())


@blueprint.post("/frames/<name>/suggest")
def suggest(name):
    doc = body("model")
    return jsonify(studio().suggestions.suggest(name, doc["model"], doc.get("threshold", 0.3)))


# -- jobs and runs ------------------------------------------------------------------------------------
@blueprint.get("/jobs/<job_id>")
def job(job_id):
    return jsonify(studio().jobs.get(job_id).to_json())


@blueprint.post("/capture")
def capture():
    doc, s = body("device", "count"), studio()
    count = doc["count"]
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10000:
        raise InvalidInput(f"count must be a whole number from 1 to 10000, got {count!r}", field="count")
    client = s.devices.client(doc["device"])
    s.project.write_missing_sidecars()  # the pull removes frame images that have none

    def work(job):
        puller = Puller(client, str(s.project.frames_dir))
        start = puller.kept
        job.update(done=0, total=count, phase="capture")
        stats = puller.run(count=start + count, on_frame=lambda kept: job.update(done=kept - start))
        job.update(phase="thumbnails")
        s.project.make_thumbnails()
        return {"new": stats["new"], "duplicates": stats["duplicates"], "rejected": stats["rejected"]}
    return jsonify({"job": s.jobs.start("capture", work).id}), 202


@blueprint.get("/runs")
def runs():
    return jsonify(studio().runs.listing())


@blueprint.post("/runs")
def start_run():
    doc = body("name")
    options = {k: doc[k] for k in ("minutes", "arch", "flip", "init", "size") if doc.get(k) is not None}
    return jsonify(studio().runs.start(doc["name"], **options)), 201


@blueprint.get("/runs/<name>")
def run(name):
    return jsonify(studio().runs.get(name))


@blueprint.post("/runs/<name>/stop")
def stop_run(name):
    return jsonify(studio().runs.stop(name))


@blueprint.get("/runs/<name>/pr.png")
def pr_png(name):
    return send_file(studio().runs.pr_curves(name), mimetype="image/png", max_age=0)


@blueprint.post("/runs/<name>/deploy")
def deploy(name):
    s = studio()
    folder = s.runs.package_folder(name)
    client = s.devices.client(body("device")["device"])

    def work(job):
        job.update(phase="upload", done=0, total=None)
        return swap(client, folder, wait=DEPLOY_WAIT_S, phase=lambda name: job.update(phase=name),
                    progress_start=lambda total: job.update(total=total),
                    progress=lambda n: job.update(done=job.progress["done"] + n))
    return jsonify({"job": s.jobs.start("deploy", work).id}), 202


# -- devices, through the one device client -------------------------------------------------------------
@blueprint.get("/devices")
def devices():
    return jsonify(studio().devices.listing())


@blueprint.post("/devices")
def add_device():
    doc = body("url")
    return jsonify(studio().devices.add(doc["url"], doc.get("token") or "")), 201


@blueprint.get("/devices/<device_id>/status")
def device_status(device_id):
    return jsonify(studio().devices.client(device_id).status())


@blueprint.get("/devices/<device_id>/detections")
def device_detections(device_id):
    return jsonify(studio().devices.client(device_id).detections())


@blueprint.get("/devices/<device_id>/stream")
def device_stream(device_id):
    content_type, blocks = studio().devices.client(device_id).stream(number("size", 640, 0, 4096))
    return Response(blocks, content_type=content_type, headers={"Cache-Control": "no-store"})


@blueprint.route("/devices/<device_id>/threshold", methods=["GET", "PUT"])
def device_threshold(device_id):
    client = studio().devices.client(device_id)
    return jsonify(client.threshold(body() if request.method == "PUT" else None))


@blueprint.get("/devices/<device_id>/models")
def device_models(device_id):
    return jsonify(studio().devices.client(device_id).models())


@blueprint.post("/devices/<device_id>/models/<version>/activate")
def device_activate(device_id, version):
    return jsonify(studio().devices.client(device_id).activate(version))


@blueprint.post("/devices/<device_id>/rollback")
def device_rollback(device_id):
    return jsonify(studio().devices.client(device_id).rollback())


@blueprint.delete("/devices/<device_id>/models/<version>")
def device_delete(device_id, version):
    return jsonify(studio().devices.client(device_id).delete(version))
