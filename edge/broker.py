"""The MQTT broker the edge service publishes to: external, none, or one it starts itself.

`--broker embedded` (the zero-setup default) starts Debian's `mosquitto` when it is on PATH:
fast, and it keeps sessions and retained messages across its own restart (persistence on).
It is supervised: when it exits on its own it is started again on the same port (after 0.25 s,
doubling up to 2 s while it fails), and `stats()` counts the restarts for /status.
Without it, amqtt (pure Python) runs in a thread: about 9x slower and without persistence,
but it needs nothing outside pip (docs/mqtt.md, "Broker").
"""
import asyncio
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time

from .config import is_loopback
from .errors import BrokerError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
RESTART_DELAY_S = (0.25, 2.0)  # a dead embedded mosquitto is restarted after 0.25 s, doubling up to 2 s
STABLE_S = 10.0  # after running this long, a crash starts the delays over
WILDCARDS = ("0.0.0.0", "::", "")


def start_broker(config):
    """Resolve `config.broker` to `(address "host:port" | None, handle | None)`.

    Only an embedded broker has a handle; its `stop()` ends it. The embedded broker listens
    where the REST API does (`host`). With `mqtt_username` and `mqtt_password` set, that user
    is the only one who may publish (so only it can send commands); clients without them may
    read on loopback and are refused beyond it, where credentials are required.
    """
    if config.broker == "none":
        return None, None
    if config.broker != "embedded":
        return config.broker, None
    host, users = config.host, {}
    if config.mqtt_username and config.mqtt_password:
        users[config.mqtt_username] = config.mqtt_password
    elif config.beyond_loopback:
        raise BrokerError(f"the embedded broker would listen on {host} for other machines without a password: "
                          "set mqtt_username and mqtt_password (or mqtt_password_file; `deeplens-edge install` "
                          "makes them), or listen on 127.0.0.1")
    tls = (config.tls_cert, config.tls_key) if config.tls_cert else None
    port = _port(host, config.mqtt_port)
    if config.mqtt_port and port != config.mqtt_port:
        log.warning("MQTT port taken; the embedded broker listens on another",
                    extra={"fields": {"wanted": config.mqtt_port, "port": port}})
    if shutil.which("mosquitto"):
        handle = MosquittoBroker(config.state_path / "mosquitto", host, port, users, tls)
    elif users or tls or config.beyond_loopback:
        raise BrokerError("an embedded broker with passwords, TLS or beyond loopback needs mosquitto: "
                          "apt-get install mosquitto (or pass --broker HOST:PORT)")
    else:
        handle = AmqttBroker(port)
    log.info("started an embedded MQTT broker", extra={"fields": {"broker": handle.kind, "address": handle.address}})
    return handle.address, handle


def local_host(host):
    """Where a client on this machine reaches a server listening on `host`."""
    return "127.0.0.1" if host in WILDCARDS else host


def _port(host, preferred):
    """`preferred` when it is free (1883: what every MQTT tool tries first), else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise BrokerError(f"no free TCP port on {host} for the embedded MQTT broker")


def _listening(host, port):
    try:
        socket.create_connection((local_host(host), port), timeout=0.2).close()
        return True
    except OSError:
        return False


class MosquittoBroker:
    """`mosquitto -c <state>/mosquitto.conf` as a child process, with persistence; with `users`
    ({name: password}) only they may publish; with `tls` (cert file, key file) its listener is TLS."""

    kind = "mosquitto"

    def __init__(self, folder, host, port, users=None, tls=None):
        self.host, self.port = host, port
        self.address = f"{host}:{port}"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)  # the password file and persistence stay the service's own
        # `user`: run as whoever runs the service (mosquitto would switch from root to 'mosquitto',
        # which cannot write our state folder).
        lines = [f"listener {port} {host}" if host not in WILDCARDS else f"listener {port}",
                 "persistence true", f"persistence_location {folder}/",
                 # Written every minute (and at a clean stop): a crash loses at most the last
                 # minute of persistent sessions and retained messages, not mosquitto's 30.
                 "autosave_interval 60",
                 f"user {pwd.getpwuid(os.geteuid()).pw_name}"]
        if tls:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        if users:
            passwords = folder / "passwd"
            passwords.write_text("".join(f"{name}:{password}\n" for name, password in users.items()))
            os.chmod(passwords, 0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True, capture_output=True)
            acl = folder / "acl"
            # Rules before any `user` line are the anonymous clients': read only.
            acl.write_text("topic read #\n" + "".join(f"user {name}\ntopic readwrite #\n" for name in users))
            lines += [f"password_file {passwords}", f"acl_file {acl}",
                      f"allow_anonymous {'true' if is_loopback(host) else 'false'}"]
        else:
            lines.append("allow_anonymous true")
        conf = folder / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self._conf = conf
        self.log_path = folder / "mosquitto.log"
        self._lock = threading.Lock()  # between a restart and stop(): no child outlives stop()
        self._stopping = threading.Event()
        self.restarts = 0
        self.reason = None  # why it is not running, None while it is
        self._proc = None
        self._spawn(fresh_log=True)
        self._supervisor = threading.Thread(target=self._supervise, name="mosquitto-supervisor", daemon=True)
        self._supervisor.start()

    @property
    def pid(self):
        return self._proc.pid

    def _spawn(self, fresh_log=False):
        """Start mosquitto and wait until it listens; BrokerError (with its log's last lines) if it does not."""
        with self._lock:
            if self._stopping.is_set():
                raise BrokerError("the broker is stopping")
            with open(self.log_path, "wb" if fresh_log else "ab") as log_file:
                proc = subprocess.Popen(["mosquitto", "-c", str(self._conf)], stdout=subprocess.DEVNULL, stderr=log_file)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _listening(self.host, self.port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    _end(proc)
                    tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
                    raise BrokerError(f"mosquitto did not start on {self.address}: {' / '.join(tail) or 'no output'} "
                                      f"(log: {self.log_path})")
                time.sleep(0.05)
            self._proc, self._started_at = proc, time.monotonic()  # under the lock: stop() ends this one

    def _supervise(self):
        """Restart mosquitto whenever it exits on its own, on the same port and with the same
        persistence, so clients reconnect and find their sessions and retained messages."""
        delay = RESTART_DELAY_S[0]
        while True:
            code = self._proc.wait()  # blocks: no polling while it runs
            if self._stopping.is_set():
                return
            if time.monotonic() - self._started_at >= STABLE_S:
                delay = RESTART_DELAY_S[0]  # a broker that ran a while gets a quick restart
            self.reason = f"mosquitto exited ({_exit_status(code)})"
            log.error("the embedded MQTT broker exited; restarting it",
                      extra={"fields": {"broker": self.address, "exit": _exit_status(code), "in_s": delay}})
            failures = 0
            while True:
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, RESTART_DELAY_S[1])
                try:
                    self._spawn()
                except BrokerError as exc:
                    if self._stopping.is_set():
                        return
                    failures += 1
                    self.reason = str(exc)
                    if failures == 1 or failures % 10 == 0:
                        log.error("the embedded MQTT broker did not restart; trying again",
                                  extra={"fields": {"error": str(exc), "failures": failures}})
                    continue
                self.restarts += 1
                self.reason = None
                log.warning("the embedded MQTT broker is back", extra={"fields": {"broker": self.address,
                                                                                  "restarts": self.restarts}})
                break

    def stats(self):
        """For /status: whether it runs, how often it was restarted, and why it is down."""
        running = self._proc.poll() is None
        return {"kind": self.kind, "running": running, "restarts": self.restarts,
                "reason": None if running else (self.reason or "mosquitto is not running")}

    def stop(self):
        self._stopping.set()
        with self._lock:  # waits for a restart under way
            _end(self._proc)
        self._supervisor.join(START_TIMEOUT_S)


def _end(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _exit_status(code):
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


class AmqttBroker:
    """amqtt's broker in a daemon thread with its own event loop."""

    kind = "amqtt"

    def __init__(self, port):
        self.address = f"127.0.0.1:{port}"
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

    def stats(self):
        """For /status. amqtt runs in this process: it is not restarted on its own."""
        running = self._thread.is_alive()
        return {"kind": self.kind, "running": running, "restarts": 0,
                "reason": None if running else f"amqtt stopped: {self._error or 'its thread ended'}"}

    def stop(self):
        if self._thread.is_alive() and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(START_TIMEOUT_S)
