"""The model store over REST: GET /models and a version's archive; upload, activate, roll back and
delete with the token.

An upload is streamed into a staging folder inside the store (never into memory), unpacked
with every member checked, verified against the SHA-256 manifest of its model.json, loaded
and run on a camera frame at the expected input size, and only then moved into the store.
Whatever fails, the staging folder goes and the store is as it was.
"""
import errno
import logging
import os
import tarfile
import zlib

from flask import Blueprint, Response, jsonify, request

from core.errors import DiskFull, InvalidInput, ModelError, NotFound, StorageError
from core.package import MODEL_JSON, load_package

from ..store import MB, UploadTooLarge, unpack
from . import require_token, runtime

log = logging.getLogger(__name__)
blueprint = Blueprint("models", __name__)
CHUNK = MB


@blueprint.get("/models")
def list_models():
    rt = runtime()
    pointer = rt.store.pointer()
    return jsonify({"active": pointer["version"], "trial": pointer["trial"], "previous": pointer["previous"],
                    "rollback_to": rt.store.rollback_target(pointer), "keep": rt.store.keep,
                    "versions": [e.to_json() for e in reversed(rt.store.entries())]})


@blueprint.get("/models/<version>/archive")
def archive(version):
    """The stored package as .tar.gz (its files at the top level, as POST /models takes it), so a
    laptop tool can run the device's model. Packed as it is sent: one chunk in memory, whatever the size."""
    entry = runtime().store.require(version)
    names = [MODEL_JSON, *sorted(entry.meta.get("files") or {})]
    files = []
    try:  # opened now: a delete racing the download cannot cut it short (the open files stay readable)
        for name in names:
            files.append((name, open(entry.folder / name, "rb")))
    except FileNotFoundError:
        for _, handle in files:
            handle.close()
        raise NotFound(f"model version {version!r} was deleted meanwhile", "unknown_version") from None
    response = Response(_tar_gz(files), mimetype="application/gzip",
                        headers={"Content-Disposition": f'attachment; filename="{entry.folder.name}.tar.gz"'})
    response.call_on_close(lambda: [f.close() for _, f in files])
    return response


def _tar_gz(files):
    """A gzip'd ustar stream of (name, open file) pairs, chunk by chunk."""
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    for name, handle in files:
        info = tarfile.TarInfo(name)
        stat = os.fstat(handle.fileno())
        info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
        yield gz.compress(info.tobuf(tarfile.USTAR_FORMAT))
        for block in iter(lambda: handle.read(CHUNK), b""):
            yield gz.compress(block)
        yield gz.compress(b"\0" * (-info.size % tarfile.BLOCKSIZE))
    yield gz.compress(b"\0" * (2 * tarfile.BLOCKSIZE)) + gz.flush()


@blueprint.post("/models")
def upload():
    """The package as the body (application/gzip) or as the file of a multipart form."""
    require_token()
    rt = runtime()
    limit = int(rt.config.max_upload_mb * MB)
    try:
        with rt.store.staging() as staging:
            archive, folder = staging / "upload.tar.gz", staging / "package"
            folder.mkdir()
            _receive(archive, limit)
            names = unpack(archive, folder, limit)
            pkg = _check(rt, folder, names)
            entry, created = rt.store.add(pkg)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull("no space left for the package in the model store; delete old versions "
                           "(DELETE /models/<version>) or lower keep_versions") from None
        log.error("cannot write the model store", extra={"fields": {"path": rt.store.root, "error": exc}})
        raise StorageError("cannot write the model store (the device's log says why)") from None
    doc = entry.to_json()
    if not created:
        doc["note"] = "this version was stored already; nothing changed"
    return jsonify(doc), 201 if created else 200


def _receive(path, limit):
    """Stream the upload into `path`; 413 past `limit`, 400 if it ends before its Content-Length."""
    if (request.content_length or 0) > limit + MB:
        raise UploadTooLarge(limit)
    request.max_content_length = limit + MB
    if request.mimetype == "multipart/form-data":
        source = request.files.get("package") or next(iter(request.files.values()), None)
        if source is None:
            raise InvalidInput("the form has no file; send it as the field 'package'", "no_package", "package")
        stream, expected = source.stream, None
    else:
        stream, expected = request.stream, request.content_length
    received = 0
    with open(path, "wb") as out:
        for block in iter(lambda: stream.read(CHUNK), b""):
            received += len(block)
            if received > limit:
                raise UploadTooLarge(limit)
            out.write(block)
    if not received or (expected is not None and received < expected):
        raise InvalidInput(f"the upload ended after {received} of {expected or '?'} bytes", "truncated_upload")


def _check(rt, folder, names):
    """The package must verify against its manifest, list every file it brings, and run on this
    device (input size, a camera frame: the model manager's check). Messages name the package's
    files, not the staging folder."""
    try:
        pkg = load_package(folder, verify=True)
        unlisted = sorted(set(names) - set(pkg.files) - {MODEL_JSON})
        if unlisted:
            raise ModelError(f"{unlisted[0]} is not listed in {MODEL_JSON} 'files' (no checksum to verify it)")
        rt.manager.check(folder)
    except ModelError as exc:
        raise ModelError(str(exc).replace(str(folder) + "/", ""), code=exc.code, field=exc.field) from None
    return pkg


@blueprint.post("/models/<version>/activate")
def activate(version):
    require_token()
    rt = runtime()
    rt.manager.activate(version)
    return jsonify(rt.manager.status())


@blueprint.post("/models/rollback")
def rollback():
    require_token()
    rt = runtime()
    rt.manager.rollback()
    return jsonify(rt.manager.status())


@blueprint.delete("/models/<version>")
def delete(version):
    require_token()
    runtime().manager.delete(version)
    return jsonify({"deleted": version})
