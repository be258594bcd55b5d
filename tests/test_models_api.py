"""The /models API on a real `deeplens-edge serve`: token, uploads and every way an upload can be bad.

Each refused upload must leave the store as it was: same versions, same pointer, no staging
folder left behind.
"""
import io
import shutil
import socket
import subprocess
import tarfile
import time

import mxnet as mx
import numpy as np
import pytest
import requests

from edge_service import EdgeService
from core.package import load_package, write_package
from edge.store import unpack

TOKEN = "t0ken-for-tests"
SMALL = ("--frame-size", "640x360", "--broker", "none")


# -- packages (shared with test_swap and test_cli_device) ---------------------------------------
def make_package(folder, seed, size=300, nan=False):
    """A random-weight package; with `nan`, its box-head biases are NaN (the graph's clipping
    would turn them into silent garbage boxes)."""
    from core.ssd import dummy_package
    pkg = dummy_package(folder, name=f"m{seed}", num_classes=2, size=size, seed=seed)
    if nan:
        params = mx.nd.load(str(pkg.params_path))
        for key in [k for k in params if k.endswith("_bias")][:2]:
            params[key][:] = np.nan
        mx.nd.save(str(pkg.params_path), params)
        pkg = write_package(pkg.folder, pkg.name, pkg.classes, pkg.width, pkg.height, source=pkg.source)
    return pkg


def tgz(pkg, extra=()):
    """The package as .tar.gz bytes, its files at the top level; `extra` adds (TarInfo, bytes) members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(pkg.folder.iterdir()):
            tar.add(path, arcname=path.name)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def upload(service, body, token=TOKEN, **kwargs):
    return requests.post(service.url + "/models", data=body, headers={**auth(token), "Content-Type": "application/gzip"},
                         timeout=60, **kwargs)


def post(service, path, token=TOKEN):
    return requests.post(service.url + path, headers=auth(token), timeout=60)


def start_service(folder, *args, env=None):
    folder.mkdir(parents=True, exist_ok=True)
    return EdgeService(folder, *SMALL, "--artifacts", str(folder / "artifacts"), "--token", TOKEN, *args, env=env).start()


def snapshot(service, store_root):
    """What must not change when a request is refused."""
    models = service.get("/models").json()
    for entry in models["versions"]:
        entry.pop("bytes")
    return models, sorted(p.name for p in store_root.iterdir())


# -- one service for the refusals ---------------------------------------------------------------
@pytest.fixture(scope="module")
def service(tmp_path_factory, packages):
    folder = tmp_path_factory.mktemp("models-api")
    svc = start_service(folder, "--health-frames", "3", "--health-slowdown", "100", "--max-upload-mb", "2")
    svc.store = folder / "artifacts" / "models"
    assert upload(svc, tgz(packages["a"])).status_code == 201
    assert post(svc, f"/models/{packages['a'].version}/activate").status_code == 200
    svc.wait_status(lambda s: s["models"]["swap"]["state"] == "confirmed")
    yield svc
    svc.stop()


@pytest.fixture
def unchanged(service):
    """Asserts after the test that the store is as it was before."""
    before = snapshot(service, service.store)
    yield
    assert snapshot(service, service.store) == before


def test_listing_names_active_version_sizes_and_times(service, packages):
    doc = service.get("/models").json()
    entry = next(e for e in doc["versions"] if e["version"] == packages["a"].version)
    assert doc["active"] == packages["a"].version and entry["bytes"] > 0 and entry["added"]
    assert entry["input"] == {"width": 300, "height": 300} and entry["bad"] is None


@pytest.mark.parametrize("token", [None, "wrong"])
def test_mutations_without_the_token_are_401_and_change_nothing(service, packages, unchanged, token):
    headers = auth(token) if token else {}
    version = packages["a"].version
    for method, path, body in [("POST", "/models", tgz(packages["b"])), ("POST", f"/models/{version}/activate", None),
                               ("POST", "/models/rollback", None), ("DELETE", f"/models/{version}", None)]:
        response = requests.request(method, service.url + path, data=body, headers=headers, timeout=30)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"


def test_truncated_gzip_is_refused(service, packages, unchanged):
    body = tgz(packages["b"])
    response = upload(service, body[:len(body) // 2])
    assert response.status_code == 400 and "truncated" in response.json()["error"]["message"]


def test_upload_cut_off_mid_body_leaves_nothing(service, packages, unchanged):
    body = tgz(packages["b"])
    head = (f"POST /models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/gzip\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(head + body[:len(body) // 2])
    time.sleep(0.5)
    assert service.get("/health").ok


def test_wrong_checksum_is_refused(service, packages, unchanged, tmp_path):
    folder = tmp_path / "pkg"
    shutil.copytree(packages["b"].folder, folder)
    params = folder / packages["b"].params_path.name
    data = bytearray(params.read_bytes())
    data[-1] ^= 0xFF
    params.write_bytes(bytes(data))
    response = upload(service, tgz(type(packages["b"])(**{**packages["b"].__dict__, "folder": folder})))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "checksum_mismatch" and "SHA-256" in response.json()["error"]["message"]


def test_unlisted_file_is_refused(service, packages, unchanged):
    info = tarfile.TarInfo("extra.bin")
    info.size = 3
    response = upload(service, tgz(packages["b"], [(info, b"abc")]))
    assert response.status_code == 422 and "extra.bin is not listed" in response.json()["error"]["message"]


@pytest.mark.parametrize("name, kind, link", [
    ("../escape.json", tarfile.REGTYPE, ""),
    ("/tmp/escape.json", tarfile.REGTYPE, ""),
    ("link.json", tarfile.SYMTYPE, "/etc/passwd"),
    ("hard.json", tarfile.LNKTYPE, "model.json"),
    ("tty", tarfile.CHRTYPE, ""),
])
def test_unsafe_archives_are_refused(service, packages, unchanged, tmp_path, name, kind, link):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    data = b"{}" if kind == tarfile.REGTYPE else None
    info.size = len(data) if data else 0
    response = upload(service, tgz(packages["b"], [(info, data)]))
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsafe_archive"
    assert name in response.json()["error"]["message"]


def test_wrong_input_size_is_refused(service, packages, unchanged):
    response = upload(service, tgz(packages["small"]))
    assert response.status_code == 422 and response.json()["error"]["code"] == "wrong_input_size"
    assert "256x256" in response.json()["error"]["message"] and "300x300" in response.json()["error"]["message"]


def test_nan_weights_are_refused(service, packages, unchanged):
    response = upload(service, tgz(packages["nan"]))
    assert response.status_code == 422 and "NaN" in response.json()["error"]["message"]


def test_too_large_is_413(service, unchanged):
    response = upload(service, b"\0" * (4 << 20))
    assert response.status_code == 413


def test_multipart_upload_then_again_as_a_body_then_delete(service, packages):
    body = tgz(packages["c"])
    response = requests.post(service.url + "/models", files={"package": ("c.tar.gz", body)}, headers=auth(), timeout=60)
    assert response.status_code == 201 and response.json()["version"] == packages["c"].version
    again = upload(service, body)
    assert again.status_code == 200 and "stored already" in again.json()["note"]
    assert requests.delete(f"{service.url}/models/{packages['a'].version}", headers=auth(), timeout=10).status_code == 409
    assert requests.delete(f"{service.url}/models/{packages['c'].version}", headers=auth(), timeout=10).ok
    assert packages["c"].version not in {e["version"] for e in service.get("/models").json()["versions"]}
    assert post(service, "/models/ffffffffffff/activate").status_code == 404


def test_archive_round_trips_the_stored_package(service, packages, tmp_path):
    """GET /models/<version>/archive gives the package back as POST /models takes it, so a laptop
    can run the device's model: unpacked with the device's own checks, it loads and verifies."""
    package = packages["a"]
    response = requests.get(f"{service.url}/models/{package.version}/archive", timeout=30)  # a read: no token on loopback
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/gzip"
    assert f'filename="{package.name}-{package.version}.tar.gz"' in response.headers["Content-Disposition"]
    archive, folder = tmp_path / "device.tar.gz", tmp_path / "unpacked"
    archive.write_bytes(response.content)
    folder.mkdir()
    names = unpack(archive, folder, 10 << 20)
    assert sorted(names) == sorted(["model.json", *package.files])
    loaded = load_package(folder, verify=True)
    assert (loaded.name, loaded.version, loaded.classes) == (package.name, package.version, package.classes)
    missing = requests.get(f"{service.url}/models/ffffffffffff/archive", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_version"


def test_without_a_configured_token_mutations_are_403_with_the_way_out(tmp_path, packages):
    svc = EdgeService(tmp_path, *SMALL, "--artifacts", str(tmp_path / "artifacts")).start()
    try:
        response = upload(svc, tgz(packages["a"]), token="anything")
        assert response.status_code == 403 and "DEEPLENS_TOKEN" in response.json()["error"]["message"]
        assert svc.get("/models").json()["versions"] == []
    finally:
        svc.stop()


def test_full_disk_during_upload_leaves_the_store_whole(tmp_path, packages):
    artifacts = tmp_path / "disk" / "artifacts"
    artifacts.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(artifacts)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tiny tmpfs to fill ({mounted.stderr.strip()}); needs root or CAP_SYS_ADMIN")
    svc = None
    try:
        svc = start_service(tmp_path / "disk", "--health-frames", "0")
        store = artifacts / "models"
        assert upload(svc, tgz(packages["a"])).status_code == 201
        before = snapshot(svc, store)
        response = upload(svc, tgz(packages["b"]))
        assert response.status_code == 507 and response.json()["error"]["code"] == "disk_full"
        assert snapshot(svc, store) == before
        assert post(svc, f"/models/{packages['a'].version}/activate").status_code == 200
        svc.wait_status(lambda s: (s["model"] or {}).get("version") == packages["a"].version)
    finally:
        if svc:
            svc.stop()
        subprocess.run(["umount", str(artifacts)], check=True)
