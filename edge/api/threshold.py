"""GET/PUT /threshold: the live detection threshold (default and per class); changing it needs the token."""
from flask import Blueprint, jsonify

from . import json_body, require_token, runtime

blueprint = Blueprint("threshold", __name__)


@blueprint.get("/threshold")
def get_threshold():
    return jsonify(runtime().threshold.to_json())


@blueprint.put("/threshold")
def put_threshold():
    require_token()
    body = json_body()
    rt = runtime()
    doc = rt.threshold.update(body)
    rt.publish_status()
    return jsonify(doc)
