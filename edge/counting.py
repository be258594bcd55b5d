"""Counting: how many of each class lie in view (and in each zone) now, and what they are worth.

The inference loop's kept detections are counted per frame, per class and per zone x class, then
stabilised: each count is the **median of its last `count_window` frames** (5 by default, odd so
that the median is one of the frames' values and a true majority decides). Why a median, not a
mean, hysteresis or a tracker:

- one missed (or one phantom) frame out of five changes no median: no flicker to publish;
- a real change shows after window // 2 + 1 frames (3 of 5: about 0.1 s at 24 fps), and a
  drop to zero is published like any other change;
- it is exact integers (a mean of 0 and 1 is 0.4 notes), needs no tuning beyond the window, keeps
  no state beyond N small integers per key and costs a sort of 5 numbers per key per frame.

`total` and `objects` are derived from the stabilised class counts (count x value, count), not
smoothed on their own, so a document never contradicts itself. Zones are named polygons in
normalised frame coordinates; a detection belongs to each zone that holds its box's centre.

The stabilised document is published (retained) whenever a stabilised count changes, and when
counting restarts: at a new model (its classes, all 0) and at a change of zones. docs/mqtt.md
describes the document; GET /counts and GET/PUT /zones serve it (edge/api/counts.py).
"""
import collections
import json
import logging
import math
import re
import threading
import time
from fractions import Fraction

from core.errors import InvalidInput
from core.fileio import remove_leftovers, store_json

log = logging.getLogger(__name__)

FILENAME = "zones.json"
MAX_ZONES = 16
MAX_POINTS = 32  # per polygon: enough for any table outline, and validation stays O(n^2) small
ZONE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}\Z")  # also safe in MQTT topics and HA entity ids
MAX_WINDOW = 99
MAX_VALUES = 1000


# -- class values ------------------------------------------------------------------------------
def _number(value, field):
    """A finite number, from JSON/YAML or from the text of the `A=1,B=2` form."""
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".en") else int(value)
        except ValueError:
            raise InvalidInput(f"{field} must be a number, got {value!r}", "invalid_value", field) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{field} must be a finite number, got {value!r}", "invalid_value", field)
    return value


def parse_values(raw, field="class_values"):
    """{class name: value} from a mapping: YAML or JSON numbers, or number text (the setting's
    `'2000 RUB=2000,1000 RUB=1000'` form, which edge/config.py splits)."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"{field} must map class names to numbers, e.g. note_2000=2000,note_1000=1000",
                           "invalid_value", field)
    if len(raw) > MAX_VALUES:
        raise InvalidInput(f"{field} names {len(raw)} classes; at most {MAX_VALUES}", "invalid_value", field)
    values = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{field}: class names must be non-empty text, got {name!r} (quote it in YAML)",
                               "invalid_value", field)
        values[name] = _number(value, f"{field}.{name[:100]}")
    return values


def values_problem(raw):
    """The config check of `class_values`: None, or why it is not valid (edge/config.py)."""
    try:
        parse_values(raw)
    except InvalidInput as exc:
        return f"is not valid ({exc.message})"
    return None


def _sum(numbers):
    total = sum(numbers)
    return round(total, 6) if isinstance(total, float) else total


# -- zones ---------------------------------------------------------------------------------------
class Zone:
    """A named simple polygon in normalised frame coordinates (x right, y down, 0..1).

    `contains` is the even-odd rule with half-open edges: an edge counts when the point's y lies
    in [its lower y, its upper y) and the point is strictly left of it. So a point on a shared edge
    belongs to exactly one of the two zones, and the same point always gets the same answer.
    """
    __slots__ = ("name", "points", "_edges", "_box")

    def __init__(self, name, points):
        self.name, self.points = name, [(float(x), float(y)) for x, y in points]
        edges = []
        for (ax, ay), (bx, by) in zip(self.points, self.points[1:] + self.points[:1]):
            if ay == by:
                continue  # horizontal: never crossed by a horizontal ray under the half-open rule
            if ay > by:  # one orientation for every edge, so two zones sharing one compute it alike
                ax, ay, bx, by = bx, by, ax, ay
            edges.append((ay, by, ax, (bx - ax) / (by - ay)))
        self._edges = tuple(edges)
        xs, ys = [p[0] for p in self.points], [p[1] for p in self.points]
        self._box = (min(xs), min(ys), max(xs), max(ys))

    def contains(self, x, y):
        x0, y0, x1, y1 = self._box
        if x < x0 or x > x1 or y < y0 or y > y1:
            return False
        inside = False
        for low, high, ax, slope in self._edges:
            if low <= y < high and x < ax + (y - low) * slope:
                inside = not inside
        return inside

    def to_json(self):
        return {"name": self.name, "points": [list(p) for p in self.points]}


def _orientation(a, b, c):
    value = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    return (value > 0) - (value < 0)


def _on_segment(a, b, p):
    """p, collinear with a-b, lies within the segment's bounds."""
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def _segments_meet(a, b, c, d):
    """Whether segments a-b and c-d share any point (touching and collinear overlap included)."""
    o1, o2, o3, o4 = _orientation(a, b, c), _orientation(a, b, d), _orientation(c, d, a), _orientation(c, d, b)
    if o1 != o2 and o3 != o4 and 0 not in (o1, o2, o3, o4):
        return True
    return ((o1 == 0 and _on_segment(a, b, c)) or (o2 == 0 and _on_segment(a, b, d))
            or (o3 == 0 and _on_segment(c, d, a)) or (o4 == 0 and _on_segment(c, d, b)))


def _self_intersection(points):
    """None for a simple polygon, else (i, j): two edges (edge i runs from point i) that cross,
    touch or overlap. Exact arithmetic (Fraction), so near-touching edges get a firm answer."""
    exact = [(Fraction(x), Fraction(y)) for x, y in points]
    n = len(exact)
    if len(set(exact)) != n:
        first = next(i for i, p in enumerate(exact) if exact.index(p) != i)
        return exact.index(exact[first]), first
    edges = [(exact[i], exact[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        a, b = edges[i]
        # Adjacent edges share a vertex: they may only meet there, so they must not fold back on each other.
        c = edges[(i + 1) % n][1]
        if _orientation(a, b, c) == 0 and (a[0] - b[0]) * (c[0] - b[0]) + (a[1] - b[1]) * (c[1] - b[1]) > 0:
            return i, (i + 1) % n
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing vertex
            if _segments_meet(a, b, *edges[j]):
                return i, j
    area = sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(exact, exact[1:] + exact[:1]))
    return None if area != 0 else (0, n - 1)


def _bad(message, field, code="invalid_zones"):
    return InvalidInput(message, code, field)


def parse_zone(raw, index):
    """One `{"name", "points": [[x, y], ...]}`; InvalidInput naming the field at fault."""
    where = f"zones[{index}]"
    if not isinstance(raw, dict):
        raise _bad(f'{where} must be an object like {{"name": "tray", "points": [[0.1, 0.1], [0.9, 0.1], '
                   '[0.5, 0.9]]}', where)
    unknown = sorted(set(raw) - {"name", "points"})
    if unknown:
        raise _bad(f"{where}: unknown field '{str(unknown[0])[:100]}'; use 'name' and 'points'",
                   f"{where}.{str(unknown[0])[:100]}", "unknown_field")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"{where}.name must be a non-empty name", f"{where}.name")
    if not ZONE_NAME.match(name):
        raise _bad(f"{where}.name {name[:100]!r} must be 1 to 40 letters, digits, '_' or '-', starting with a "
                   "letter or digit", f"{where}.name")
    points = raw.get("points")
    if not isinstance(points, list):
        raise _bad(f"{where}.points must be a list of [x, y] points", f"{where}.points")
    if len(points) < 3:
        raise _bad(f"{where}.points has {len(points)} points; a polygon needs at least 3", f"{where}.points")
    if len(points) > MAX_POINTS:
        raise _bad(f"{where}.points has {len(points)} points; at most {MAX_POINTS}", f"{where}.points",
                   "too_many_points")
    parsed = []
    for k, point in enumerate(points):
        field = f"{where}.points[{k}]"
        if not (isinstance(point, list) and len(point) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)):
            raise _bad(f"{field} must be [x, y], two numbers", field)
        if not all(0.0 <= v <= 1.0 for v in point):  # NaN fails this too
            raise _bad(f"{field} {point} is outside the frame: x and y are normalised, 0 to 1", field)
        parsed.append((float(point[0]), float(point[1])))
    crossing = _self_intersection(parsed)
    if crossing:
        i, j = crossing
        raise _bad(f"{where}.points: the polygon crosses or touches itself (edges from point {i} and from "
                   f"point {j}) or encloses no area; list the corners in order around it",
                   f"{where}.points", "self_intersecting_zone")
    return Zone(name, parsed)


def parse_zones(raw):
    """A list of zones (PUT /zones' `zones`, the `zones` setting); InvalidInput naming the field."""
    if not isinstance(raw, list):
        raise _bad('zones must be a list like [{"name": "tray", "points": [[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]}]',
                   "zones")
    if len(raw) > MAX_ZONES:
        raise _bad(f"{len(raw)} zones; at most {MAX_ZONES}", "zones", "too_many_zones")
    zones, seen = [], set()
    for index, item in enumerate(raw):
        zone = parse_zone(item, index)
        if zone.name in seen:
            raise _bad(f"zones[{index}].name {zone.name!r} is used twice; zone names must differ",
                       f"zones[{index}].name", "duplicate_zone")
        seen.add(zone.name)
        zones.append(zone)
    return zones


def zones_problem(raw):
    """The config check of `zones`: None, or why not (edge/config.py)."""
    try:
        parse_zones(raw)
    except InvalidInput as exc:
        return f"is not valid ({exc.message})"
    return None


class ZoneStore:
    """The zones in force and `zones_only`: the settings' until PUT /zones sets them, then those,
    kept in `<state>/zones.json` (as the threshold is). A change is stored before it is applied:
    one that cannot be written changes nothing."""

    def __init__(self, state_dir, zones=(), zones_only=False):
        self.path = state_dir / FILENAME
        self.zones, self.zones_only = parse_zones(list(zones)), bool(zones_only)
        self.source = "settings"
        remove_leftovers(self.path)
        self._load()

    def _load(self):
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            self.zones, self.zones_only = self.parse(saved)
            self.source = "saved"
        except FileNotFoundError:
            return
        except (ValueError, InvalidInput) as exc:
            log.warning("ignoring saved zones", extra={"fields": {"path": self.path, "error": exc}})

    def to_json(self):
        return {"zones": [zone.to_json() for zone in self.zones], "zones_only": self.zones_only}

    def parse(self, body):
        """(zones, zones_only) of a PUT body; a field left out keeps its value."""
        if not isinstance(body, dict):
            raise _bad('the body must be a JSON object like {"zones": [...], "zones_only": false}', None)
        unknown = sorted(set(body) - {"zones", "zones_only"})
        if unknown:
            field = str(unknown[0])[:100]
            raise InvalidInput(f"unknown field '{field}'; use 'zones' and 'zones_only'", "unknown_field", field)
        zones = parse_zones(body["zones"]) if "zones" in body else self.zones
        zones_only = body.get("zones_only", self.zones_only)
        if not isinstance(zones_only, bool):
            raise _bad(f"zones_only must be true or false, got {zones_only!r}", "zones_only")
        return zones, zones_only

    def store(self, zones, zones_only):
        """Write the zones to the state folder; raise (and change nothing) when that fails."""
        doc = {"zones": [zone.to_json() for zone in zones], "zones_only": zones_only}
        store_json(self.path, doc, "the zones could not be stored, so they were not changed "
                                   "(the device's log says why)")
        self.zones, self.zones_only, self.source = list(zones), zones_only, "saved"
        return doc


# -- the counter ---------------------------------------------------------------------------------
class Counter:
    """Counts each frame's kept detections, stabilises them, publishes the changes.

    An inference-loop observer (edge/inference.py): `observe` runs in the loop's thread and costs
    tens of microseconds at 10 detections and a few zones (bench/counting_bench.py).

    - `publish(doc)`: called (under the counter's lock, so documents leave in order) with each
      new stabilised document; the runtime passes Publisher.publish_counts.
    - `on_change`: callables `cb(frame, kept)`, called in the loop's thread after a frame whose
      stabilised counts changed (not at restarts); each must be quick.
    - `on_layout`: callables `cb(classes, zone_names, has_total)`, called (under the lock) when
      the classes, the zone names or whether a total is known change: Home Assistant discovery.
    - `snapshot()`: the latest stabilised document; `raw()`: the last frame's unstabilised counts.
    """

    def __init__(self, window=5, class_values=None, zones=None, publish=lambda doc: None):
        self.window = int(window)
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"count_window must be odd and at least 1, got {window}")
        self.setting_values = parse_values(class_values or {})
        self.zones = zones
        self.publish = publish
        self.on_change, self.on_layout = [], []
        self._lock = threading.Lock()
        self._model = None  # (version, classes) counting started for
        self._classes, self._values, self._problems = [], {}, []
        self._windows = {}  # key -> deque of the last `window` raw counts
        self._stable = {}  # key -> stabilised count
        self._layout = None
        self._doc = self._document(None, None)
        self._raw = None
        self.changes = 0  # documents published

    # -- what the API and the runtime read ----------------------------------------------------
    def snapshot(self):
        """The latest stabilised counts document (what was last published)."""
        with self._lock:
            return self._doc

    def raw(self):
        """The last frame's counts before stabilising (None before the first frame)."""
        with self._lock:
            return self._raw

    def status(self):
        """The /status `counts` section: small, and what an operator needs to trust the numbers."""
        with self._lock:
            doc = self._doc
            return {"window": self.window, "objects": doc["objects"], "total": doc["total"],
                    "zones": [zone.name for zone in self._zone_list()], "zones_only": self._zones_only(),
                    "values": dict(self._values),
                    "unvalued": [c for c in self._classes if c not in self._values] if self._values else [],
                    "problems": list(self._problems), "changes": self.changes}

    def zones_json(self):
        with self._lock:
            return self.zones.to_json() if self.zones else {"zones": [], "zones_only": False}

    # -- changes ------------------------------------------------------------------------------
    def update_zones(self, body):
        """Store, then apply, a PUT /zones body; returns the zones now in force. Zone counts start
        again from 0 (and the class counts too when `zones_only` decides what is counted)."""
        with self._lock:
            zones, zones_only = self.zones.parse(body)
            counted_before = self._zones_only() and bool(self._zone_list())
            doc = self.zones.store(zones, zones_only)
            if counted_before or (zones_only and zones):
                self._windows = {}
            else:
                self._windows = {k: w for k, w in self._windows.items() if k[0] == "c"}
            if self._model is not None:
                self._refill()
                self._emit(None)
            else:
                self._doc = self._document(None, None)
            self._announce_layout()
        log.info("zones changed", extra={"fields": {"zones": [z["name"] for z in doc["zones"]],
                                                   "zones_only": zones_only}})
        return doc

    def observe(self, frame, detector, detections, kept):
        with self._lock:
            model = (detector.version, tuple(detector.classes))
            if model != self._model:
                self._restart(detector, model, frame)
            raw_counts, raw_zones = self._count(kept)
            self._raw = {"seq": frame.seq, "counts": raw_counts, "objects": sum(raw_counts.values()),
                         "total": self._total(raw_counts), "zones": raw_zones}
            changed = self._stabilise(raw_counts, raw_zones)
            if changed:
                self._emit(frame)
        if changed:
            for callback in self.on_change:
                try:
                    callback(frame, kept)
                except Exception:  # a subscriber's failure must not stop counting
                    log.exception("a counts subscriber failed")

    # -- inside (lock held) -------------------------------------------------------------------
    def _zone_list(self):
        return self.zones.zones if self.zones else []

    def _zones_only(self):
        return bool(self.zones and self.zones.zones_only)

    def _restart(self, detector, model, frame):
        """A new model: its classes, all at 0, and the values that apply to them."""
        self._model, self._classes = model, list(detector.classes)
        package_values = getattr(getattr(detector, "package", None), "values", None) or {}
        values = {c: v for c, v in package_values.items() if c in self._classes}
        strangers = sorted(set(self.setting_values) - set(self._classes))
        values.update({c: v for c, v in self.setting_values.items() if c in self._classes})
        self._values = {c: values[c] for c in self._classes if c in values}
        self._problems = []
        if strangers:
            more = f" (and {len(strangers) - 1} more)" if len(strangers) > 1 else ""
            self._problems.append(f"class_values names '{strangers[0][:100]}'{more}, which the model "
                                  f"{detector.name or '?'} {detector.version} does not have: ignored; its classes: "
                                  f"{', '.join(self._classes)}")
            log.warning("class_values names classes the model lacks; ignored",
                        extra={"fields": {"unknown": strangers, "classes": self._classes}})
        self._windows = {}
        self._refill()
        self._emit(frame)
        self._announce_layout()

    def _refill(self):
        """Give every key of the current classes and zones a window (new ones full of zeros) and
        recompute the stabilised counts."""
        keys = [("c", c) for c in self._classes]
        keys += [("z", zone.name, c) for zone in self._zone_list() for c in self._classes]
        zeros = [0] * self.window
        self._windows = {k: self._windows[k] if k in self._windows else collections.deque(zeros, maxlen=self.window)
                         for k in keys}
        self._stable = {k: sorted(w)[self.window // 2] for k, w in self._windows.items()}

    def _count(self, kept):
        classes, zones = self._classes, self._zone_list()
        counts = dict.fromkeys(classes, 0)
        per_zone = {zone.name: dict.fromkeys(classes, 0) for zone in zones}
        only = zones and self._zones_only()
        for det in kept:
            label = det["label"]
            if label not in counts:
                continue
            if zones:
                x0, y0, x1, y1 = det["box"]
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                inside = False
                for zone in zones:
                    if zone.contains(cx, cy):
                        per_zone[zone.name][label] += 1
                        inside = True
                if only and not inside:
                    continue
            counts[label] += 1
        return counts, per_zone

    def _stabilise(self, counts, per_zone):
        changed, middle, stable = False, self.window // 2, self._stable
        for key, window in self._windows.items():
            window.append(counts[key[1]] if key[0] == "c" else per_zone[key[1]][key[2]])
            value = sorted(window)[middle]
            if stable[key] != value:
                stable[key], changed = value, True
        return changed

    def frame_total(self, kept):
        """What one frame's kept detections are worth together (its detection event's `total`);
        None when no class has a value. Called after observe() saw that frame."""
        values = self._values
        if not values:
            return None
        return _sum(values.get(d["label"], 0) for d in kept)

    def _total(self, counts):
        if not self._values:
            return None
        return _sum(n * self._values[c] for c, n in counts.items() if c in self._values)

    def _document(self, frame, version):
        classes, stable = self._classes, self._stable
        counts = {c: stable[("c", c)] for c in classes}
        zones = {zone.name: {c: stable[("z", zone.name, c)] for c in classes} for zone in self._zone_list()} \
            if version is not None else {zone.name: {} for zone in self._zone_list()}
        ts = frame.ts if frame is not None else (time.time() if version is not None else None)
        return {"ts": ts, "seq": frame.seq if frame is not None else None,
                "model_version": version, "counts": counts, "objects": sum(counts.values()),
                "total": self._total(counts),
                "zones": zones, "zone_objects": {name: sum(z.values()) for name, z in zones.items()},
                "zone_totals": {name: self._total(z) for name, z in zones.items()}}

    def _emit(self, frame):
        self._doc = self._document(frame, self._model[0])
        self.changes += 1
        try:
            self.publish(self._doc)
        except Exception:  # the publisher never raises by design; if it did, counting goes on
            log.exception("publishing counts failed")

    def _announce_layout(self):
        layout = (tuple(self._classes), tuple(zone.name for zone in self._zone_list()), bool(self._values))
        if layout == self._layout or self._model is None:
            return
        self._layout = layout
        for callback in self.on_layout:
            try:
                callback(list(layout[0]), list(layout[1]), layout[2])
            except Exception:
                log.exception("a counts layout subscriber failed")
