"""Where domain errors become HTTP, for both web apps (the device's API and the studio).

Domain code raises core.errors kinds and never names a status; STATUS maps each kind to one (the
most specific class wins), so every route answers the same error for the same fault:
`{"error": {"code", "message", "field"?}}` (docs/rest-api.md). An error that carries its own
HTTP `status` (an API-only refusal, or a device's answer relayed by the studio) keeps it.
"""
from flask import jsonify
from werkzeug.exceptions import HTTPException

from .errors import (Conflict, DeepLensError, DeviceError, DiskFull, InvalidInput, ModelError, NotFound, TooLarge,
                     Unavailable)

STATUS = {InvalidInput: 400, NotFound: 404, Conflict: 409, TooLarge: 413, ModelError: 422,
          Unavailable: 503, DiskFull: 507, DeviceError: 502}


def http_status(exc):
    """The HTTP status of a domain error: its own `status` if it has one, else its nearest kind's in STATUS."""
    return getattr(exc, "status", None) or next((STATUS[kind] for kind in type(exc).__mro__ if kind in STATUS), 500)


def error_body(exc):
    """`{"error": {...}}`, plus what the error carries for the client in `extra` (the current
    state after a refused change, say)."""
    body = {"code": exc.code, "message": exc.message}
    if exc.field:
        body["field"] = exc.field
    return {"error": body, **(getattr(exc, "extra", None) or {})}


def install(app, internal_message):
    """The app's error handlers: domain errors by STATUS, Werkzeug's own (404, 405) as JSON, and
    anything else as a 500 whose text stays in the log (it may name internal paths)."""

    @app.errorhandler(DeepLensError)
    def domain_error(exc):
        return jsonify(error_body(exc)), http_status(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc):
        code = exc.name.lower().replace(" ", "_")
        return jsonify({"error": {"code": code, "message": exc.description}}), exc.code

    @app.errorhandler(Exception)
    def internal_error(exc):
        app.logger.exception("request failed")
        return jsonify({"error": {"code": "internal_error", "message": internal_message}}), 500
