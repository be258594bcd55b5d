"""GET /counts (the stabilised counts, as on MQTT) and GET/PUT /zones (changing zones needs the token)."""
from flask import Blueprint, jsonify

from . import json_body, require_token, runtime

blueprint = Blueprint("counts", __name__)


@blueprint.get("/counts")
def get_counts():
    """The document last published on deeplens/<device>/counts, plus `raw`: the last frame's counts
    before stabilising (null before the first frame), to see what the window smooths."""
    counter = runtime().counter
    return jsonify({**counter.snapshot(), "raw": counter.raw()})


@blueprint.get("/zones")
def get_zones():
    return jsonify(runtime().counter.zones_json())


@blueprint.put("/zones")
def put_zones():
    require_token()
    body = json_body()
    rt = runtime()
    doc = rt.counter.update_zones(body)
    rt.publish_status()
    return jsonify(doc)
