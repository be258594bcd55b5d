"""GET /health, /status, /metrics and /mqtt: is it alive, what is it doing (for people and for
Prometheus), and how to reach its broker."""
from flask import Blueprint, Response, jsonify

from core.errors import NotFound

from ..metrics import CONTENT_TYPE
from . import require_token, runtime

blueprint = Blueprint("status", __name__)


@blueprint.get("/health")
def health():
    return jsonify({"status": "ok"})


@blueprint.get("/status")
def status():
    return jsonify(runtime().status())


@blueprint.get("/mqtt")
def mqtt():
    """How to reach the broker the device publishes to, with its credentials: for token holders only."""
    require_token()
    broker = runtime().broker_login()
    if broker is None:
        raise NotFound("this device runs without MQTT (broker 'none')", "no_broker")
    return jsonify(broker)


@blueprint.get("/metrics")
def metrics():
    """The service's own registry (edge/metrics.py) in Prometheus text format."""
    metrics = runtime().metrics
    return Response(metrics.exposition(), content_type=CONTENT_TYPE)
