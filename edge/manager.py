"""The hot swap as one state machine, run by one thread: the model manager (docs/rest-api.md).

    idle ──activate / rollback──▶ loading ──▶ warming ──▶ watching ──┬──▶ confirmed
      ▲                              │           │                   └──▶ rolled_back
      └── a model that fails to load or warm is marked bad; the state goes back to where it was

`idle`, `confirmed` and `rolled_back` are resting states: the next change may start from any of
them. `loading`, `warming` and `watching` are busy: another change (activate, rollback, delete,
upload) is refused with Conflict. Crash recovery is the machine's first transition: a version
killed while on trial is stepped back from, and then activated again like any other.

Every transition runs in the manager's own thread, which is also the one thread that loads
models (MXNet keeps per-thread caches, so loading in whichever HTTP thread asked would grow
the service with each new thread). Other threads post a command and wait for its answer; no
lock is held across threads. The inference loop reads `detector` once per frame, and reports
each frame of a watched model with `report()`, which waits for the verdict: on the frame that
fails, the manager switches back before the loop goes on, so no later frame runs the failed model.
"""
import concurrent.futures
import dataclasses
import datetime
import enum
import logging
import queue
import statistics
import threading
from pathlib import Path

import numpy as np

from core.detector import Detector
from core.errors import Conflict, DeepLensError, ModelError
from core.package import MODEL_JSON

from . import memory

log = logging.getLogger(__name__)
REPORT_TIMEOUT_S = 5.0  # the longest the loop waits for a verdict on a watched frame


class State(str, enum.Enum):
    IDLE = "idle"
    LOADING = "loading"
    WARMING = "warming"
    WATCHING = "watching"
    CONFIRMED = "confirmed"
    ROLLED_BACK = "rolled_back"


BUSY = (State.LOADING, State.WARMING, State.WATCHING)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True)
class Swap:
    """Where the machine is: its state, and the change that brought it there."""
    state: State = State.IDLE
    kind: str = None        # activate | rollback | recheck (after a restart)
    version: str = None
    since: str = None

    def to_json(self):
        if self.kind is None:
            return {"state": self.state.value}
        return {"state": self.state.value, "kind": self.kind, "version": self.version, "since": self.since}


@dataclasses.dataclass(frozen=True)
class SwapRecord:
    """The last switch of models, as /status shows it under models.last_swap."""
    kind: str
    source: str
    to: str
    at: str
    warm_ms: float
    result: str             # watching | ok | rolled_back

    def to_json(self):
        return {"kind": self.kind, "from": self.source, "to": self.to, "at": self.at, "warm_ms": self.warm_ms,
                "result": self.result}


@dataclasses.dataclass(frozen=True)
class RollbackRecord:
    """The last rollback, asked for or automatic, as /status shows it under models.last_rollback."""
    source: str
    to: str
    at: str
    reason: str
    automatic: bool

    def to_json(self):
        return {"from": self.source, "to": self.to, "at": self.at, "reason": self.reason, "automatic": self.automatic}


class Unhealthy(Exception):
    """A watched model gave an output that cannot be trusted."""


class HealthGate:
    """Judges a newly activated model over its first `frames` frames: errors, non-finite outputs,
    and a median inference time above `slowdown` times its warm-up time (and SLACK_MS over it,
    as a loaded CPU adds a few ms to any model)."""
    SLACK_MS = 20.0

    def __init__(self, detector, frames, slowdown):
        self.detector, self.frames = detector, frames
        self.limit_ms = max(detector.warm_ms * slowdown, detector.warm_ms + self.SLACK_MS)
        self._infer_ms = []

    def observe(self, outputs, infer_ms):
        """True once enough frames were healthy; raises Unhealthy on a bad one."""
        if not all(np.isfinite(value).all() for value in outputs.values()):
            raise Unhealthy(f"the model returned NaN or infinite values on frame {len(self._infer_ms) + 1} after activation")
        self._infer_ms.append(infer_ms)
        if len(self._infer_ms) < self.frames:
            return False
        median = statistics.median(self._infer_ms)
        if median > self.limit_ms:
            raise Unhealthy(f"median inference {median:.1f} ms over {self.frames} frames, far above its "
                            f"warm-up {self.detector.warm_ms:.1f} ms (limit {self.limit_ms:.1f} ms)")
        return True

    def summary(self):
        return f"{len(self._infer_ms)} healthy frames, median inference {statistics.median(self._infer_ms):.1f} ms"

    def failure(self, exc):
        return f"{type(exc).__name__} on frame {len(self._infer_ms) + 1} after activation: {exc}"


@dataclasses.dataclass(frozen=True)
class Trial:
    """A model switched in and under watch: what to go back to if it fails."""
    detector: Detector
    fallback: Detector
    before: dict            # the store pointer before the switch
    gate: HealthGate


def artifacts_package(artifacts, wanted=""):
    """The package folder to run without a store: `wanted` (a folder, or a name under
    `artifacts`), else the newest package there."""
    artifacts = Path(artifacts)
    if wanted:
        folder = Path(wanted) if Path(wanted).is_dir() else artifacts / wanted
        if not (folder / MODEL_JSON).is_file():
            raise ModelError(f"no model package (with {MODEL_JSON}) here", folder)
        return folder
    found = sorted(artifacts.glob(f"*/{MODEL_JSON}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ModelError(f"no model package (a folder with {MODEL_JSON}) in the artifacts folder", artifacts)
    return found[-1].parent


class ModelManager:
    """Owns which detector serves, the model store's pointer, and every change of them.

    `frame()` returns the latest camera image (for warm-ups); `on_change()` is called (in the
    manager's thread) after each transition worth telling, to republish the status.
    """

    def __init__(self, store, config, frame, on_change=lambda: None):
        self.store, self.config, self._frame, self._on_change = store, config, frame, on_change
        self.detector = None        # what the loop runs; written only by the manager's thread
        self.error = None           # why there is no detector
        self.swap = Swap()
        self.last_swap = self.last_rollback = None
        self._trial = None
        self._commands = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="model manager", daemon=True)

    # -- other threads -----------------------------------------------------------------------
    def start(self):
        """Start the thread; returns once crash recovery is done and the first model is loaded."""
        self._thread.start()
        try:
            self._call(self._boot)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout=5.0):
        self._commands.put(None)
        self._thread.join(timeout)

    def activate(self, version):
        """Switch to a stored version; returns once it serves (its health check still running)."""
        self._call(self._activate, version)

    def rollback(self):
        """Go back to the newest earlier version that is stored and not marked bad."""
        self._call(self._rollback)

    def delete(self, version):
        self._call(self._delete, version)

    def check(self, folder):
        """Load a package beside the serving model and run it on a camera frame: ModelError if it
        cannot serve on this device (wrong input size, fails on a frame)."""
        self._call(self._check, folder)

    def report(self, detector, outputs=None, infer_ms=None, error=None):
        """The loop's outcome of one frame run by `detector`: outputs and time, or the error.
        False when the frame made the watched model fail: its outputs are not to be used."""
        trial = self._trial
        if trial is None or trial.detector is not detector:
            return True
        try:
            return self._post(self._judge, trial, outputs, infer_ms, error).result(REPORT_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            log.error("no health verdict in time; the loop goes on", extra={"fields": {"version": detector.version}})
            return True

    def status(self):
        detector = self.detector
        return {"active": detector.version if detector else None, "swap": self.swap.to_json(),
                "last_swap": self.last_swap and self.last_swap.to_json(),
                "last_rollback": self.last_rollback and self.last_rollback.to_json()}

    def expected_input(self):
        """(width, height) an uploaded model must take: configured, else the serving model's, else any."""
        if self.config.model_input:
            return tuple(int(v) for v in self.config.model_input.lower().split("x"))
        detector = self.detector
        return (detector.model.width, detector.model.height) if detector else None

    def _post(self, func, *args):
        future = concurrent.futures.Future()
        self._commands.put((future, func, args))
        return future

    def _call(self, func, *args):
        return self._post(func, *args).result()

    # -- the manager's thread ----------------------------------------------------------------
    def _run(self):
        while self._handle(self._commands.get()):
            pass

    def _handle(self, command):
        """Run one command; False to stop. A call of its own, so that nothing of a command (the
        trial holding the model swapped out, a checked package's detector) stays referenced from
        this thread while it waits for the next one."""
        if command is None:
            return False
        future, func, args = command
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(func(*args))
            except BaseException as exc:  # the caller gets it; the machine goes on
                future.set_exception(exc)
        return True

    def _enter(self, state, kind=None, version=None):
        self.swap = Swap(state, kind or self.swap.kind, version or self.swap.version, _now())

    def _require_resting(self):
        if self.swap.state in BUSY:
            busy = self.swap
            raise Conflict(f"another change of the model is in progress ({busy.kind} {busy.version}, "
                           f"{busy.state.value}); try again when /status shows models.swap.state "
                           "idle, confirmed or rolled_back", "swap_in_progress")

    def _boot(self):
        """Clear a crash's leftovers and load the first model. A version killed during its health
        check goes back to trial: the service starts on the version before it, then activates
        it again."""
        try:
            pointer = self.store.recover()
        except OSError as exc:  # e.g. an artifacts folder this user cannot write: serve without a store
            log.warning("model store unavailable", extra={"fields": {"path": self.store.root, "error": exc}})
            pointer = None
        if pointer and pointer["trial"]:
            target = self.store.rollback_target(pointer)
            if target:
                self.store.step_back(target)
            else:
                self.store.restore({**pointer, "version": None})
            self._post(self._recheck, pointer["version"])
        self.detector = self._first_detector()

    def _first_detector(self):
        """The store's active version, else a package found in the artifacts folder, else none."""
        active = self.store.active
        try:
            folder = self.store.require(active).folder if active else \
                artifacts_package(self.config.artifacts, self.config.model)
            detector = Detector.open(folder, crop=self.config.crop)
        except DeepLensError as exc:
            self.error = str(exc)
            log.warning("running capture-only: no usable model", extra={"fields": {"reason": exc}})
            return None
        log.info("model loaded", extra={"fields": {"name": detector.name, "version": detector.version}})
        return detector

    def _recheck(self, version):
        try:
            self._activate(version, kind="recheck")
        except DeepLensError as exc:
            log.warning("could not check again the version a restart interrupted",
                        extra={"fields": {"version": version, "error": exc.message}})

    def _activate(self, version, kind="activate"):
        self._require_resting()
        entry = self.store.require(version)
        if entry.bad:
            raise Conflict(f"{version} is marked bad ({entry.bad['reason']}); delete it and upload it again "
                           "to retry", "version_bad")
        self._switch(entry, self.store.switch, kind)

    def _rollback(self):
        self._require_resting()
        target = self.store.rollback_target()
        if target is None:
            raise Conflict("no earlier good version is stored to roll back to", "no_rollback_target")
        self._switch(self.store.require(target), self.store.step_back, "rollback")

    def _delete(self, version):
        self._require_resting()
        self.store.delete(version)

    def _check(self, folder):
        self._require_resting()
        self._post(memory.release)  # runs after this command, once the checked detector is dropped
        detector = Detector.open(folder, crop=self.config.crop)
        expected = self.expected_input()
        size = detector.model.width, detector.model.height
        if expected and size != expected:
            raise ModelError(f"the model takes {size[0]}x{size[1]} input; this device runs {expected[0]}x"
                             f"{expected[1]} (the active model's, or setting model_input)", code="wrong_input_size",
                             field="input")
        self._warm(detector)

    def _warm(self, detector):
        frame = self._frame()
        if frame is None:
            width, height = self.config.frame_dims
            frame = np.zeros((height, width, 3), np.uint8)
        detector.warm(frame)

    def _switch(self, entry, move, kind):
        """loading -> warming -> (switched in) watching, or confirmed at once without a watch."""
        resting = self.swap
        try:
            self._enter(State.LOADING, kind, entry.version)
            detector = Detector.open(entry.folder, crop=self.config.crop)
            self._enter(State.WARMING)
            self._warm(detector)
        except ModelError as exc:
            self.swap = resting
            self._post(memory.release)
            self.store.mark_bad(entry.version, str(exc))
            raise ModelError(f"{entry.version} was not switched in: {exc}", code="model_failed") from None
        except BaseException:
            self.swap = resting
            raise
        before = move(entry.version)
        fallback, self.detector, self.error = self.detector, detector, None  # the loop's next frame runs it
        self.last_swap = SwapRecord(kind, fallback.version if fallback else None, entry.version, _now(),
                                    round(detector.warm_ms, 2), "watching")
        if kind == "rollback":
            self.last_rollback = RollbackRecord(self.last_swap.source, entry.version, _now(), "requested", False)
        log.warning("model switched", extra={"fields": {k: v for k, v in self.last_swap.to_json().items()
                                                         if k != "result"}})
        if self.config.health_frames:
            self._trial = Trial(detector, fallback, before,
                                HealthGate(detector, self.config.health_frames, self.config.health_slowdown))
            self._enter(State.WATCHING)
            self._on_change()
        else:
            self._on_change()
            self._settle(Trial(detector, fallback, before, None), True, "not watched (health_frames is 0)")

    def _judge(self, trial, outputs, infer_ms, error):
        """One watched frame. On a verdict the serving detector is set before the loop is answered;
        the store and the records follow as the next command."""
        if self._trial is not trial:
            return True
        try:
            if error is not None:
                raise Unhealthy(trial.gate.failure(error))
            if not trial.gate.observe(outputs, infer_ms):
                return True
            passed, reason = True, trial.gate.summary()
        except Unhealthy as exc:
            passed, reason = False, str(exc)
            self.detector = trial.fallback
            log.warning("watched model failed", extra={"fields": {"version": trial.detector.version, "reason": reason}})
        self._trial = None
        self._post(self._settle, trial, passed, reason)
        return passed

    def _settle(self, trial, passed, reason):
        """watching -> confirmed, or -> rolled_back (the loop already runs the fallback)."""
        version = trial.detector.version
        try:
            if passed:
                self.store.confirm(version)
                log.info("model passed its health check", extra={"fields": {"version": version, "check": reason}})
            else:
                self.store.restore(trial.before)
                self.store.mark_bad(version, reason)
                log.warning("model failed its health check; rolled back",
                            extra={"fields": {"version": version, "to": trial.before["version"], "reason": reason}})
        finally:  # a store that cannot be written must not leave the machine busy for good
            if not passed:
                self.last_rollback = RollbackRecord(version, trial.before["version"], _now(), reason, True)
            self.last_swap = dataclasses.replace(self.last_swap, result="ok" if passed else "rolled_back")
            self._enter(State.CONFIRMED if passed else State.ROLLED_BACK)
            self._on_change()
            self._post(memory.release)  # after this command, which holds the model left behind
