"""Home Assistant MQTT discovery: the device's counts appear in Home Assistant as sensors, with
nobody writing YAML (docs/mqtt.md, "Home Assistant").

For each class of the active model, each zone x class and, with class values, the total and each
zone's total, a retained config message goes to `<prefix>/sensor/deeplens_<device>/<object_id>/config`. Every
sensor reads the retained counts topic with a template, and is available while the status topic
says online: the status document carries `"state": "online"`, the last will `"state": "offline"`.

Stale sensors are removed with an empty retained config when a class or zone goes. What was
published is remembered in `<state>/discovery.json`, not only in memory: a restart with another
model must remove the sensors of the previous one, whose classes nobody else remembers.
"""
import json
import logging
import re
import threading
import unicodedata
import zlib
from importlib import metadata

from core import topics as topics_contract
from core.fileio import atomic_write_text

log = logging.getLogger(__name__)

FILENAME = "discovery.json"
OFF = ("", "none")
MODEL = "deeplens-kit"
KEEP_REMOVED = 256  # removals repeated at each start, in case one never reached the broker
_LEVEL = re.compile(r"[^\s+#\x00-\x1f\x7f]+")


def prefix_problem(prefix):
    """Why `prefix` cannot be a discovery prefix (None when it can): config.py's check."""
    if prefix in OFF:
        return None
    if prefix.startswith("$"):
        return "must not start with '$' (topics the broker keeps for itself)"
    if not all(_LEVEL.fullmatch(level) for level in prefix.split("/")):
        return ("must be an MQTT topic prefix such as 'homeassistant': no wildcards (+, #), spaces or empty "
                "levels; 'none' turns discovery off")
    return None


def slug(text):
    """What Home Assistant accepts in an entity id and a discovery topic: a-z, 0-9 and single
    underscores. A name with no such letter at all (say, Cyrillic only) gets a stable hash."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    result = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    return result or f"x{zlib.crc32(str(text).encode()):08x}"


def _slugs(names):
    """{name: slug}, unique: a second name with the same slug gets _2, a third _3, ..."""
    taken, result = set(), {}
    for name in names:
        base = candidate = slug(name)
        n = 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        result[name] = candidate
    return result


def _literal(text):
    """A Jinja string literal (JSON's escapes are Python's, which Jinja's strings take)."""
    return json.dumps(str(text))


def _version():
    try:
        return metadata.version(MODEL)
    except metadata.PackageNotFoundError:
        return "unknown"


class Discovery:
    """Publishes and removes the Home Assistant configs of one device's count sensors.

    `sync()` is called by the counting code whenever the active model's classes, the zone names
    or whether there is a total change (and once at start); it is quick and thread-safe.
    """

    def __init__(self, publisher, config):
        problem = prefix_problem(config.discovery_prefix)
        if problem:  # config.py refuses it first; this guards other ways of building a Config
            raise ValueError(f"discovery_prefix {problem}, got {config.discovery_prefix!r}")
        self.publisher = publisher
        self.prefix = config.discovery_prefix
        self.enabled = self.prefix not in OFF
        # Without MQTT nothing can be published nor removed: the file is left for a run with a broker.
        self.active = hasattr(publisher, "publish_retained") and getattr(publisher, "topics", None) is not None
        self.device = config.device
        self.node = slug(config.device)
        self.node_id = f"deeplens_{self.node}"
        self.unit = config.discovery_unit
        device_topics = topics_contract.topics(config.device)
        self.counts_topic = device_topics.counts
        self.status_topic = device_topics.status
        self.path = config.state_path / FILENAME
        self._lock = threading.Lock()
        self._last = None  # the arguments of the last sync: the same again publishes nothing
        self._published = self._removed = None  # topics; read from the file at the first sync

    # -- what Home Assistant gets ---------------------------------------------------------------
    def configs(self, classes, zone_names, has_total):
        """{config topic: config document} for these classes, zones and total."""
        if not self.enabled:
            return {}
        classes, zone_names = list(classes or ()), list(zone_names or ())
        labels, zones = _slugs(classes), _slugs(zone_names)
        result = {}
        for label in classes:
            result.update(self._sensor(
                f"class-{labels[label]}", labels[label], str(label),
                f"{{{{ (value_json.counts or {{}}).get({_literal(label)}, 0) }}}}", self.unit))
        for zone in zone_names:
            for label in classes:
                result.update(self._sensor(
                    f"zone-{zones[zone]}-{labels[label]}", f"{zones[zone]}_{labels[label]}", f"{zone} {label}",
                    f"{{{{ ((value_json.zones or {{}}).get({_literal(zone)}) or {{}}).get({_literal(label)}, 0) }}}}",
                    self.unit))
        if has_total:  # the values carry no currency: no unit
            result.update(self._sensor("total", "total", "Total", "{{ value_json.total | default(0, true) }}", None))
            for zone in zone_names:
                result.update(self._sensor(
                    f"zone-{zones[zone]}-total", f"{zones[zone]}_total", f"{zone} total",
                    f"{{{{ (value_json.zone_totals or {{}}).get({_literal(zone)}) | default(0, true) }}}}", None))
        return result

    def _sensor(self, object_id, entity, name, template, unit):
        doc = {
            "name": name,
            "unique_id": f"{self.node_id}_{object_id.replace('-', '_')}",
            "default_entity_id": f"sensor.{self.node}_{entity}",  # Home Assistant 2025.10 on
            "object_id": f"{self.node}_{entity}",  # before 2025.10
            "state_topic": self.counts_topic,
            "value_template": template,
            "state_class": "measurement",
            "suggested_display_precision": 0 if unit else None,
            "unit_of_measurement": unit,
            "availability_topic": self.status_topic,
            "availability_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": 1,
            "device": {"identifiers": [self.node_id], "name": self.device, "model": MODEL, "manufacturer": MODEL,
                       "sw_version": _version()},
            "origin": {"name": MODEL, "sw_version": _version()},
        }
        return {f"{self.prefix}/sensor/{self.node_id}/{object_id}/config":
                {key: value for key, value in doc.items() if value is not None}}

    # -- publishing -----------------------------------------------------------------------------
    def sync(self, classes, zone_names, has_total):
        """Publish the configs of these sensors (retained) and remove those no longer present."""
        if not self.active:
            return
        key = (tuple(classes or ()), tuple(zone_names or ()), bool(has_total))
        with self._lock:
            if key == self._last:
                return
            wanted = self.configs(*key)
            first = self._published is None
            if first:
                self._published, self._removed = self._load()
            # At the first sync also the removals of earlier runs: one may never have reached the broker.
            stale = (self._published | (set(self._removed) if first else set())) - set(wanted)
            for topic in sorted(stale):
                self.publisher.publish_retained(topic, None)
            for topic, doc in wanted.items():
                self.publisher.publish_retained(topic, doc)
            removed = [t for t in self._removed if t not in stale and t not in wanted] + sorted(stale)
            self._published, self._removed, self._last = set(wanted), removed[-KEEP_REMOVED:], key
            self._save()
        if stale or wanted:
            log.info("Home Assistant discovery", extra={"fields": {"sensors": len(wanted), "removed": len(stale)}})

    def _load(self):
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return set(doc.get("published", [])), list(doc.get("removed", []))
        except FileNotFoundError:
            return set(), []
        except (OSError, ValueError, AttributeError, TypeError) as exc:  # unreadable: start afresh, say so
            log.warning("cannot read the discovery state; stale sensors of earlier runs may stay in Home Assistant",
                        extra={"fields": {"path": str(self.path), "error": exc}})
            return set(), []

    def _save(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps({"published": sorted(self._published),
                                                     "removed": self._removed}, indent=1) + "\n")
        except OSError as exc:  # the sensors are published all the same; only a later cleanup may miss some
            log.warning("cannot write the discovery state", extra={"fields": {"path": str(self.path), "error": exc}})
