"""The Flask app factory: one blueprint per resource, and the one place where errors become HTTP.

Domain code raises core.errors kinds and never names a status; STATUS maps each kind to one
(the most specific class wins), so every route answers the same error for the same fault:
`{"error": {"code", "message", "field"?}}` (docs/rest-api.md).
"""
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from core.errors import (Conflict, DeepLensError, DiskFull, InvalidInput, ModelError, NotFound, TooLarge,
                         Unavailable)

from .api import MAX_JSON_BYTES, ApiError, capture, models, openapi, require_token, status, threshold, view

PUBLIC = {"status.health", "openapi.openapi"}  # what answers without the token even when reads need it
STATUS = {InvalidInput: 400, NotFound: 404, Conflict: 409, TooLarge: 413, ModelError: 422,
          Unavailable: 503, DiskFull: 507}


def http_status(exc):
    """The HTTP status of a domain error: its own for an ApiError, else its nearest kind's in STATUS."""
    if isinstance(exc, ApiError):
        return exc.status
    return next((STATUS[kind] for kind in type(exc).__mro__ if kind in STATUS), 500)


def error_body(exc):
    body = {"code": exc.code, "message": exc.message}
    if exc.field:
        body["field"] = exc.field
    return {"error": body}


def create_app(runtime):
    """`runtime` (edge.runtime.Runtime) holds the camera, loop, threshold, model manager and publisher."""
    app = Flask("edge")
    app.extensions["deeplens"] = runtime
    for module in (capture, models, openapi, status, threshold, view):
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

    @app.errorhandler(DeepLensError)
    def domain_error(exc):
        return jsonify(error_body(exc)), http_status(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        code = exc.name.lower().replace(" ", "_")
        return jsonify({"error": {"code": code, "message": exc.description}}), exc.code

    @app.errorhandler(Exception)
    def internal_error(exc):  # the exception's text stays in the log: it may name internal paths
        app.logger.exception("request failed")
        return jsonify({"error": {"code": "internal_error", "message": "the device failed on this request; "
                                  "its log says why"}}), 500

    return app
