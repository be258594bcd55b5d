"""GET /health, /status, /metrics and /mqtt: is it alive, what is it doing (for people and for
Prometheus), and how to reach its broker."""
from flask import Blueprint, Response, jsonify

from core.errors import NotFound

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
    doc = runtime().status()
    lines = []

    def metric(name, value, help_text, kind="gauge", labels=""):
        if value is None:
            return
        if not any(line.startswith(f"# HELP {name} ") for line in lines):
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        lines.append(f"{name}{labels} {float(value)}")

    metric("deeplens_up", 1, "The service answers.")
    metric("deeplens_uptime_seconds", doc["uptime_s"], "Seconds since the service started.")
    metric("deeplens_fps", doc["fps"], "Frames processed per second.")
    metric("deeplens_frames_processed_total", doc["frames_processed"], "Frames through the detector.", "counter")
    metric("deeplens_frames_dropped_total", doc["frames_dropped"], "Camera frames the loop did not reach.", "counter")
    metric("deeplens_events_published_total", doc["events_published"], "Detection events sent.", "counter")
    for stage, figures in doc["stage_ms"].items():
        for q, value in figures.items():
            metric("deeplens_stage_ms", value, "Per-stage time of the inference loop.",
                   labels=f'{{stage="{stage}",quantile="0.{q[1:]}"}}')
    metric("deeplens_mqtt_connected", int(doc["mqtt"].get("connected", False)), "Broker connection is up.")
    metric("deeplens_mqtt_queued", doc["mqtt"].get("queued"), "Events waiting for the broker.")
    metric("deeplens_mqtt_dropped_total", doc["mqtt"].get("dropped"), "Events dropped with a full queue.", "counter")
    metric("deeplens_camera_connected", int(bool(doc["camera"].get("connected"))), "Camera delivers frames.")
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
