"""The zero-setup demo (`deeplens-edge demo`, `make demo`): its defaults, its model, its banner.

The demo runs `serve` on the synthetic camera with a small detector trained on that camera's
notes, shipped in `edge/demo_model/` and copied into the artifacts folder when that has no
model. `make demo-model` rebuilds it: `python -m edge.demo frames` renders labelled frames (as
`deeplens-ctl pull` keeps those of the synthetic camera: the centre square, the true boxes in a
sidecar), `deeplens-ctl labels import -f images` makes manifests of them, and
`python -m control.train.demo` trains, evaluates and writes the package (control/train/demo.py;
the rendering is here because control may not import the camera, which is part of the shims).
"""
import argparse
import json
import secrets
import shlex
import shutil
import sys
from pathlib import Path

from core.errors import ModelError
from core.fileio import atomic_write_bytes, atomic_write_text
from core.package import load_package
from core.topics import topics
from shims.camera import CLASSES, SyntheticCamera

# edge.capture and edge.manager load MXNet: imported where used, so that `deeplens-edge demo
# --help` (which reads DEFAULTS) stays quick.

SHIPPED_MODEL = Path(__file__).resolve().parent / "demo_model"
DEMO_MODEL_NAME = "demo"     # the package name, and its folder in the artifacts folder
# Where the demo's defaults differ from serve's. The threshold is about where the shipped model's
# F1 on frames of unseen synthetic cameras peaks (it scores most notes 0.5 to 0.9 and hardly anything
# else above 0.2); two events a second stay readable in a terminal (24 a second scroll by).
DEFAULTS = {"artifacts": "demo-artifacts", "state_dir": "demo-state", "threshold": 0.3, "max_event_rate": 2.0}


# -- the demo's model and token --------------------------------------------------------------------
def prepare_demo(config):
    """The demo's config, ready to run: the shipped demo model in the artifacts folder unless a model
    is there, and a model-store token (kept in the state folder, so it stays the same across
    restarts) unless one is set."""
    if not config.model:
        _install_demo_model(Path(config.artifacts))
    if config.token:
        return config
    token_file = config.state_path / "demo-token"
    if not token_file.is_file():
        config.state_path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(token_file, secrets.token_urlsafe(16) + "\n")
    return config.replace(token=token_file.read_text().strip())


def _install_demo_model(artifacts):
    """Copy the shipped model into `artifacts` when it holds no model, or only the random-weight
    one that earlier versions of the demo made."""
    from .manager import artifacts_package
    try:
        found = artifacts_package(artifacts)
    except ModelError:
        found = None
    if found is not None:
        if not _is_old_random_demo(found):
            return
        shutil.rmtree(found)
    target = artifacts / DEMO_MODEL_NAME
    if target.exists():  # a folder that is not a package: leave it alone
        target = artifacts / f"{DEMO_MODEL_NAME}-{load_package(SHIPPED_MODEL, verify=False).version}"
    artifacts.mkdir(parents=True, exist_ok=True)
    # Fresh modification times: the newest package in the artifacts folder is the one that runs.
    shutil.copytree(SHIPPED_MODEL, target, copy_function=shutil.copyfile)
    print(f"deeplens-edge: copied the demo model (trained on the synthetic camera's notes) to {target}; "
          f"replace it with one you trained (deeplens-ctl train, swap-model).", flush=True)


def _is_old_random_demo(folder):
    try:
        package = load_package(folder, verify=False)
    except ModelError:
        return False
    return (package.name == DEMO_MODEL_NAME and folder.name == DEMO_MODEL_NAME
            and package.source.get("recipe") == "random weights")


# -- the banner ----------------------------------------------------------------------------------------
def executable(name):
    """How to run one of this installation's commands as printed: the one beside the running
    Python (a virtual environment's bin/ is seldom on PATH), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return shlex.quote(str(beside))
    return shlex.quote(shutil.which(name) or name)


def announcement(config, url, broker_address):
    """What a person starting the service by hand wants to know first: `url` is the REST API's
    address as served, `broker_address` HOST:PORT of the MQTT broker (None: no MQTT)."""
    ctl = executable("deeplens-ctl")
    lines = ["deeplens-edge is running:",
             f"  page        {url}/   (live view, status, threshold, models)",
             f"  studio      {executable('deeplens-ctl')} studio notes/   (label, train, deploy: http://127.0.0.1:8090/)",
             f"  a frame     curl {url}/capture -o frame.jpg",
             f"  status      {ctl} status {url}"]
    if broker_address:
        lines.append(f"  detections  {ctl} watch {url}")
        if shutil.which("mosquitto_sub"):
            host, _, broker_port = broker_address.rpartition(":")
            lines.append(f"              mosquitto_sub -h {host} -p {broker_port} -t '{topics(config.device).detections}'")
    if config.token:
        lines.append(f"  new models  export DEEPLENS_TOKEN={config.token}; {ctl} swap-model {url} runs/NAME")
    return "\n".join(lines + ["Stop with Ctrl-C."])


# -- training frames for the demo model ------------------------------------------------------------------
def render_frames(out, seeds, frames_per_seed=4, size=160, frame_size=(1920, 1080), span=2000):
    """Write labelled frames of synthetic cameras `seeds` into `out` as `deeplens-ctl pull` keeps
    them: the centre square of each frame resized to `size` (what /capture?crop=square&size=N
    returns, and the part of the frame the device feeds a square model), and beside each a JSON
    sidecar whose `truth` holds the true boxes in its pixels (`labels import -f images` reads
    them). Frames are spread evenly over the first `span` of each camera; deterministic.
    Returns the number of frames written."""
    from .capture import encode, map_truth, shape
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for seed in seeds:
        camera = SyntheticCamera(seed, frame_size)
        for k in range(frames_per_seed):
            index = (k * span) // frames_per_seed + seed % max(1, span // frames_per_seed)
            image, truth = camera.render(index)
            shaped, mapping = shape(image, "square", size)
            height, width = shaped.shape[:2]
            name = f"synthetic{seed:05d}_{index:06d}"
            meta = {"file": name + ".png", "camera": f"synthetic:{seed}", "seq": index, "width": width,
                    "height": height, "capture": {"crop": "square", "size": size},
                    "truth": map_truth(truth, mapping, width, height)}
            atomic_write_bytes(out / meta["file"], encode(shaped, "png"))
            atomic_write_text(out / f"{name}.json", json.dumps(meta, indent=1) + "\n")
            written += 1
    return written


def _seed_range(text):
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m edge.demo", description=(
        "Render labelled synthetic frames for the demo model (make demo-model): the centre square "
        "of each frame with its true boxes in a sidecar, as deeplens-ctl pull keeps frames."))
    sub = parser.add_subparsers(dest="command", required=True)
    frames = sub.add_parser("frames", help="write frames and sidecars into a folder",
                            epilog="example: python -m edge.demo frames --seeds 1-300 -n 4 --size 160 -o build/frames/")
    frames.add_argument("-o", "--out", required=True, help="folder to write")
    frames.add_argument("--seeds", default="1-300", help="synthetic camera seeds FIRST-LAST (default: 1-300)")
    frames.add_argument("-n", "--frames-per-seed", type=int, default=4, help="frames of each camera (default: 4)")
    frames.add_argument("--size", type=int, default=160, help="side of the square frames written (default: 160, "
                        "the demo model's input)")
    args = parser.parse_args(argv)
    count = render_frames(args.out, _seed_range(args.seeds), args.frames_per_seed, args.size)
    print(f"{count} frames of classes {', '.join(CLASSES)} in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
