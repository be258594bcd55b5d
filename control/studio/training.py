"""Training runs started from the studio: a child process per run, over the project's labelled frames.

The run folder is `deeplens-ctl train`'s (runs/<name>/: args.yaml, metrics.csv, weights, model/)
plus the studio's files: studio.json (the options, the child's pid, a stop request),
train.manifest and val.manifest (a group-aware 80/20 split of the labelled frames), log.txt
(the child's output), evaluation.json and result.json (how it ended). Everything the page
shows is read from these files, so a run survives a restart of the studio.

The child is `python -m control.studio.training RUN_DIR`: train (from scratch or --init), then
evaluate the exported package on the validation split.
"""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.errors import Conflict, DeepLensError, InvalidInput, NotFound
from core.fileio import atomic_write_text
from core.package import load_package

from ..dataset import sagemaker
from ..dataset.split import split
from ..train.config import FLIPS, TrainConfig

ARCHS = ("tiny", "mobilenet", "resnet")
STUDIO_JSON, RESULT_JSON, EVALUATION_JSON, LOG = "studio.json", "result.json", "evaluation.json", "log.txt"
STOP_FILE = "STOP"  # control.train.callbacks.StopRequest ends the run after its epoch when this appears
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIN_FRAMES = 2


class Runs:
    def __init__(self, project):
        self.project = project
        self.folder = project.runs_dir
        self._children = {}  # name -> Popen, for runs this studio started

    def _run_dir(self, name):
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidInput(f"a run name is letters, digits, '_', '.' and '-' (up to 64), got {name!r}", field="name")
        return self.folder / name

    def start(self, name, minutes=1.0, arch="mobilenet", flip="mirror", init=None, size=300):
        run_dir = self._run_dir(name)
        if run_dir.exists():
            raise Conflict(f"a run named {name!r} exists already: pick another name", "run_exists", "name")
        if arch not in ARCHS:
            raise InvalidInput(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}", field="arch")
        if flip not in FLIPS:
            raise InvalidInput(f"flip must be one of {', '.join(FLIPS)}, got {flip!r}", field="flip")
        if not isinstance(size, int) or isinstance(size, bool) or not 64 <= size <= 1024:
            raise InvalidInput(f"size must be a whole number of pixels from 64 to 1024, got {size!r}", field="size")
        if not isinstance(minutes, (int, float)) or not 0 < minutes <= 24 * 60:
            raise InvalidInput(f"minutes must be above 0 (at most a day), got {minutes!r}", field="minutes")
        init_path = self._init_path(init)
        dataset = self.project.labelled_dataset()
        boxed = sum(1 for image in dataset.images if image.boxes)
        if len(dataset.images) < MIN_FRAMES or not boxed:
            raise Conflict(f"training needs at least {MIN_FRAMES} labelled frames with boxes among them; the project "
                           f"has {len(dataset.images)} labelled, {boxed} with boxes", "too_few_labels")
        run_dir.mkdir(parents=True)
        train_set, val_set = split(dataset, (0.8, 0.2)) if len(dataset.images) >= 5 else (dataset, dataset)
        if not val_set.images:
            val_set = train_set
        sagemaker.write(train_set, str(run_dir / "train.manifest"))
        sagemaker.write(val_set, str(run_dir / "val.manifest"))
        options = {"name": name, "minutes": float(minutes), "arch": arch, "flip": flip, "size": size,
                   "init": str(init_path) if init_path else None, "classes": dataset.classes,
                   "frames": {"train": len(train_set.images), "val": len(val_set.images)}}
        log = open(run_dir / LOG, "ab")
        child = subprocess.Popen([sys.executable, "-m", "control.studio.training", str(run_dir)],
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=str(self.project.folder), start_new_session=True)
        log.close()
        self._children[name] = child
        self._write_studio(run_dir, {"options": options, "pid": child.pid, "started": time.time(),
                                     "stop_requested": False})
        return {"name": name}

    def _init_path(self, init):
        """A run name (its best weights) or a package folder; None to start from scratch."""
        if not init:
            return None
        candidate = self.folder / init if NAME.match(str(init)) else Path(init).expanduser()
        if not candidate.exists():
            raise InvalidInput(f"init: no run or package {init!r}", field="init")
        return candidate.resolve()

    @staticmethod
    def _write_studio(run_dir, doc):
        atomic_write_text(run_dir / STUDIO_JSON, json.dumps(doc, indent=1) + "\n")

    def stop(self, name):
        run = self.get(name)
        if run["state"] not in ("running", "stopping"):
            raise Conflict(f"run {name!r} is {run['state']}, not running", "not_running")
        run_dir = self._run_dir(name)
        doc = _read_json(run_dir / STUDIO_JSON)
        doc["stop_requested"] = True
        self._write_studio(run_dir, doc)
        (run_dir / STOP_FILE).touch()
        return self.get(name)

    def names(self):
        return sorted((p.name for p in self.folder.iterdir() if (p / STUDIO_JSON).is_file()),
                      key=lambda n: (self.folder / n / STUDIO_JSON).stat().st_mtime)

    def listing(self):
        return [self.get(name, metrics=False) for name in self.names()]

    def finished(self):
        return [run for run in self.listing() if run.get("package")]

    def get(self, name, metrics=True):
        run_dir = self._run_dir(name)
        doc = _read_json(run_dir / STUDIO_JSON)
        if doc is None:
            raise NotFound(f"no studio run {name!r} in {self.folder}", "no_run")
        result = _read_json(run_dir / RESULT_JSON)
        run = {"name": name, "options": doc["options"], "started": doc["started"], "reason": None,
               "package": None, "evaluation": None}
        if result is not None:
            run["state"], run["reason"] = result["state"], result.get("reason")
            run["package"] = result.get("package")
            if run["state"] == "done" and doc.get("stop_requested"):
                run["state"] = "stopped"
        elif self._alive(name, doc.get("pid")):
            run["state"] = "stopping" if doc.get("stop_requested") else "running"
        else:
            run["state"] = "failed"
            run["reason"] = "the training process ended without a result; the end of its log: " + _tail(run_dir / LOG)
        if metrics:
            run["metrics"] = _metrics(run_dir / "metrics.csv")
            run["evaluation"] = _read_json(run_dir / EVALUATION_JSON)
        return run

    def _alive(self, name, pid):
        child = self._children.get(name)
        if child is not None:
            return child.poll() is None
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        cmdline = Path(f"/proc/{pid}/cmdline")
        return cmdline.is_file() and b"control.studio.training" in cmdline.read_bytes()

    def package_folder(self, name):
        run = self.get(name, metrics=False)
        if not run["package"]:
            raise NotFound(f"run {name!r} has no exported model (it is {run['state']})", "no_model")
        return Path(run["package"]["folder"])

    def pr_curves(self, name):
        path = self._run_dir(name) / "pr_curves.png"
        if not path.is_file():
            raise NotFound(f"run {name!r} has no PR curves yet", "no_plot")
        return path

    def stop_all(self):
        """On the studio's exit: ask the runs it started to stop (each still exports its best weights)."""
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _tail(path, lines=5):
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    kept = [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]
    return " | ".join(kept[-lines:]) or "(empty log)"


def _metrics(path):
    """metrics.csv rows as numbers (the trainer rewrites it whole each epoch)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def main(run_dir):
    """The child: train on the split, evaluate the exported package, write result.json."""
    run_dir = Path(run_dir)
    options = _read_json(run_dir / STUDIO_JSON)["options"]
    try:
        from core.detector import Detector
        from ..train.data import read_manifest
        from ..train.inference import evaluate_model
        from ..train.trainer import train_local
        config = TrainConfig(name=run_dir.name, arch=options["arch"], flip=options["flip"], size=options["size"],
                             time_budget=options["minutes"], classes=options["classes"])
        val = run_dir / "val.manifest"
        trainer, package = train_local(config, run_dir / "train.manifest", val, runs_dir=run_dir.parent,
                                       init=options["init"])
        detector = Detector.open(package.folder, crop=config.crop)
        evaluation = evaluate_model(detector, read_manifest(val)[0], threshold=config.threshold)
        atomic_write_text(run_dir / EVALUATION_JSON, json.dumps(evaluation.to_json()) + "\n")
        pkg = load_package(package.folder)
        result = {"state": "done", "package": {"name": pkg.name, "version": pkg.version, "classes": pkg.classes,
                                               "folder": str(package.folder)},
                  "epochs": trainer.epoch, "best": trainer.best}
    except DeepLensError as exc:
        result = {"state": "failed", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the page must learn why, whatever it was
        result = {"state": "failed", "reason": f"{exc.__class__.__name__}: {exc}"}
        import traceback
        traceback.print_exc()
    atomic_write_text(run_dir / RESULT_JSON, json.dumps(result, indent=1) + "\n")
    return 0 if result["state"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
