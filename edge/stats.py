"""Rolling figures for /status and /metrics: rates and percentiles over the last few seconds."""
import collections
import threading
import time

import numpy as np


class Rolling:
    """The last `size` samples of a timing, for p50/p99 without keeping history forever."""

    def __init__(self, size=500):
        self._samples = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value):
        with self._lock:
            self._samples.append(value)

    def percentiles(self, *qs):
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return {f"p{q}": None for q in qs}
        return {f"p{q}": round(float(v), 3) for q, v in zip(qs, np.percentile(samples, qs))}


class Rate:
    """Events per second over a sliding window."""

    def __init__(self, window=5.0):
        self.window = window
        self._times = collections.deque()
        self._lock = threading.Lock()

    def tick(self, now=None):
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def per_second(self, now=None):
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            return round((len(self._times) - 1) / max(now - self._times[0], 1e-6), 2)

    def _trim(self, now):
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
