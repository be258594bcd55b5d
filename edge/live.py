"""Long-lived responses: the live view (/stream) and /capture bursts.

They hold a request thread for as long as they run, so they get their own bounded pool: at most
`live_slots` at once (the HTTP server runs that many threads beyond the API's own, so /health,
/status and the model store always have threads left) and `live_per_client` per client address;
a request beyond either is refused with 503 (`live_pool_full`, `client_limit`). A slot is given
back when the response ends, however it ends.

A response notices a client that left even while it has nothing to write (the camera is down,
a burst waits between frames): the client's socket is polled for a hang-up. A client that
stops reading is dropped by the server's write timeout (`write_timeout`), and a viewer that
takes longer than that to take one frame is dropped too. Every viewer of a frame at one size
shares one JPEG encode (`Live.shared`).
"""
import collections
import logging
import select
import socket
import threading
import time

from flask import current_app, request

from core.errors import Unavailable

from .shared import Shared

log = logging.getLogger(__name__)

SOCKET_KEY = "deeplens.socket"  # the client's socket in the WSGI environ (edge/runtime.py http_server)
STALE_S = 5.0  # a stream ends when its newest frame is this old: the camera is gone
POLL_S = 0.02  # how often a stream looks for a new frame (and for a departed client)
CACHE = 8  # encoded frames kept: a few sizes of the latest frames
STREAM_SNDBUF = 128 * 1024  # a stream's send buffer: a slow viewer is a few frames behind, not minutes
HANGUP = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0x2000)
_install_lock = threading.Lock()


class Slot:
    """One long-lived response's place in the pool; `release` is idempotent."""

    def __init__(self, live, client, sock):
        self.live, self.client, self.sock = live, client, sock
        self._released = False

    def gone(self):
        """Whether the client hung up (or its socket is closed): nothing is read or written."""
        if self.sock is None:
            return False
        try:
            fd = self.sock.fileno()
            if fd < 0:
                return True
            poller = select.poll()
            poller.register(fd, HANGUP)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def small_send_buffer(self, size=STREAM_SNDBUF):
        """Cap the socket's send buffer (the kernel's own grows to megabytes), so that a viewer that
        reads slowly gets recent frames, and one that takes more than write_timeout over a frame
        is seen to."""
        if self.sock is not None:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            except OSError:
                pass

    def wait(self, seconds):
        """Sleep up to `seconds`; False as soon as the client has gone or the service stops."""
        end = time.monotonic() + seconds
        while True:
            if self.gone() or self.live.stopping.is_set():
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            self.live.stopping.wait(min(left, 0.1))

    def release(self):
        with self.live.lock:
            if self._released:
                return
            self._released = True
            self.live.held[self.client] -= 1
            if self.live.held[self.client] <= 0:
                del self.live.held[self.client]


class Live:
    def __init__(self, config):
        self.slots, self.per_client = config.live_slots, config.live_per_client
        self.write_timeout = config.write_timeout
        self.lock = threading.Lock()
        self.held = collections.Counter()
        self.stopping = threading.Event()
        self._jpegs = Shared(CACHE)

    def take(self, what):
        """A slot for the current request's long-lived response, or 503 when the pool or this
        client's share of it is full."""
        client = request.remote_addr or "?"
        with self.lock:
            if self.held[client] >= self.per_client:
                raise Unavailable(f"this client already has {self.held[client]} live responses open (streams, "
                                  f"bursts), the most one client may have (setting live_per_client); close one "
                                  f"before opening {what}", "client_limit")
            if sum(self.held.values()) >= self.slots:
                raise Unavailable(f"all {self.slots} places for live responses (streams, bursts) are taken "
                                  f"(setting live_slots); try {what} again later", "live_pool_full")
            self.held[client] += 1
        return Slot(self, client, request.environ.get(SOCKET_KEY))

    def in_use(self):
        with self.lock:
            return sum(self.held.values())

    def stop(self):
        """End every stream and burst (the service is stopping)."""
        self.stopping.set()

    def shared(self, key, make):
        """`make()`'s bytes for `key` (e.g. (frame seq, size)), made once however many ask at once."""
        return self._jpegs.get(key, make)


def live():
    """The app's Live, made on first use from the runtime's settings."""
    return of(current_app, create=True)


def of(app, create=False):
    """The Live of a Flask `app` (None when it has none and `create` is false)."""
    found = app.extensions.get("deeplens.live")
    if found is None and create:
        with _install_lock:
            found = app.extensions.get("deeplens.live")
            if found is None:
                found = app.extensions["deeplens.live"] = Live(app.extensions["deeplens"].config)
    return found


def stop(app):
    """End the streams and bursts of a Flask `app` (the service is stopping)."""
    found = of(app)
    if found is not None:
        found.stop()


def hold(response, slot):
    """Give `slot` back when `response` ends: finished, failed, or its client gone."""
    response.call_on_close(slot.release)
    return response
