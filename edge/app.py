"""The Flask app factory: one blueprint per resource. Errors become HTTP in core.httperrors (the one
mapping both web apps share): domain code raises core.errors kinds and never names a status, so every
route answers the same `{"error": {"code", "message", "field"?}}` for the same fault (docs/rest-api.md).
"""
from flask import Flask, request

from core.errors import TooLarge
from core.httperrors import install

from .api import (MAX_JSON_BYTES, capture, counts, keep, models, openapi, page, require_token, status, threshold,
                  view)

# What answers without the token even when reads need it (the page holds no data: it asks for the token).
PUBLIC = {"status.health", "openapi.openapi", "page.index", "page.asset"}


def create_app(runtime):
    """`runtime` (edge.runtime.Runtime) holds the camera, loop, threshold, model manager and publisher."""
    app = Flask("edge", static_folder=None)  # the page's files come from edge/api/page.py
    app.extensions["deeplens"] = runtime
    for module in (capture, counts, keep, models, openapi, page, status, threshold, view):
        app.register_blueprint(module.blueprint)

    @app.before_request
    def reads_need_token():
        if request.endpoint not in PUBLIC and runtime.config.reads_need_token:
            require_token()

    @app.before_request
    def bounded_body():
        """Every route but the upload (which checks its own limit) takes a small JSON body at most:
        a larger one is refused before it is read."""
        if request.endpoint == "models.upload":
            return
        if (request.content_length or 0) > MAX_JSON_BYTES:
            raise TooLarge(f"the request body is {request.content_length} bytes; this route takes at most "
                           f"{MAX_JSON_BYTES}", "body_too_large")
        request.max_content_length = MAX_JSON_BYTES  # a chunked body is cut there as it is read

    install(app, "the device failed on this request; its log says why")
    return app
