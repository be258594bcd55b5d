"""Run `deeplens-edge serve` as a real process on a free port, for tests and benchmarks."""
import ctypes
import os
import signal
import subprocess
import sys
import time

import requests

from conftest import free_port


def _die_with_parent():
    """In the child: get SIGTERM when the process that started it dies, so no service outlives a test run."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EdgeService:
    running = set()  # started and not yet stopped; conftest stops what a test leaves running

    def __init__(self, tmp_path, *args, env=None):
        """`args` are serve's flags; with --token the helper sends it, with --tls-cert it speaks HTTPS
        (trusting the certificate: pinning is the controller's business, tested there)."""
        self.port = free_port()
        self.url = f"{'https' if '--tls-cert' in args else 'http'}://127.0.0.1:{self.port}"
        self.session = requests.Session()
        self.session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify=False
        self.session.verify = False
        if "--token" in args:
            self.session.headers["Authorization"] = f"Bearer {args[list(args).index('--token') + 1]}"
        self.log_path = tmp_path / f"edge-{self.port}.log"
        self.args = ["--port", str(self.port), "--state-dir", str(tmp_path / "state"), "--device-id", "testcam",
                     *args]
        self.env = {**os.environ, **(env or {})}
        self.proc = None

    def start(self, timeout=30):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "serve", *self.args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     preexec_fn=_die_with_parent)
        EdgeService.running.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"deeplens-edge exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.session.get(self.url + "/health", timeout=0.5).ok:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy starting
                time.sleep(0.1)
        raise TimeoutError(f"deeplens-edge did not answer within {timeout}s:\n{self.log()}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self._log.close()
        EdgeService.running.discard(self)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path, **kwargs):
        return self.session.get(self.url + path, timeout=kwargs.pop("timeout", 10), **kwargs)

    def put(self, path, **kwargs):
        return self.session.put(self.url + path, timeout=kwargs.pop("timeout", 10), **kwargs)

    def wait_status(self, predicate, timeout=15):
        """Poll /status until `predicate(doc)` holds; returns the doc."""
        deadline = time.monotonic() + timeout
        doc = None
        while time.monotonic() < deadline:
            doc = self.get("/status").json()
            if predicate(doc):
                return doc
            time.sleep(0.1)
        raise AssertionError(f"status never matched within {timeout}s; last: {doc}")
