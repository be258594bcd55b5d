"""GET /openapi.json: the machine-readable description of this REST API (docs/rest-api.md).

The document is package data beside this module (edge/api/openapi.json), read once; a test
checks that its paths and methods are exactly the routes the app registers.
"""
import functools
import json
from importlib import resources

from flask import Blueprint, jsonify

blueprint = Blueprint("openapi", __name__)
FILENAME = "openapi.json"


@functools.lru_cache(maxsize=1)
def document():
    """The OpenAPI 3 document as a dict."""
    return json.loads(resources.files("edge.api").joinpath(FILENAME).read_text(encoding="utf-8"))


@blueprint.get("/openapi.json")
def openapi():
    return jsonify(document())
