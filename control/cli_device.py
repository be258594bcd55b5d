"""deeplens-ctl verbs of this group (see control/cli.py): swap-model, models, rollback, status,
threshold, capture, watch, doctor, devices (list, add, remove).

Thin wrappers over the device client (core.client, core.watch), the swap workflow
(control.swap) and the checks of control.doctor, with the shared conventions of control.cli_common.
"""
import contextlib
import re
import sys
import time
from urllib.parse import urlsplit

import click

from core import devices as registry
from core.client import DeviceClient, peer_fingerprint
from core.errors import DeviceError
from core.watch import Watcher

from . import doctor as doctoring
from . import swap as swapping
from .cli_common import device_argument, echo_json, json_option, user_errors


def _detections_line(event):
    boxes = ", ".join(f"{d['label']} {d['score']:.2f} [{', '.join(f'{v:.2f}' for v in d['box'])}]"
                      for d in event["detections"][:5])
    more = f" (+{len(event['detections']) - 5})" if len(event["detections"]) > 5 else ""
    return f"frame {event['seq']} by {event['model_version']}: {boxes}{more}"


@click.command("swap-model")
@device_argument
@click.argument("package", type=click.Path(exists=True))
@click.option("--no-activate", is_flag=True, help="Only upload and store it; activate later with "
              "`curl -X POST .../models/VERSION/activate` or by running swap-model again.")
@click.option("--wait", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to wait for the device to call the model healthy and show its first detections "
                   "(0: return once it is switched in).")
@json_option
def swap_model(client, package, no_activate, wait, as_json):
    """Send a model to a running device and switch to it without a restart.

    PACKAGE is a model package folder (with model.json), a training run folder (its exported
    model/ is sent), or a package .tar.gz. The device checks it (checksums, archive, input
    size, a run on a camera frame), stores it, loads it beside the running model and switches
    between two frames. It then watches the first frames; if the model fails (errors, NaN,
    far too slow) the device goes back to the previous version by itself, and this command
    exits with status 1 and the device's reason.

    \b
    Examples:
      deeplens-ctl swap-model kitchen runs/banknotes/
      deeplens-ctl swap-model http://camera:8080 model.tar.gz --wait 120
      DEEPLENS_TOKEN=... deeplens-ctl swap-model camera:8080 runs/exp/model --no-activate
    """
    with contextlib.ExitStack() as stack:
        bars = []

        def start(total):
            bars.append(stack.enter_context(click.progressbar(length=total, label="uploading", file=sys.stderr)))

        result = swapping.swap(client, package, activate=not no_activate, wait=wait,
                          progress=lambda n: bars[0].update(n), progress_start=start)
    if as_json:
        echo_json(result, indent=2)
        return
    stored = result["stored"]
    click.echo(f"stored {stored['name']} {stored['version']} ({stored['bytes'] / 1e6:.1f} MB)"
               + (" - already on the device" if stored.get("note") else ""))
    if "swap" in result:
        swap = result["swap"]
        click.echo(f"switched {swap['from'] or '(no model)'} -> {swap['to']} (warm-up {swap['warm_ms']} ms)")
    if "status" in result:
        click.echo(f"{result['version']} is active and passed its health check")
    if result.get("first_detections"):
        click.echo(_detections_line(result["first_detections"]))
    elif "status" in result and not result.get("over_mqtt"):
        why = f": {result['mqtt_problem']}" if result.get("mqtt_problem") else \
            "; run `deeplens-ctl watch` where it is"
        click.echo(f"(no detections shown: the device's MQTT broker is out of reach{why})", err=True)


@click.command()
@device_argument
@json_option
def models(client, as_json):
    """List the model versions stored on a device: active, rollback target, bad ones.

    \b
    Examples:
      deeplens-ctl models kitchen
      deeplens-ctl models http://camera:8080 --json
    """
    doc = client.models()
    if as_json:
        echo_json(doc, indent=2)
        return
    if not doc["versions"]:
        click.echo("no model versions stored (send one with deeplens-ctl swap-model)")
    for entry in doc["versions"]:
        mark = "*" if entry["version"] == doc["active"] else "<" if entry["version"] == doc["rollback_to"] else " "
        bad = f"  BAD: {entry['bad']['reason']}" if entry["bad"] else ""
        click.echo(f"{mark} {entry['version']}  {entry['name']:<16} {entry['input']['width']}x{entry['input']['height']}"
                   f"  {entry['bytes'] / 1e6:6.1f} MB  added {entry['added']}{bad}")
    click.echo("(* active, < rollback target)", err=True)


@click.command()
@device_argument
@json_option
def rollback(client, as_json):
    """Go back to the previous good model version (the device checks it again as it switches).

    \b
    Examples:
      deeplens-ctl rollback kitchen
      DEEPLENS_TOKEN=... deeplens-ctl rollback camera:8080 --json
    """
    doc = client.rollback()
    if as_json:
        echo_json(doc, indent=2)
    else:
        swap = doc["last_swap"]
        click.echo(f"rolled back {swap['from']} -> {swap['to']}")


@click.command()
@device_argument
@json_option
def status(client, as_json):
    """What a device is doing: model, speed, camera, MQTT, last swap and rollback.

    \b
    Examples:
      deeplens-ctl status kitchen
      deeplens-ctl status http://camera:8080 --json
    """
    doc = client.status()
    if as_json:
        echo_json(doc, indent=2)
        return
    model = doc.get("model") or {}
    figures = doc.get("models") or {}
    click.echo(f"device      {doc['device_id']}  (up {doc['uptime_s']:.0f} s)")
    click.echo(f"model       {model.get('name', '-')} {model.get('version', '')}"
               + (f"  ({doc['model_error']})" if doc.get("model_error") else ""))
    click.echo(f"speed       {doc['fps']} fps, inference p50 {doc['inference_ms']['p50']} ms; "
               f"{doc['frames_processed']} frames, {doc['frames_dropped']} dropped, {doc['inference_errors']} errors")
    click.echo(f"camera      {doc['camera']['source']} ({'connected' if doc['camera']['connected'] else 'disconnected'})")
    click.echo(f"mqtt        {doc['mqtt'].get('broker') or 'off'} "
               f"({'connected' if doc['mqtt'].get('connected') else 'not connected'})")
    click.echo(f"threshold   {doc['threshold']['default']} {doc['threshold']['per_class'] or ''}".rstrip())
    for key in ("last_swap", "last_rollback"):
        if figures.get(key):
            click.echo(f"{key.replace('_', ' '):<11} " + ", ".join(f"{k}={v}" for k, v in figures[key].items()))


def _class_value(ctx, param, values):
    parsed = {}
    for item in values:
        name, sep, value = item.rpartition("=")
        try:
            parsed[name] = float(value)
        except ValueError:
            name = ""
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}")
    return parsed


@click.command()
@device_argument
@click.argument("value", type=click.FloatRange(0, 1), required=False)
@click.option("--class", "per_class", multiple=True, callback=_class_value, metavar="NAME=VALUE",
              help="A per-class threshold (repeat for several); replaces the device's per-class values.")
@json_option
def threshold(client, value, per_class, as_json):
    """Show or set a device's detection threshold, live (kept across restarts).

    \b
    Examples:
      deeplens-ctl threshold kitchen                 # show
      deeplens-ctl threshold kitchen 0.5             # default for every class
      deeplens-ctl threshold kitchen --class 1000=0.7 --class 2000=0.6
    """
    body = {**({"default": value} if value is not None else {}), **({"per_class": per_class} if per_class else {})}
    doc = client.threshold(body or None)
    if as_json:
        echo_json(doc, indent=2)
    else:
        click.echo(f"default {doc['default']}" + "".join(f", {k} {v}" for k, v in doc["per_class"].items()))


@click.command()
@device_argument
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Image file to write.")
@click.option("--format", "image_format", type=click.Choice(["jpeg", "png"]), default="jpeg", show_default=True)
@click.option("--crop", type=click.Choice(["none", "square"]), default="none", show_default=True,
              help="'square' crops the centre as training frames are.")
@click.option("--size", type=click.IntRange(16, 4096), help="Resize on the device to N px (longest side).")
def capture(client, out, image_format, crop, size):
    """Save one clean raw frame from a device's camera (no boxes drawn).

    \b
    Examples:
      deeplens-ctl capture kitchen -o frame.jpg
      deeplens-ctl capture camera:8080 --crop square --size 300 --format png -o frame.png
    """
    data, headers = client.capture(format=image_format, crop=crop, size=size)
    with open(out, "wb") as f:
        f.write(data)
    click.echo(f"{out}: {headers.get('X-Frame-Width')}x{headers.get('X-Frame-Height')}, frame {headers.get('X-Frame-Seq')}")


@click.command()
@device_argument
@click.option("-n", "--count", type=click.IntRange(1), help="Stop after this many events (default: until Ctrl-C).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds.")
@json_option
def watch(client, count, timeout, as_json):
    """Print a device's detection events as they arrive over MQTT (one JSON line each with --json).

    \b
    Examples:
      deeplens-ctl watch kitchen
      deeplens-ctl watch http://camera:8080 -n 10 --json > events.jsonl
      deeplens-ctl watch camera:8080 --timeout 30
    """
    with Watcher(client) as watcher:
        if not watcher.over_mqtt:
            raise DeviceError(f"no detections to watch: {watcher.problem}" if watcher.problem else
                              "no detections to watch: the device runs without an MQTT broker")
        deadline = time.monotonic() + (timeout or float("inf"))
        seen = 0
        while count is None or seen < count:
            event = watcher.next("detections", min(deadline, time.monotonic() + 3600))
            if event is None:
                if time.monotonic() >= deadline:
                    break
                continue
            seen += 1
            if as_json:
                echo_json(event)
            else:
                click.echo(_detections_line(event))


@click.command()
@device_argument
@json_option
def doctor(client, as_json):
    """Check, step by step, that a device can be reached and used, and say what to fix.

    One line per check: the name resolves, the port answers, the certificate is the pinned one
    (https), /health answers, the token is accepted, /status answers, the MQTT broker takes the
    device's credentials, the clocks agree, and the device has disk space, a camera and a
    model. Each says `ok` or, in one sentence, what to do; a check that an earlier failure
    makes pointless says `skipped`. Exit status 1 when a check fails; warnings (no model yet, a
    clock a few seconds off, little disk) are shown and leave it 0.

    \b
    Examples:
      deeplens-ctl doctor kitchen
      deeplens-ctl doctor https://192.168.1.20:8443 --json
      DEEPLENS_TOKEN=... deeplens-ctl doctor camera:8080
    """
    client.timeout = 5.0
    checks = []
    for check in doctoring.checks(client):
        checks.append(check)
        if not as_json:
            label = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skipped": "skipped"}[check.status]
            click.echo(f"{check.name:<7} {label:<8} {check.message}")
    healthy = not any(c.status in ("fail", "skipped") for c in checks)
    if as_json:
        echo_json({"device": client.device.name, "url": client.url, "ok": healthy,
                   "checks": [c.to_json() for c in checks]}, indent=2)
    if not healthy:
        click.get_current_context().exit(1)


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def devices(ctx, as_json):
    """List the devices configured in ~/.config/deeplens-kit/devices.yaml (or DEEPLENS_DEVICES),
    and add or remove them (`devices add`, `devices remove`).

    The list shows whether a token is stored and whether a certificate is pinned, never the token.

    \b
    Examples:
      deeplens-ctl devices
      DEEPLENS_DEVICES=lab.yaml deeplens-ctl devices --json
      deeplens-ctl devices add kitchen https://192.168.1.20:8443 --token TOKEN
      deeplens-ctl devices remove kitchen
    \b
    The file (written by `devices add` with mode 0600):
      devices:
        kitchen:
          url: https://192.168.1.20:8443
          token: the-token-set-on-the-device
          fingerprint: 3A:F1:...:9C
        garage: http://garage.local:8080
    """
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        found = registry.load_devices()
    if as_json:
        echo_json({name: {"url": d.url, "token": bool(d.token), **({"fingerprint": d.fingerprint} if d.fingerprint else {})}
                   for name, d in found.items()}, indent=2)
        return
    if not found:
        click.echo(f"no devices configured in {registry.config_path()}", err=True)
    for name, d in found.items():
        notes = [n for n, on in (("token set", d.token), (f"pinned {d.fingerprint[:11]}...", d.fingerprint)) if on]
        click.echo(f"{name:<16} {d.url}" + (f"  ({', '.join(notes)})" if notes else ""))


def _fingerprint_option(ctx, param, value):
    if value is None:
        return None
    try:
        return registry.normalise_fingerprint(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _name_argument(ctx, param, value):
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", value):
        raise click.BadParameter(f"'{value}': use letters, digits, '_', '-' and '.' (it is what you type as DEVICE)")
    return value


@devices.command("add")
@click.argument("name", callback=_name_argument)
@click.argument("url")
@click.option("--token", required=True, envvar="DEEPLENS_TOKEN", show_envvar=True,
              help="The device's token (its `token` setting), checked with the device before it is stored.")
@click.option("--fingerprint", callback=_fingerprint_option, metavar="SHA256",
              help="The fingerprint the device printed at install (hex pairs); the device's certificate "
                   "must match it, or nothing is stored.")
def devices_add(name, url, token, fingerprint):
    """Add (or replace) a device in the devices file, after checking it.

    For an https URL this reads the device's certificate and pins its SHA-256 fingerprint: from
    then on the device is reached with that certificate only (a device makes its own
    self-signed one). Compare the printed fingerprint with the one the device showed at install,
    or give it with --fingerprint to have it compared. The token is then checked with the device
    over that connection. The file is written with mode 0600: it holds tokens.

    \b
    Examples:
      deeplens-ctl devices add kitchen https://192.168.1.20:8443 --token TOKEN
      deeplens-ctl devices add kitchen https://192.168.1.20:8443 --token TOKEN --fingerprint 3A:F1:...:9C
      DEEPLENS_TOKEN=$(cat demo-state/demo-token) deeplens-ctl devices add demo http://127.0.0.1:8080
    """
    with user_errors():
        device, path, doc = add_device(name, url, token, fingerprint)
    if device.fingerprint:
        click.echo(f"SHA-256 fingerprint {device.fingerprint}")
        if not fingerprint:
            click.echo("(compare it with the fingerprint the device printed at install; "
                       "--fingerprint makes this command compare it)", err=True)
    click.echo(f"stored {name} in {path}: {device.url}, token checked"
               + (", certificate pinned" if device.fingerprint else ", plain HTTP (the token travels unencrypted)")
               + (f"; device '{doc['device_id']}'" if doc.get("device_id") else ""))


def add_device(name, url, token, fingerprint=None, path=None):
    """Check a device (its certificate, then its token) and store it; (Device, path, /status document)."""
    url = registry.normalise_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeviceError(f"'{url}' is not an http:// or https:// URL of a device")
    if fingerprint and parts.scheme != "https":
        raise DeviceError(f"--fingerprint pins a certificate, and {url} is plain HTTP: give the https:// URL")
    seen = ""
    if parts.scheme == "https":
        try:
            seen = peer_fingerprint(parts.hostname, parts.port or 443)
        except OSError as exc:
            raise DeviceError(f"cannot read the certificate of {parts.netloc} "
                              f"({getattr(exc, 'reason', None) or exc.strerror or exc}); nothing stored") from None
        if fingerprint and seen != fingerprint:
            raise DeviceError(f"{url} presents a certificate with SHA-256 {seen}, not the {fingerprint} you gave: "
                              f"nothing stored; check the fingerprint on the device (someone may be in between)")
    device = registry.Device(name, url, token, seen)
    client = DeviceClient(device)
    try:
        client.mqtt()  # needs the token
    except DeviceError as exc:
        if exc.status == 401:
            raise DeviceError(f"the token is wrong: {url} answered 401; nothing stored") from None
        if exc.status == 403:
            raise DeviceError(f"{url} has no token set, so it refuses every change: give it one "
                              f"(deeplens-edge --token or DEEPLENS_TOKEN on the device); nothing stored") from None
        if exc.status != 404:  # 404: a device without MQTT; the token was checked first
            raise DeviceError(f"{exc}; nothing stored") from None
    try:
        doc = client.status()
    except DeviceError as exc:
        raise DeviceError(f"{exc}; nothing stored") from None
    return device, registry.save_device(device, path), doc


@devices.command("remove")
@click.argument("name")
def devices_remove(name):
    """Remove a device from the devices file (the other entries stay).

    \b
    Examples:
      deeplens-ctl devices remove kitchen
      DEEPLENS_DEVICES=lab.yaml deeplens-ctl devices remove old-camera
    """
    with user_errors():
        path = registry.remove_device(name)
    click.echo(f"removed {name} from {path}")


COMMANDS = [swap_model, models, rollback, status, threshold, capture, watch, doctor, devices]
