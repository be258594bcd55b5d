"""The `pull` client: clean frames from a device's GET /capture into a folder, resumably.

A frame is kept as frame_NNNNNN.<ext> plus frame_NNNNNN.json; the sidecar is written last
and is the commit mark, so after a kill the folder holds whole frames only (an image
without its sidecar, or a temporary file, is removed when pulling resumes). Broken frames
(flat band at the bottom, black) are refused even if a device lets one through, and frames whose
perceptual hash is near one already kept are skipped.

`pull --worth-labelling` (KeptPuller) instead fetches the frames the device kept as worth
labelling (GET /keep, edge/keep.py), each once, into the same numbering and format: their
sidecars carry the model's detections as suggested labels in `truth`, and `device_id` and
`kept_as` (the device's name for the frame), by which a later run skips what it fetched.
"""
import datetime
import glob
import json
import os
import re
import time

import cv2
import numpy as np

from core.client import DeviceClient
from core.dhash import dhash, hamming
from core.errors import DeepLensError, DeviceError
from core.fileio import atomic_write_bytes, atomic_write_text
from core.quality import check_frame

NAME = re.compile(r"frame_(\d{6,})\.json$")
EXTENSIONS = {"jpeg": ".jpg", "png": ".png"}


class PullError(DeepLensError):
    """The device refused a request, stayed unreachable through every retry, or sent only duplicates."""


class Puller:
    def __init__(self, device, folder, image_format="jpeg", crop="square", size=300, dedup_threshold=10,
                 retries=5, timeout=10.0, backoff=0.5, max_skips=200):
        """`device`: a core.client.DeviceClient, or a DEVICE argument (URL, host:port or devices.yaml name)."""
        self.client = device if isinstance(device, DeviceClient) else DeviceClient(device, timeout=timeout)
        self.folder, self.image_format = folder, image_format
        self.params = {"format": image_format, "count": 1, **({"crop": crop} if crop else {}), **({"size": size} if size else {})}
        self.dedup_threshold, self.retries = dedup_threshold, retries
        self.backoff, self.max_skips = backoff, max_skips
        os.makedirs(folder, exist_ok=True)
        self.sources = set()  # (device_id, kept_as, dhash) of frames fetched from a device's kept ones
        self.hashes, self.next_index = self._scan()

    @property
    def kept(self):
        return len(self.hashes)

    def _scan(self):
        """Hashes of the frames already kept and the next free number; clears leftovers of a kill."""
        for leftover in glob.glob(os.path.join(self.folder, ".frame_*.tmp")):
            os.unlink(leftover)
        hashes, last = [], -1
        committed = set()
        for sidecar in sorted(glob.glob(os.path.join(self.folder, "frame_*.json"))):
            match = NAME.search(sidecar)
            if match:
                with open(sidecar, encoding="utf-8") as f:
                    meta = json.load(f)
                hashes.append(int(meta["dhash"], 16))
                if meta.get("kept_as"):
                    self.sources.add((meta.get("device_id"), meta["kept_as"], meta["dhash"]))
                committed.add(os.path.join(self.folder, meta["file"]))
                last = max(last, int(match.group(1)))
        for image in glob.glob(os.path.join(self.folder, "frame_*.*")):
            if not image.endswith(".json") and image not in committed:
                os.unlink(image)
        return hashes, last + 1

    def run(self, count=None, duration=None, interval=0.5, on_frame=None):
        """Pull until the folder holds `count` frames or `duration` seconds passed."""
        deadline = time.monotonic() + duration if duration else None
        stats = {"new": 0, "duplicates": 0, "rejected": 0}
        skips = 0
        while (count is None or self.kept < count) and (deadline is None or time.monotonic() < deadline):
            if stats["new"] or skips:
                time.sleep(interval)
            data, headers = self._fetch()
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if pixels is None or check_frame(pixels):
                verdict = "rejected"
            else:
                digest = dhash(pixels)
                if any(hamming(digest, kept) <= self.dedup_threshold for kept in self.hashes):
                    verdict = "duplicates"
                else:
                    self._save(data, pixels, headers, digest)
                    verdict = "new"
                    if on_frame:
                        on_frame(self.kept)
            stats[verdict] += 1
            skips = 0 if verdict == "new" else skips + 1
            if skips >= self.max_skips:
                raise PullError(f"the last {skips} frames were all broken or near-duplicates of kept ones; "
                                "is the scene changing? (lower --dedup-threshold to keep more alike frames)")
        return {"folder": self.folder, "kept": self.kept, **stats}

    def _fetch(self):
        """One frame: (bytes, headers)."""
        return self._retry(lambda: self.client.capture(**self.params))

    def _retry(self, call):
        """`call()`, retrying connection errors and 5xx with exponential backoff; a 4xx is a PullError
        at once (its `status` kept)."""
        error = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 10.0))
            try:
                return call()
            except DeviceError as exc:
                if exc.status is not None and exc.status < 500:
                    raise PullError(str(exc), code=exc.code) from None
                error = exc
        raise PullError(f"{error} (after {self.retries + 1} tries)")

    def _save(self, data, pixels, headers, digest):
        name = f"frame_{self.next_index:06d}"
        image_file = name + EXTENSIONS[self.image_format]
        timestamp = float(headers.get("X-Frame-Timestamp") or time.time())
        seq = headers.get("X-Frame-Seq")
        meta = {"file": image_file, "device": self.client.url, "seq": int(seq) if seq is not None else None,
                "time": datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(),
                "timestamp": timestamp, "width": pixels.shape[1], "height": pixels.shape[0],
                "capture": self.params, "dhash": f"{digest:016x}"}
        if headers.get("X-Frame-Truth"):  # a synthetic camera labels its own frames
            meta["truth"] = json.loads(headers["X-Frame-Truth"])
        atomic_write_bytes(os.path.join(self.folder, image_file), data)
        atomic_write_text(os.path.join(self.folder, name + ".json"), json.dumps(meta, indent=1) + "\n")
        self.hashes.append(digest)
        self.next_index += 1



class KeptPuller(Puller):
    """`pull --worth-labelling`: the frames a device kept as worth labelling, with their suggested
    labels, into the pull's numbering; each at most once, so running it again fetches only new ones."""

    def pending(self, count=None):
        """The device's kept frames not fetched yet, oldest first (at most what `count` leaves room for)."""
        listing = self._retry(self.client.kept)
        if not listing.get("enabled"):
            raise PullError("the device keeps no frames worth labelling (its keep_mb setting is 0)")
        self.device_id = listing.get("device")
        todo = [entry for entry in listing.get("frames", [])
                if (self.device_id, entry["name"], entry.get("dhash")) not in self.sources]
        self.stats = {"new": 0, "fetched_before": len(listing.get("frames", [])) - len(todo), "gone": 0}
        return todo if count is None else todo[:max(0, count - self.kept)]

    def fetch(self, entry):
        """Fetch one kept frame (sidecar, then image) and save it; False when the device dropped it meanwhile."""
        name = entry["name"]
        try:
            meta = self._retry(lambda: self.client.kept_sidecar(name))
            data = self._retry(lambda: self.client.kept_image(name))
        except PullError as exc:
            if exc.code != "unknown_frame":
                raise
            self.stats["gone"] += 1
            return False
        if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is None:
            raise PullError(f"the device sent a kept frame {name} that is not a readable image")
        self._save_kept(data, meta)
        self.stats["new"] += 1
        return True

    def run(self, count=None, on_frame=None):
        for entry in self.pending(count):
            if self.fetch(entry) and on_frame:
                on_frame(self.kept)
        return self.result()

    def result(self):
        return {"folder": self.folder, "kept": self.kept, **self.stats}

    def _save_kept(self, data, meta):
        name = f"frame_{self.next_index:06d}"
        image_file = name + ".jpg"
        device_id = meta.get("device", self.device_id)
        saved = {**{k: v for k, v in meta.items() if k != "name"}, "file": image_file, "device": self.client.url,
                 "device_id": device_id, "kept_as": meta["name"]}
        atomic_write_bytes(os.path.join(self.folder, image_file), data)
        atomic_write_text(os.path.join(self.folder, name + ".json"), json.dumps(saved, indent=1) + "\n")
        self.hashes.append(int(meta["dhash"], 16))
        self.sources.add((device_id, meta["name"], meta["dhash"]))
        self.next_index += 1
