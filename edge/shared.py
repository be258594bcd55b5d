"""Work on a camera frame done once however many requests want it at the same time: the live
view's JPEG of a frame at one size (edge/live.py), /capture's check and encoding of a frame
(edge/capture.py). Eight clients asking for the same frame cost one encode, not eight, on a
device with two cores that also runs the inference loop."""
import collections
import threading


class _Entry:
    __slots__ = ("done", "value", "error")

    def __init__(self):
        self.done, self.value, self.error = threading.Event(), None, None


class Shared:
    """`get(key, make)`: `make()`'s result for `key`, made once however many ask at once (the
    first caller makes it, the others wait for it). The last `keep` results are kept for callers
    that come a little later; a failure goes to every waiter and is not kept."""

    def __init__(self, keep):
        self.keep = keep
        self._lock = threading.Lock()
        self._entries = collections.OrderedDict()

    def get(self, key, make):
        with self._lock:
            entry = self._entries.get(key)
            mine = entry is None
            if mine:
                entry = self._entries[key] = _Entry()
                while len(self._entries) > self.keep:
                    self._entries.popitem(last=False)
        if not mine:
            entry.done.wait()
            if entry.error is not None:
                raise entry.error
            return entry.value
        try:
            entry.value = make()
        except BaseException as exc:
            entry.error = exc
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            raise
        finally:
            entry.done.set()
        return entry.value
