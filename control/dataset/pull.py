"""The `pull` client: clean frames from a device's GET /capture into a folder, resumably.

A frame is kept as frame_NNNNNN.<ext> plus frame_NNNNNN.json; the sidecar is written last
and is the commit mark, so after a kill the folder holds whole frames only (an image
without its sidecar, or a temporary file, is removed when pulling resumes). Broken frames
(flat band at the bottom, black) are refused even if a device lets one through, and frames whose
perceptual hash is near one already kept are skipped.
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
from core.errors import DeepLensError, DeviceError
from core.fileio import atomic_write_bytes, atomic_write_text
from core.quality import check_frame

from .images import dhash, hamming

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
        """One frame: (bytes, headers); retries connection errors and 5xx with exponential backoff."""
        error = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), 10.0))
            try:
                return self.client.capture(**self.params)
            except DeviceError as exc:
                if exc.status is not None and exc.status < 500:
                    raise PullError(str(exc)) from None
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

