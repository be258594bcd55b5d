"""`deeplens-edge install`: the service on a device in one command, as root.

Everything it makes lives under ROOT (default `/`; tests use a temporary folder):

    opt/deeplens-kit/venv/            a virtual environment holding deeplens-kit (upgraded on a re-run)
    etc/deeplens-edge/edge.yaml       the settings (kept on a re-run; keys as `serve --help` lists them)
    etc/deeplens-edge/token           the device token, 0600 (printed once, when made)
    etc/deeplens-edge/mqtt-password   the embedded broker's password, 0600
    etc/deeplens-edge/edge.pem, .key  a self-signed certificate for HTTPS and MQTT over TLS (or yours)
    etc/systemd/system/deeplens-edge.service
    var/lib/deeplens-edge/            run-time state (threshold, broker persistence,  } data: kept by
                                      install.json: what install made, for --purge)   }
    opt/awscam/artifacts/             the models                                      } --uninstall

plus the system user the service runs as. With ROOT `/` and systemd running, the unit is
enabled and (re)started; otherwise the command to start it is printed.
"""
import dataclasses
import grp
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml

from core.errors import DeepLensError
from core.fileio import atomic_write_text
from core.tls import certificate_fingerprint, self_signed

UNIT_NAME = "deeplens-edge.service"
MQTT_USER = "deeplens"
DEVICE_PATHS = {"venv": "opt/deeplens-kit", "etc": "etc/deeplens-edge", "state": "var/lib/deeplens-edge",
                "artifacts": "opt/awscam/artifacts"}


class InstallError(DeepLensError):
    code = "install_failed"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each part goes under `root`."""
    root: Path

    def __getattr__(self, name):
        if name in DEVICE_PATHS:
            return self.root / DEVICE_PATHS[name]
        raise AttributeError(name)

    @property
    def python(self):
        return self.venv / "venv" / "bin" / "python"

    @property
    def executable(self):
        return self.venv / "venv" / "bin" / "deeplens-edge"

    @property
    def settings(self):
        return self.etc / "edge.yaml"

    @property
    def record(self):
        return self.state / "install.json"

    @property
    def unit(self):
        return self.root / "etc/systemd/system" / UNIT_NAME

    def secret(self, name):
        return self.etc / name


def project_source():
    """The deeplens-kit checkout this command runs from, to install into the environment."""
    folder = Path(__file__).resolve().parent.parent
    if not (folder / "setup.cfg").is_file():
        raise InstallError("this deeplens-edge was not run from a deeplens-kit checkout: give --from with the "
                           "project folder (or a built wheel) to install")
    return folder


def install(root="/", host="0.0.0.0", port=8080, camera="webcam:0", user="deeplens", source=None, tls_cert=None,
            tls_key=None, python=None, echo=print):
    """Install or upgrade in place; returns what a person needs next (url, fingerprint, token if new)."""
    if os.geteuid() != 0:
        raise InstallError("run it as root (sudo deeplens-edge install ...): it creates a system user, "
                           "folders under /opt, /etc and /var/lib, and the systemd unit")
    if not shutil.which("mosquitto"):
        raise InstallError("the service's MQTT broker is Debian's mosquitto: apt-get install mosquitto, "
                           "then run this again")
    at = Layout(Path(root))
    record = _read_record(at)
    created_user = _ensure_user(user, at.state, echo)
    account = pwd.getpwnam(user)
    for folder, owner in ((at.etc, None), (at.state, account), (at.artifacts, account)):
        folder.mkdir(parents=True, exist_ok=True)
        if owner:
            os.chown(folder, owner.pw_uid, owner.pw_gid)
            os.chmod(folder, 0o750)
    _install_package(at, Path(source) if source else project_source(), python or _base_python(), echo)
    _check_runs_as(user, at)
    token, new_token = _secret(at.secret("token"), account)
    _secret(at.secret("mqtt-password"), account)
    fingerprint = _certificate(at, host, account, tls_cert, tls_key, echo)
    if at.settings.exists():
        echo(f"kept the settings in {at.settings} (edit it to change them)")
    else:
        _write_settings(at, host, port, camera)
        echo(f"wrote the settings to {at.settings}")
    _write_unit(at, user)
    record = {"user": user, "created_user": created_user or record.get("created_user", False),
              "root": str(at.root), "unit": str(at.unit)}
    atomic_write_text(at.record, json.dumps(record, indent=1) + "\n")
    settings = yaml.safe_load(at.settings.read_text())
    url = f"https://{settings.get('host', host)}:{settings.get('port', port)}"
    _start(at, echo)
    return {"url": url, "fingerprint": fingerprint, "token": token if new_token else None,
            "token_file": str(at.secret("token")), "unit": str(at.unit), "settings": str(at.settings)}


def uninstall(root="/", purge=False, echo=print):
    """Remove what install made; the models and state stay unless `purge`."""
    if os.geteuid() != 0:
        raise InstallError("run it as root (sudo deeplens-edge install --uninstall)")
    at = Layout(Path(root))
    record = _read_record(at)
    if not record:
        raise InstallError(f"nothing to uninstall: {at.record} is not there")
    if _systemd(at):
        subprocess.run(["systemctl", "disable", "--now", UNIT_NAME], check=False)
    for path in (at.unit, at.venv, at.etc):
        _remove(path, echo)
    if _systemd(at):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    if purge:
        for path in (at.state, at.artifacts):
            _remove(path, echo)
        if record.get("created_user"):
            subprocess.run(["userdel", record["user"]], check=False, capture_output=True)
            echo(f"removed the user {record['user']}")
    else:
        echo(f"kept the models in {at.artifacts} and the state in {at.state} (--purge removes them)")


# -- the steps ------------------------------------------------------------------------------------
def _read_record(at):
    try:
        return json.loads(at.record.read_text())
    except FileNotFoundError:
        return {}


def _ensure_user(user, home, echo):
    try:
        pwd.getpwnam(user)
        return False
    except KeyError:
        pass
    groups = ["--groups", "video"] if _group_exists("video") else []
    done = subprocess.run(["useradd", "--system", "--user-group", *groups, "--home-dir", str(home),
                           "--no-create-home", "--shell", "/usr/sbin/nologin", user], capture_output=True, text=True)
    if done.returncode:
        raise InstallError(f"cannot create the user {user}: {done.stderr.strip()}")
    echo(f"created the system user {user}")
    return True


def _group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _base_python():
    """The interpreter this command runs on (outside its virtual environment, if in one)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _install_package(at, source, python, echo):
    venv = at.venv / "venv"
    if not at.python.exists():
        echo(f"creating the environment {venv} with {python}")
        _run([python, "-m", "venv", str(venv)])
    echo(f"installing deeplens-kit from {source} into {venv} (a minute or two)")
    _run([str(at.python), "-m", "pip", "install", "--quiet", "--upgrade", "--disable-pip-version-check",
          str(source)])


def _check_runs_as(user, at):
    """The service user must be able to run the environment (not so for a Python under /root)."""
    done = subprocess.run(["runuser", "-u", user, "--", str(at.python), "-c", "import edge.cli"],
                          capture_output=True, text=True)
    if done.returncode:
        raise InstallError(f"the user {user} cannot run {at.python} ({done.stderr.strip().splitlines()[-1:]}): "
                           "is its Python in a folder only root may enter? Choose another with --python "
                           "(and --uninstall this one first)")


def _run(command):
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise InstallError(f"{' '.join(command[:3])} ... failed:\n{tail}")


def _secret(path, account):
    """(value, made now) of a secret file: kept when there, else made, 0600, owned by the service."""
    if path.exists():
        return path.read_text().strip(), False
    value = secrets.token_urlsafe(24)
    old_umask = os.umask(0o077)
    try:
        atomic_write_text(path, value + "\n")
    finally:
        os.umask(old_umask)
    os.chown(path, account.pw_uid, account.pw_gid)
    return value, True


def _certificate(at, host, account, tls_cert, tls_key, echo):
    cert, key = at.etc / "edge.pem", at.etc / "edge.key"
    if tls_cert:
        shutil.copyfile(tls_cert, cert)
        old_umask = os.umask(0o077)  # the key is never readable by others, not even for a moment
        try:
            key.unlink(missing_ok=True)
            shutil.copyfile(tls_key, key)
        finally:
            os.umask(old_umask)
        echo(f"using your certificate {tls_cert}")
    elif not cert.exists():
        name = os.uname().nodename
        hosts = [name, f"{name}.local", "localhost", "127.0.0.1"] + ([host] if host not in ("0.0.0.0", "::") else [])
        self_signed(cert, key, name, hosts)
        echo(f"made a self-signed certificate {cert}")
    os.chown(key, account.pw_uid, account.pw_gid)
    return certificate_fingerprint(cert)


def _write_settings(at, host, port, camera):
    settings = {"host": host, "port": port, "camera": camera, "artifacts": str(at.artifacts),
                "state_dir": str(at.state), "token_file": str(at.secret("token")),
                "tls_cert": str(at.etc / "edge.pem"), "tls_key": str(at.etc / "edge.key"), "broker": "embedded",
                "mqtt_username": MQTT_USER, "mqtt_password_file": str(at.secret("mqtt-password"))}
    atomic_write_text(at.settings, "# deeplens-edge settings, written by `deeplens-edge install`; keys as "
                      "`deeplens-edge serve --help` lists them.\n" + yaml.safe_dump(settings, sort_keys=False))


def _write_unit(at, user):
    """The packaged unit with this install's paths and user."""
    unit = resources.files("edge").joinpath(UNIT_NAME).read_text()
    for default in ("/opt/deeplens-kit", "/etc/deeplens-edge", "/var/lib/deeplens-edge", "/opt/awscam/artifacts"):
        unit = unit.replace(default, str(at.root / default.lstrip("/")))
    unit = unit.replace("User=deeplens", f"User={user}").replace("Group=deeplens", f"Group={user}")
    at.unit.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(at.unit, unit)


def _systemd(at):
    return at.root == Path("/") and Path("/run/systemd/system").is_dir() and shutil.which("systemctl")


def _start(at, echo):
    if _systemd(at):
        for command in (["daemon-reload"], ["enable", UNIT_NAME], ["restart", UNIT_NAME]):
            _run(["systemctl", *command])
        echo(f"started {UNIT_NAME} (journalctl -u deeplens-edge -f to follow it)")
    else:
        echo(f"systemd is not running here: start it with {at.executable} serve --config {at.settings}")


def _remove(path, echo):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    else:
        return
    echo(f"removed {path}")
