"""The MQTT contract of a device: its topics and the documents published on them
(docs/mqtt.md). The edge service publishes on these topics, `deeplens-ctl watch` and
`swap-model` subscribe to them: both read the names from here.
"""
import dataclasses
import json
import time
from importlib import resources

PREFIX = "deeplens"
OFFLINE = {"state": "offline"}


@dataclasses.dataclass(frozen=True)
class Topics:
    """The topics of one device, all under `deeplens/<device_id>/`."""
    prefix: str
    detections: str
    status: str
    counts: str  # the stabilised counts document, retained (edge/counting.py)

    def command(self, name):
        return self.prefix + name.strip("/")


def topics(device_id):
    prefix = f"{PREFIX}/{device_id}/"
    return Topics(prefix, prefix + "detections", prefix + "status", prefix + "counts")


def legacy_topic(thing_name):
    """Where DeepLens Lambdas publish `{label: prob}`, as the AWS console shows it."""
    return f"$aws/things/{thing_name}/infer"


def detection_event(seq, model_version, inference_ms, detections, ts=None, total=None):
    """The detections event as `event_schema()` describes it.

    `detections` are dicts with class_id, label, score and a normalised box [xmin, ymin, xmax, ymax];
    `total`, when the classes have values, what this frame's detections are worth together.
    """
    event = {"ts": time.time() if ts is None else ts, "seq": int(seq), "model_version": model_version,
             "inference_ms": round(float(inference_ms), 3),
             "detections": [{"class_id": int(d["class_id"]), "label": str(d["label"]), "score": float(d["score"]),
                             "box": [float(v) for v in d["box"]]} for d in detections]}
    if total is not None:
        event["total"] = total
    return event


def event_schema():
    """The JSON Schema of a detections event (core/schemas/detection-event.schema.json)."""
    return json.loads(resources.files("core").joinpath("schemas/detection-event.schema.json").read_text())
