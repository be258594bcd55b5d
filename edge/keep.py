"""Frames worth labelling: kept on the device, in a bounded store, until a person pulls them.

A model learns most from the frames it is unsure about and from the moments its count changes,
and those are exactly the frames nobody thinks of capturing by hand. So the device keeps:

- `uncertain`: the frame's best score lies between `keep_floor` and its class's threshold;
- `count_changed`: the stabilised count just changed (edge/counting.py calls `count_changed`);
- `operator`: someone marked the frame (POST /keep).

Each frame is stored whole as `keep_NNNNNN.jpg` beside `keep_NNNNNN.json`, a sidecar in the
format of `deeplens-ctl pull` (docs/manifest.md) whose `truth` holds the model's detections as
suggested labels, so `deeplens-ctl pull --worth-labelling` brings them home pre-labelled.

The store is bounded (`keep_mb`): to make room the oldest frames go, counted as `dropped`. Both
files are written atomically, the sidecar last (it is the commit mark, as in pull): after a crash
the store holds whole frames only, and start-up removes what a crash left half-done.

The inference loop only offers frames (a reference, no copy) in its own thread; encoding, hashing
and writing happen in the keeper's worker thread. A stream of uncertain frames is held back by
`keep_interval_s` per reason, near-duplicates of the last kept frame are skipped (the pull's dhash,
`keep_dedup_bits`), and a full queue drops the offer; each is counted in /status.
"""
import collections
import datetime
import json
import logging
import queue
import re
import threading
import time
from pathlib import Path

from core.dhash import dhash, hamming
from core.errors import NotFound, StorageError, TooLarge, storage_error
from core.fileio import atomic_write_bytes, atomic_write_text
from core.quality import check_frame

from .capture import encode

log = logging.getLogger(__name__)
MB = 1 << 20
REASONS = ("uncertain", "count_changed", "operator")
NAME = re.compile(r"keep_(\d{6,})")
QUEUE_SIZE = 4  # frames waiting for the worker; a frame is referenced, not copied
JPEG_QUALITY = 95  # as /capture: these frames are for training


def folder_for(config):
    """Where the store lives: `keep_dir`, or `keep/` in the state folder."""
    return Path(config.keep_dir).expanduser() if config.keep_dir else config.state_path / "keep"


def _removed(path):
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class KeepStore:
    """The files: whole frames with their sidecars, oldest dropped past `limit` bytes. Thread-safe:
    the keeper's worker adds, requests list, read, add (POST /keep) and delete."""

    def __init__(self, folder, limit):
        self.folder, self.limit = Path(folder), int(limit)
        self.dropped = 0
        self.bytes = 0
        self._index = {}  # name -> entry, oldest first
        self._next = 0
        self._lock = threading.Lock()
        self._recover()

    def _recover(self):
        """Index what a previous run kept; remove temporary files, frames without a sidecar (the
        write was cut) and sidecars without a frame (a delete was cut); trim to the limit."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(".keep_*.tmp"):
            _removed(leftover)
        found = []
        for sidecar in self.folder.glob("keep_*.json"):
            match = NAME.fullmatch(sidecar.stem)
            if not match:
                continue
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
                size = (self.folder / f"{sidecar.stem}.jpg").stat().st_size + sidecar.stat().st_size
            except (OSError, ValueError) as exc:
                log.warning("removing an incomplete kept frame", extra={"fields": {"path": sidecar, "error": exc}})
                _removed(sidecar)
                continue
            found.append((int(match.group(1)), _entry(sidecar.stem, meta, size)))
        for number, entry in sorted(found, key=lambda item: item[0]):
            self._index[entry["name"]] = entry
            self.bytes += entry["bytes"]
            self._next = number + 1
        for image in self.folder.glob("keep_*.jpg"):
            if image.stem not in self._index:
                _removed(image)
        with self._lock:
            self._make_room(0)

    # -- reading ------------------------------------------------------------------------------
    def entries(self):
        with self._lock:
            return list(self._index.values())

    def stats(self):
        with self._lock:
            return {"count": len(self._index), "bytes": self.bytes, "limit_bytes": self.limit,
                    "dropped": self.dropped, "folder": str(self.folder)}

    def read(self, name, part="jpg"):
        """The bytes of a kept frame (`jpg`) or its sidecar (`json`); NotFound for any other name,
        so no request reaches a path outside the store."""
        if not NAME.fullmatch(name) or part not in ("jpg", "json"):
            raise NotFound(f"no kept frame {name[:80]!r}; GET /keep lists them", "unknown_frame")
        try:
            return (self.folder / f"{name}.{part}").read_bytes()
        except FileNotFoundError:  # never kept, deleted, or dropped to make room meanwhile
            raise NotFound(f"no kept frame {name!r} (dropped to make room, or deleted?); GET /keep lists them",
                           "unknown_frame") from None

    # -- changing -----------------------------------------------------------------------------
    def add(self, data, meta):
        """Store one encoded frame with its sidecar fields; returns its entry. The oldest frames go
        first to make room; a frame larger than the whole store is TooLarge."""
        with self._lock:
            name = f"keep_{self._next:06d}"
            doc = {"file": f"{name}.jpg", "name": name, **meta}
            text = json.dumps(doc, indent=1) + "\n"
            size = len(data) + len(text.encode())
            if size > self.limit:
                raise TooLarge(f"a frame of {size / MB:.1f} MB does not fit the store of frames worth labelling "
                               f"(keep_mb {self.limit / MB:g})", "keep_too_small")
            self._make_room(size)
            self._next += 1
            try:
                atomic_write_bytes(self.folder / doc["file"], data)
                atomic_write_text(self.folder / f"{name}.json", text)  # last: the commit mark
            except OSError as exc:
                _removed(self.folder / doc["file"])
                log.error("cannot keep a frame", extra={"fields": {"path": self.folder, "error": exc}})
                raise storage_error(exc, "the frame could not be stored (the device's log says why)") from None
            entry = self._index[name] = _entry(name, doc, size)
            self.bytes += size
        return entry

    def delete(self, name):
        with self._lock:
            if name not in self._index:
                raise NotFound(f"no kept frame {name[:80]!r}; GET /keep lists them", "unknown_frame")
            self._remove(name)

    def _make_room(self, size):
        while self._index and self.bytes + size > self.limit:
            self._remove(next(iter(self._index)))
            self.dropped += 1

    def _remove(self, name):
        """Sidecar first: once it is gone the frame is no longer kept, whatever happens next."""
        entry = self._index.pop(name)
        self.bytes -= entry["bytes"]
        _removed(self.folder / f"{name}.json")
        _removed(self.folder / entry["file"])


def _entry(name, meta, size):
    """What GET /keep lists of a frame."""
    return {"name": name, "file": f"{name}.jpg", "time": meta.get("time"),
            "timestamp": meta.get("timestamp"), "seq": meta.get("seq"), "reason": meta.get("reason"),
            "detections": len(meta.get("truth") or []), "dhash": meta.get("dhash"), "bytes": size}


def suggestions(detections, width, height, threshold, floor):
    """The detections worth suggesting as labels, in the pull sidecar's `truth` form (corners in
    pixels), best first: those that pass the threshold, and the uncertain ones from `floor` up,
    each with its `score` and whether it `passed`."""
    found = []
    for det in sorted(detections, key=lambda d: -d["score"]):
        passed = threshold.passes(det["label"], det["score"])
        if not passed and det["score"] < floor:
            continue
        x0, y0, x1, y1 = (round(min(max(v, 0.0), 1.0) * size, 1)
                          for v, size in zip(det["box"], (width, height, width, height)))
        if x1 > x0 and y1 > y0:
            found.append({"class_id": det["class_id"], "label": det["label"], "box": [x0, y0, x1, y1],
                          "score": det["score"], "passed": passed})
    return found


class Keeper:
    """Picks the frames worth a person's look (an observer of the inference loop, edge/inference.py)
    and stores them in its own thread."""

    def __init__(self, store, threshold, device, floor=0.2, interval_s=2.0, dedup_bits=10, queue_size=QUEUE_SIZE):
        self.store, self.threshold, self.device = store, threshold, device
        self.floor = floor  # the loop's postprocess goes down to this score for us (InferenceLoop._floor)
        self.interval_s, self.dedup_bits = interval_s, dedup_bits
        self.kept = collections.Counter()
        self.skipped = collections.Counter()
        self.latest = None  # (frame, detections, model version) of the last frame observed
        self._queue = queue.Queue(queue_size)
        self._last_offer = {}  # reason -> monotonic time
        self._last_hash = None
        self._hash_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="keep", daemon=True)

    @classmethod
    def from_config(cls, config, threshold):
        """A started keeper, or None when `keep_mb` is 0 (keeping is off)."""
        if config.keep_mb <= 0:
            return None
        folder = folder_for(config)
        try:
            store = KeepStore(folder, config.keep_mb * MB)
        except OSError as exc:  # a keep_dir that cannot be made or read: say which, at start
            raise StorageError(f"cannot keep frames worth labelling in {folder} ({exc.strerror or exc}); "
                               "set keep_dir to a writable folder, or keep_mb to 0") from None
        return cls(store, threshold, config.device, config.keep_floor, config.keep_interval_s,
                   config.keep_dedup_bits).start()

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        """Let the worker write what is queued, then end it."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the loop's thread: decide and hand over, nothing slow ---------------------------------
    def observe(self, frame, detector, detections, kept):
        self.latest = (frame, detections, detector.version)
        if detections:
            best = max(detections, key=lambda d: d["score"])
            if best["score"] >= self.floor and not self.threshold.passes(best["label"], best["score"]):
                self.offer("uncertain", frame, detections, detector.version)

    def count_changed(self, frame, kept):
        """The Counter's on_change callback (edge/counting.py): the stabilised count just changed."""
        latest = self.latest
        detections = latest[1] if latest and latest[0] is frame else kept
        self.offer("count_changed", frame, detections, latest[2] if latest else None)

    def offer(self, reason, frame, detections, version):
        """Queue a frame for the worker, unless this reason kept one less than `interval_s` ago."""
        now = time.monotonic()
        if now - self._last_offer.get(reason, float("-inf")) < self.interval_s:
            self.skipped["rate_limited"] += 1
            return
        self._last_offer[reason] = now
        try:
            self._queue.put_nowait((reason, frame, detections, version))
        except queue.Full:
            self.skipped["queue_full"] += 1

    # -- requests and the worker ----------------------------------------------------------------
    def mark(self, result):
        """POST /keep: store the frame of `result` (the loop's latest) now, in the caller's thread,
        so the answer can name it. With the detections the keeper saw on that frame, when it did."""
        latest = self.latest
        if latest and latest[0] is result.frame:
            return self._keep("operator", *latest)
        return self._keep("operator", result.frame, result.detections, result.model_version)

    def _work(self):
        while not (self._stopping.is_set() and self._queue.empty()):
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._keep(*item, automatic=True)
            except Exception as exc:  # a full disk or a bad frame must not end the worker
                self.skipped["errors"] += 1
                log.warning("a frame worth labelling was not kept", extra={"fields": {"reason": item[0],
                                                                                     "error": exc}})

    def _keep(self, reason, frame, detections, version, automatic=False):
        """Encode and store one frame; an automatic one is skipped when broken or near the last kept."""
        image = frame.image
        if automatic and check_frame(image):
            self.skipped["broken"] += 1
            return None
        digest = dhash(image)
        with self._hash_lock:
            if automatic and self._last_hash is not None and hamming(digest, self._last_hash) <= self.dedup_bits:
                self.skipped["duplicate"] += 1
                return None
            self._last_hash = digest
        height, width = image.shape[:2]
        meta = {"device": self.device, "seq": frame.seq,
                "time": datetime.datetime.fromtimestamp(frame.ts, datetime.timezone.utc).isoformat(),
                "timestamp": frame.ts, "width": width, "height": height, "dhash": f"{digest:016x}",
                "reason": reason, "model_version": version,
                "truth": suggestions(detections, width, height, self.threshold, self.floor)}
        entry = self.store.add(encode(image, "jpeg", JPEG_QUALITY), meta)
        self.kept[reason] += 1
        log.info("kept a frame worth labelling", extra={"fields": {"name": entry["name"], "reason": reason}})
        return entry

    def stats(self):
        """/status `keep`: the store's totals, and how many frames were kept and skipped, and why."""
        return {"enabled": True, **self.store.stats(), "kept": {r: self.kept[r] for r in REASONS},
                "skipped": {k: self.skipped[k] for k in ("rate_limited", "duplicate", "broken", "queue_full",
                                                         "errors")},
                "queued": self._queue.qsize(), "floor": self.floor, "interval_s": self.interval_s}


OFF = {"enabled": False, "count": 0, "bytes": 0, "limit_bytes": 0, "dropped": 0}  # /status `keep` with keep_mb 0
