"""The versioned model store: `<artifacts>/models/`, one folder per version, switched by one small file.

Layout (models placed in the artifacts folder the DeepLens way, `<name>-symbol.json` and
`<name>-0000.params` for `mo.optimize`, stay where they are; the store never touches them):

    models/<name>-<version>/   a model package (model.json and the files it lists) plus
                               `store.json`: when it was added, and why it was marked bad
    models/active.json         {"version", "previous": [...], "trial", "since"}: the one pointer
    models/.incoming-*/        uploads being checked; .deleting-*/ versions being removed

Every change lands with one rename: a version folder appears whole (staged beside it, fsynced,
renamed), `active.json` is replaced by write-fsync-rename, a version is removed by renaming
it to `.deleting-*` first. So a crash or `kill -9` at any instant leaves the old or the new
pointer and only whole versions; `recover()` at start clears the leftovers. `trial` marks a
version activated but not yet through its health check (edge.runtime re-checks it after a
restart). This module only touches files, so a crash test can run it without MXNet.
"""
import contextlib
import datetime
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zlib
import threading
from pathlib import Path

from core.fileio import atomic_write_text, fsync_dir, remove_leftovers
from core.package import MODEL_JSON

from core.errors import Conflict, InvalidInput, NotFound, TooLarge

log = logging.getLogger(__name__)
POINTER = "active.json"
ENTRY = "store.json"
INCOMING, DELETING = ".incoming-", ".deleting-"
HISTORY = 20  # previous versions remembered for rollback
MB = 1 << 20
MAX_MEMBERS = 64  # files in a package archive (model.json, symbol, params, and a few more)
MAX_NAME = 255  # characters of an archive member's name (a file name's limit on Linux)


class UploadTooLarge(TooLarge):
    def __init__(self, limit):
        super().__init__(f"the package is larger than the device accepts ({limit / MB:g} MB "
                         "packed or unpacked; setting max_upload_mb)")



def unpack(archive, folder, limit):
    """Extract a package archive (.tar.gz or .tar) into `folder`, refusing anything but plain files
    at its top level: no `..`, absolute paths, links, devices or sub-folders, at most `limit` bytes.

    Every member is checked before the first byte is written.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            for member in tar:  # read header by header: an archive of 200k empty members stops at the limit
                if member.name.strip("/") in (".", ""):
                    continue
                members.append(member)
                if len(members) > MAX_MEMBERS:
                    raise InvalidInput(f"the archive holds more than {MAX_MEMBERS} files; a package has a few",
                                       "bad_archive")
            names = [_member_name(m) for m in members]
            if len(set(names)) != len(names):
                raise InvalidInput("the archive holds the same file twice", "bad_archive")
            if sum(m.size for m in members) > limit:
                raise UploadTooLarge(limit)
            for member, name in zip(members, names):
                with tar.extractfile(member) as src, open(Path(folder) / name, "xb") as dst:
                    shutil.copyfileobj(src, dst, MB)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise InvalidInput(f"not a readable .tar.gz: truncated or corrupt ({exc})", "bad_archive") from None
    return names


def _member_name(member):
    if len(member.name) > MAX_NAME:
        raise InvalidInput(f"archive member name of {len(member.name)} characters; at most {MAX_NAME}", "bad_archive")
    name = member.name[2:] if member.name.startswith("./") else member.name
    if name.startswith("/") or os.path.isabs(member.name):
        raise InvalidInput(f"archive member {member.name!r} has an absolute path", "unsafe_archive")
    if ".." in Path(name).parts:
        raise InvalidInput(f"archive member {member.name!r} climbs out of the folder (..)", "unsafe_archive")
    if member.issym() or member.islnk():
        raise InvalidInput(f"archive member {member.name!r} is a link", "unsafe_archive")
    if member.isdir():
        raise InvalidInput(f"archive member {member.name!r} is a folder: pack the package's "
                       "files at the top level (tar -C FOLDER -czf package.tar.gz .)", "bad_archive")
    if not member.isfile():
        raise InvalidInput(f"archive member {member.name!r} is a device or special file", "unsafe_archive")
    if "/" in name:
        raise InvalidInput(f"archive member {member.name!r} is in a sub-folder: pack the "
                       "package's files at the top level (tar -C FOLDER -czf package.tar.gz .)", "bad_archive")
    return name


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Entry:
    """One stored version, as GET /models lists it."""

    def __init__(self, folder, meta, info):
        self.folder, self.meta, self.info = folder, meta, info

    @property
    def version(self):
        return self.meta["version"]

    @property
    def seq(self):
        return self.info.get("seq", 0)

    @property
    def added(self):
        return self.info.get("added", "")

    @property
    def bad(self):
        return self.info.get("bad")

    def size(self):
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    def to_json(self):
        return {"version": self.version, "name": self.meta.get("name"), "input": self.meta.get("input"),
                "precision": self.meta.get("precision", "fp32"), "classes": self.meta.get("classes"), "created": self.meta.get("created"),
                "added": self.added, "bytes": self.size(), "bad": self.bad, "folder": self.folder.name}


class ModelStore:
    def __init__(self, root, keep=5):
        self.root, self.keep = Path(root), keep
        self._lock = threading.RLock()

    # -- start-up -----------------------------------------------------------------------------
    def recover(self):
        """Clear what a crash left half-done; return the pointer (fixed if it named a missing version)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.iterdir():
            if leftover.name.startswith((INCOMING, DELETING)):
                shutil.rmtree(leftover, ignore_errors=True)
                log.warning("removed an unfinished store change", extra={"fields": {"path": leftover}})
        remove_leftovers(self.root / POINTER)
        pointer = self.pointer()
        if pointer["version"] and self.get(pointer["version"]) is None:
            log.warning("active model version is gone; running without one",
                        extra={"fields": {"version": pointer["version"]}})
            pointer = {**pointer, "version": None, "trial": False}
            self._write_pointer(pointer)
        return pointer

    # -- reading ------------------------------------------------------------------------------
    def pointer(self):
        try:
            doc = json.loads((self.root / POINTER).read_text(encoding="utf-8"))
        except FileNotFoundError:
            doc = {}
        except ValueError as exc:  # cannot happen through this module; say so rather than crash
            log.error("unreadable model pointer; ignoring it", extra={"fields": {"error": exc}})
            doc = {}
        return {"version": doc.get("version"), "previous": list(doc.get("previous") or []),
                "trial": bool(doc.get("trial")), "since": doc.get("since")}

    @property
    def active(self):
        return self.pointer()["version"]

    def entries(self):
        """Stored versions, oldest first."""
        found = []
        for folder in self.root.glob(f"*/{MODEL_JSON}"):
            folder = folder.parent
            if folder.name.startswith("."):
                continue
            try:
                meta = json.loads((folder / MODEL_JSON).read_text(encoding="utf-8"))
                info = json.loads((folder / ENTRY).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("skipping an unreadable store folder", extra={"fields": {"path": folder, "error": exc}})
                continue
            found.append(Entry(folder, meta, info))
        return sorted(found, key=lambda e: e.seq)

    def get(self, version):
        return next((e for e in self.entries() if e.version == version), None)

    def require(self, version):
        entry = self.get(version)
        if entry is None:
            raise NotFound(f"no model version {version!r} in the store; GET /models lists them", "unknown_version")
        return entry

    def rollback_target(self, pointer=None):
        """The newest previous version still stored and not marked bad."""
        pointer = pointer or self.pointer()
        usable = {e.version for e in self.entries() if not e.bad}
        return next((v for v in pointer["previous"] if v != pointer["version"] and v in usable), None)

    # -- changing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self):
        """A fresh folder inside the store for an upload; removed on exit whatever happens."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=INCOMING, dir=self.root))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def add(self, pkg):
        """Move a checked package (a folder inside a staging folder) into the store.

        Returns (entry, created); a version already stored is kept as it is.
        """
        folder = Path(pkg.folder)
        target = self.root / f"{pkg.name}-{pkg.version}"
        for path in folder.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        with self._lock:
            entries = self.entries()
            existing = next((e for e in entries if e.version == pkg.version), None)
            if existing is not None:
                return existing, False
            seq = max((e.seq for e in entries), default=0) + 1  # order of arrival, whatever the clock says
            atomic_write_text(folder / ENTRY, json.dumps({"seq": seq, "added": _now(), "bad": None}) + "\n")
            os.rename(folder, target)
            fsync_dir(self.root)
        log.info("model version stored", extra={"fields": {"version": pkg.version, "folder": target.name}})
        self.prune()
        return self.get(pkg.version), True

    def switch(self, version, trial=True):
        """Make `version` active, remembering the current one for rollback; returns the old pointer."""
        with self._lock:
            old = self.pointer()
            previous = [old["version"]] if old["version"] not in (None, version) else []
            previous += [v for v in old["previous"] if v not in (version, old["version"])]
            self._write_pointer({"version": version, "previous": previous[:HISTORY], "trial": trial, "since": _now()})
            return old

    def step_back(self, version):
        """Make `version` (a rollback target) active, dropping the history above it."""
        with self._lock:
            old = self.pointer()
            rest = old["previous"][old["previous"].index(version) + 1:] if version in old["previous"] else old["previous"]
            self._write_pointer({"version": version, "previous": rest, "trial": False, "since": _now()})
            return old

    def restore(self, pointer):
        """Put back a pointer returned by switch(), e.g. after a failed health check."""
        with self._lock:
            self._write_pointer({**pointer, "trial": False, "since": _now()})

    def confirm(self, version):
        """The version passed its health check: it is no longer on trial."""
        with self._lock:
            pointer = self.pointer()
            if pointer["version"] == version and pointer["trial"]:
                self._write_pointer({**pointer, "trial": False})

    def mark_bad(self, version, reason):
        with self._lock:
            entry = self.get(version)
            if entry is not None:
                info = {**entry.info, "bad": {"reason": reason, "at": _now()}}
                atomic_write_text(entry.folder / ENTRY, json.dumps(info) + "\n")

    def delete(self, version):
        with self._lock:
            entry = self.require(version)
            if version == self.active:
                raise Conflict(f"{version} is the active model; activate another one or "
                               "roll back before deleting it", "version_active")
            self._remove(entry)

    def prune(self):
        """Keep `keep` versions, newest first; the active one, its rollback target and the newest
        (just uploaded) always stay, even past `keep`."""
        with self._lock:
            pointer, entries = self.pointer(), self.entries()
            kept = {pointer["version"], self.rollback_target(pointer), entries[-1].version if entries else None} - {None}
            others = [e for e in entries if e.version not in kept]
            for entry in others[:max(0, len(others) - max(0, self.keep - len(kept)))]:
                self._remove(entry)

    def _remove(self, entry):
        doomed = self.root / f"{DELETING}{entry.folder.name}"
        os.rename(entry.folder, doomed)
        fsync_dir(self.root)
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("model version removed", extra={"fields": {"version": entry.version}})

    def _write_pointer(self, doc):
        atomic_write_text(self.root / POINTER, json.dumps(doc, indent=1) + "\n")

