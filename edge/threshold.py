"""The detection threshold: a default plus optional per-class values, changed live and kept.

Set through PUT /threshold or the MQTT `threshold/set` command; applied from the next frame;
written atomically to the state folder so it survives a restart (and a power loss mid-write).
"""
import json
import logging
import threading

from core.fileio import remove_leftovers, store_json

from core.errors import InvalidInput

log = logging.getLogger(__name__)
FILENAME = "threshold.json"
MAX_CLASSES = 1000  # per-class values without a model to check the names against


def _score(value, field):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InvalidInput(f"{field} must be a number between 0 and 1, got {value!r}", "invalid_threshold", field)
    return float(value)


def parse(body, current_default, classes=None):
    """Validate a threshold document; returns (default, per_class). Raises InvalidInput naming the
    field. With `classes` (the active model's names) per_class may name only those."""
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object like {"default": 0.4, "per_class": {"name": 0.6}}',
                           "invalid_threshold")
    unknown = set(body) - {"default", "per_class"}
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidInput(f"unknown field '{field}'; use 'default' and 'per_class'", "unknown_field", field)
    default = _score(body["default"], "default") if "default" in body else current_default
    per_class = body.get("per_class", {})
    if not isinstance(per_class, dict):
        raise InvalidInput("per_class must map class names to thresholds", "invalid_threshold", "per_class")
    if classes is not None:
        strangers = sorted(set(per_class) - set(classes))
        if strangers:
            more = f" (and {len(strangers) - 1} more)" if len(strangers) > 1 else ""
            raise InvalidInput(f"the model has no class '{strangers[0][:100]}'{more}; its classes: "
                               f"{', '.join(classes)}", "unknown_class", f"per_class.{strangers[0][:100]}")
    elif len(per_class) > MAX_CLASSES:
        raise InvalidInput(f"per_class names {len(per_class)} classes; at most {MAX_CLASSES}", "invalid_threshold",
                           "per_class")
    return default, {str(name): _score(v, f"per_class.{name}") for name, v in per_class.items()}


class Threshold:
    """Thread-safe: the inference loop reads it on every frame while the API changes it.

    `classes()` gives the active model's class names (None without a model): per-class values
    may name only those. A change is stored before it is applied: one that cannot be written
    changes nothing.
    """

    def __init__(self, state_dir, default, classes=lambda: None):
        self.path = state_dir / FILENAME
        self._classes = classes
        self._lock = threading.Lock()
        self.default, self.per_class = float(default), {}
        remove_leftovers(self.path)
        self._load()

    def _load(self):
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            self.default, self.per_class = parse(saved, self.default)
        except FileNotFoundError:
            return
        except (ValueError, InvalidInput) as exc:
            log.warning("ignoring saved threshold", extra={"fields": {"path": self.path, "error": exc}})

    def to_json(self):
        with self._lock:
            return {"default": self.default, "per_class": dict(self.per_class)}

    def update(self, body):
        """Store, then apply, a PUT/MQTT document; a field left out keeps its current value."""
        with self._lock:
            default, per_class = parse(body, self.default, self._classes())
            doc = {"default": default, "per_class": per_class if "per_class" in body else dict(self.per_class)}
            store_json(self.path, doc, "the threshold could not be stored, so it was not changed "
                                       "(the device's log says why)")
            self.default, self.per_class = doc["default"], dict(doc["per_class"])
        log.info("threshold changed", extra={"fields": doc})
        return doc

    def floor(self):
        """The lowest threshold of any class: detections below it can be dropped unlooked at."""
        return min([self.default, *self.per_class.values()])

    def passes(self, label, score):
        return score >= self.per_class.get(label, self.default)
