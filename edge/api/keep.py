"""/keep: the frames worth labelling that the device keeps (edge/keep.py), for `deeplens-ctl pull
--worth-labelling`. Marking a frame and deleting one need the token; names are checked against
the store's own pattern, so no request reaches a file outside it."""
from flask import Blueprint, Response, jsonify

from core.errors import Conflict, NotFound, Unavailable

from ..keep import OFF
from . import require_token, runtime

blueprint = Blueprint("keep", __name__)


def _keeper():
    keeper = runtime().keeper
    if keeper is None:
        raise Conflict("this device keeps no frames worth labelling (its keep_mb is 0)", "keep_off")
    return keeper


@blueprint.post("/keep")
def mark():
    """Keep the latest frame, with the model's detections on it as suggested labels."""
    require_token()
    rt = runtime()
    keeper = _keeper()
    result = rt.loop.latest
    if result is None:
        raise Unavailable("the camera has not delivered a frame yet", "no_frame_yet")
    entry = keeper.mark(result)
    return jsonify(entry), 201, {"Location": f"/keep/{entry['name']}"}


@blueprint.get("/keep")
def listing():
    rt = runtime()
    keeper = rt.keeper
    if keeper is None:
        return jsonify({"device": rt.config.device, **OFF, "frames": []})
    return jsonify({"device": rt.config.device, **keeper.stats(), "frames": keeper.store.entries()})


@blueprint.get("/keep/<name>")
def image(name):
    """The frame as JPEG; `<name>` or `<name>.jpg`."""
    data = _keeper().store.read(name.removesuffix(".jpg"), "jpg")
    return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "no-store"})


@blueprint.get("/keep/<name>.json")
def sidecar(name):
    """The frame's sidecar: the pull's format, with the suggested labels in `truth`."""
    data = _keeper().store.read(name, "json")
    return Response(data, mimetype="application/json", headers={"Cache-Control": "no-store"})


@blueprint.delete("/keep/<name>")
def delete(name):
    require_token()
    keeper = _keeper()
    if name.endswith(".json"):
        raise NotFound(f"no kept frame {name[:80]!r}: delete it by its name", "unknown_frame")
    keeper.store.delete(name.removesuffix(".jpg"))
    return jsonify({"deleted": name.removesuffix(".jpg")})
