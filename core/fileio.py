"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""
import contextlib
import hashlib
import json
import logging
import os
import tempfile

from .errors import storage_error

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_open(path, mode="w", durable=True, **kwargs):
    """Open a temporary file beside `path`; on success fsync and rename it over `path`.

    On an exception the temporary file is removed and `path` is left untouched. `durable=False`
    skips the fsyncs, for caches that may be lost in a power cut but must never be read half-written.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data, durable=True):
    with atomic_open(path, "wb", durable=durable) as f:
        f.write(data)


def atomic_write_text(path, text):
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def store_json(path, doc, refusal):
    """Keep `doc`, a setting changed at run time, as the JSON file `path` (atomically). When that
    fails, log why and raise DiskFull or StorageError saying `refusal` (what did not change)."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        log.error("cannot store a setting", extra={"fields": {"path": path, "error": exc}})
        raise storage_error(exc, refusal) from None


def remove_leftovers(path):
    """Remove the temporary files a killed atomic_open(`path`) left beside it."""
    path = os.fspath(path)
    folder, name = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.startswith(f".{name}.") and entry.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, entry))


def fsync_dir(folder):
    """Make a rename inside `folder` survive a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
