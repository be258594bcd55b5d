"""The Flask app factory: one blueprint per resource, one JSON error shape for all of them."""
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from .api import capture, models, status, threshold, view
from .errors import ApiError


def create_app(runtime):
    """`runtime` (edge.runtime.Runtime) holds the camera, loop, threshold and publisher."""
    app = Flask("edge")
    app.extensions["deeplens"] = runtime
    for module in (capture, models, status, threshold, view):
        app.register_blueprint(module.blueprint)

    @app.errorhandler(ApiError)
    def api_error(exc):
        return jsonify(exc.to_json()), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc):
        code = exc.name.lower().replace(" ", "_")
        return jsonify({"error": {"code": code, "message": exc.description}}), exc.code

    @app.errorhandler(Exception)
    def internal_error(exc):
        app.logger.exception("request failed")
        return jsonify({"error": {"code": "internal_error", "message": str(exc)}}), 500

    return app
