"""GET/PUT /threshold: the live detection threshold (default and per class); changing it needs the token."""
from flask import Blueprint, jsonify, request

from core.errors import InvalidInput

from . import require_token, runtime

blueprint = Blueprint("threshold", __name__)


@blueprint.get("/threshold")
def get_threshold():
    return jsonify(runtime().threshold.to_json())


@blueprint.put("/threshold")
def put_threshold():
    require_token()
    body = request.get_json(silent=True)
    if body is None:
        raise InvalidInput('send a JSON body like {"default": 0.4, "per_class": {"name": 0.6}}', "invalid_json")
    rt = runtime()
    doc = rt.threshold.update(body)
    rt.publish_status()
    return jsonify(doc)
