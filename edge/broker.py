"""The MQTT broker the edge service publishes to: external, none, or one it starts itself.

`--broker embedded` (the zero-setup default) starts Debian's `mosquitto` when it is on PATH:
fast, and it keeps sessions and retained messages across its own restart (persistence on).
Without it, amqtt (pure Python) runs in a thread: about 9x slower and without persistence,
but it needs nothing outside pip (docs/mqtt.md, "Broker").
"""
import asyncio
import logging
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time

from .errors import BrokerError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PREFERRED_PORT = 1883
START_TIMEOUT_S = 10.0


def start_broker(config):
    """Resolve `config.broker` to `(address "host:port" | None, handle | None)`.

    Only an embedded broker has a handle; its `stop()` ends it.
    """
    if config.broker == "none":
        return None, None
    if config.broker != "embedded":
        return config.broker, None
    port = _port()
    handle = MosquittoBroker(config.state_path / "mosquitto", port) if shutil.which("mosquitto") else AmqttBroker(port)
    log.info("started an embedded MQTT broker", extra={"fields": {"broker": handle.kind, "address": handle.address}})
    return handle.address, handle


def _port():
    """1883 when it is free (what every MQTT tool tries first), else any free port."""
    for port in (PREFERRED_PORT, 0):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise BrokerError(f"no free TCP port on {HOST} for the embedded MQTT broker")


def _listening(port):
    try:
        socket.create_connection((HOST, port), timeout=0.2).close()
        return True
    except OSError:
        return False


class MosquittoBroker:
    """`mosquitto -c <state>/mosquitto.conf` as a child process, on loopback, with persistence."""

    kind = "mosquitto"

    def __init__(self, folder, port):
        self.address = f"{HOST}:{port}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "mosquitto.conf"
        # `user`: run as whoever runs the service (mosquitto would switch from root to 'mosquitto',
        # which cannot write our state folder).
        conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\npersistence true\n"
                        f"persistence_location {folder}/\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n")
        self.log_path = folder / "mosquitto.log"
        with open(self.log_path, "wb") as log_file:
            self._proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log_file)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise BrokerError(f"mosquitto did not start on {self.address}: {' / '.join(tail) or 'no output'} "
                                  f"(log: {self.log_path})")
            time.sleep(0.05)

    def stop(self):
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class AmqttBroker:
    """amqtt's broker in a daemon thread with its own event loop."""

    kind = "amqtt"

    def __init__(self, port):
        self.address = f"{HOST}:{port}"
        # A plugins section silences amqtt's warning about plugins loaded from entry points.
        self._config = {"listeners": {"default": {"type": "tcp", "bind": self.address}},
                        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        self._ready = threading.Event()
        self._error = None
        self._loop = self._stopping = None
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._error:
            raise BrokerError(f"amqtt did not start on {self.address}: {self._error or 'timed out'}; "
                              "install mosquitto (apt-get install mosquitto) or pass --broker HOST:PORT")

    def _run(self):
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self):
        from amqtt.broker import Broker  # imported here: it is slow to import and rarely needed
        self._stopping = asyncio.Event()
        try:
            broker = Broker(self._config, loop=self._loop)
            await broker.start()
        except Exception as exc:  # amqtt raises its own BrokerError, or OSError for a taken port
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stopping.wait()
        await broker.shutdown()

    def stop(self):
        if self._thread.is_alive() and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(START_TIMEOUT_S)
